"""``tickgate instruments …``: generate, fetch and inspect scrip masters."""

from __future__ import annotations

import datetime as dt
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

# The registry (polars, numpy), the generator, the download (httpx) and the tables (rich) are imported inside
# the commands that use them: every ``tickgate`` command imports this module to register the sub-app.
FULL_SIZE_ROWS = 290_000  # the generator's default (tickgate.instruments.generator.FULL_SIZE_ROWS)

instruments_app = typer.Typer(
    help="Dhan scrip master: generate, fetch, inspect.", no_args_is_help=True, rich_markup_mode=None
)


class FormatChoice(StrEnum):
    compact = "compact"
    detailed = "detailed"


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from None


@instruments_app.command()
def generate(
    *,
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    fmt: Annotated[FormatChoice, typer.Option("--format", help="Dhan's compact or detailed layout.")] = (
        FormatChoice.detailed
    ),
    seed: Annotated[int, typer.Option(help="Same seed and --today give a byte-identical file.")] = 0,
    today: Annotated[str | None, typer.Option(help="Date expiries are laid out from (YYYY-MM-DD).")] = None,
    rows: Annotated[int, typer.Option(help="Approximate row count (cash rows fill up).")] = FULL_SIZE_ROWS,
    fno_stocks: Annotated[int | None, typer.Option(help="Limit the F&O stock list (default: all).")] = None,
) -> None:
    """Write a full-size realistic scrip master (the embedded default and the test/benchmark data)."""
    from tickgate.instruments.generator import generate_master

    started = time.perf_counter()
    day = _date(today)
    stats = generate_master(out, fmt=fmt.value, seed=seed, today=day, rows_target=rows, fno_stocks=fno_stocks)
    took = time.perf_counter() - started
    size = f"{stats.bytes / 1e6:.1f} MB"
    typer.echo(f"wrote {stats.rows:,} rows ({size}, {stats.format}) to {stats.path} in {took:.1f}s")


@instruments_app.command()
def fetch(
    url: Annotated[str | None, typer.Option(help="Master URL (default: settings master.url).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: settings data_dir).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Download even if today's copy is cached.")] = False,
) -> None:
    """Download Dhan's master, validate it and cache it for today; keeps the last good copy on failure."""
    from tickgate.instruments.fetch import MasterFetchError, fetch_master

    try:
        result = fetch_master(url, data_dir, force=force)
    except MasterFetchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if result.stale:
        typer.echo(f"warning: download failed ({result.error}); using earlier copy {result.path}", err=True)
        raise typer.Exit(2)
    if result.downloaded:
        typer.echo(f"downloaded and validated {result.rows:,} instruments: {result.path}")
    else:
        typer.echo(f"already cached for today: {result.path}")


@instruments_app.command()
def info(file: Annotated[Path, typer.Argument(help="A scrip master CSV (compact or detailed).")]) -> None:
    """Row counts per exchange / segment / instrument."""
    from rich.console import Console
    from rich.table import Table

    from tickgate.dhan.protocol import segment_for_master
    from tickgate.instruments.loader import composition, load_frame
    from tickgate.instruments.model import MasterFormatError

    started = time.perf_counter()
    try:  # the counts come from loading and validating the file; the registry's indexes are not needed
        loaded = load_frame(file)
    except MasterFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    st = loaded.stats
    by_esi = composition(loaded.frame)
    took = time.perf_counter() - started
    table = Table(title=f"{file.name}: {st.format} format, {st.rows_loaded:,} instruments")
    for col, justify in (
        ("exchange", "left"),
        ("segment", "left"),
        ("feed segment", "left"),
        ("instrument", "left"),
        ("rows", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for (exch, seg, instrument), n in by_esi.items():
        feed = segment_for_master(exch, seg)
        table.add_row(exch, seg, feed.name if feed is not None else "-", instrument, f"{n:,}")
    table.add_section()
    table.add_row("total", "", "", "", f"{st.rows_loaded:,}")
    console = Console()
    console.print(table)
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in st.skipped.items()) or "none"
    console.print(f"rows read {st.rows_read:,}; skipped: {skipped}; loaded in {took * 1000:.0f} ms")
