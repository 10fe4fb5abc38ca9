"""The ``tickgate`` command line."""

from __future__ import annotations

import typer

from tickgate import __version__

app = typer.Typer(help="tickgate: DhanHQ live-feed subscription gateway.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def demo() -> None:
    """Run tickgate on its embedded defaults (offline: no credentials, no network)."""
    from tickgate.demo import main

    main()
