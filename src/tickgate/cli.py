"""The ``tickgate`` command line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from tickgate import __version__
from tickgate.api.cli import accounts_app, api, eod, gateway, serve, users_app
from tickgate.chains.cli import tierb_app
from tickgate.instruments.cli import instruments_app

# Plain (click) help on every app: typer's rich help imports rich's markdown and layout modules, which cost
# more than everything else `tickgate --help` does (bench/cli.py measures it). Commands import what they use.
app = typer.Typer(
    help="tickgate: DhanHQ live-feed subscription gateway.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(instruments_app, name="instruments")
app.add_typer(tierb_app, name="tierb")
app.add_typer(users_app, name="users")
app.add_typer(accounts_app, name="accounts")
app.command()(serve)
app.command()(gateway)
app.command()(api)
app.command()(eod)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


ClockStart = Annotated[
    str | None,
    typer.Option(
        "--clock-start",
        help="Run on a virtual clock from this instant (ISO 8601 with offset, e.g. 2026-12-08T09:10:00+05:30;"
        " default: TICKGATE_CLOCK_START, else the host's clock).",
    ),
]
ClockSpeed = Annotated[
    float | None,
    typer.Option(
        "--clock-speed", help="Market seconds per real second of the virtual clock (TICKGATE_CLOCK_SPEED)."
    ),
]


def _instant(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected an ISO 8601 instant, got {value!r}") from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} needs a UTC offset, e.g. {value}+05:30")
    return moment


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    clock_start: ClockStart = None,
    clock_speed: ClockSpeed = None,
    market_hours: Annotated[
        bool,
        typer.Option(
            help="The simulator follows each exchange's session on the clock (default: always open, so an"
            " evening demo still moves)."
        ),
    ] = False,
) -> None:
    """Run tickgate on its embedded defaults: generated master, simulator, Tier B, demo watchlists, API."""
    from tickgate.demo import main

    main(duration, _instant(clock_start), clock_speed, market_hours)


@app.command()
def simulate(
    *,
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (see the SIMULATOR line).")] = 0,
    rate: Annotated[float, typer.Option(help="Market packets per second across all sockets.")] = 5_000.0,
    stack: Annotated[int, typer.Option(help="Packets per WebSocket frame.")] = 1,
    master: Annotated[Path | None, typer.Option(help="Scrip master to serve (default: generated).")] = None,
    token: Annotated[str, typer.Option(help="The valid access token.")] = "sim-access-token",
    client_id: Annotated[str, typer.Option(help="The valid client id.")] = "1100000001",
    corrupt_pct: Annotated[float, typer.Option(help="Percentage of data frames to corrupt.")] = 0.0,
    ping_interval: Annotated[float, typer.Option(help="Seconds between server pings.")] = 10.0,
    ping_timeout: Annotated[float, typer.Option(help="Close a socket silent to pings this long.")] = 40.0,
    tick_ms: Annotated[float, typer.Option(help="Batch period of the packet generator (ms).")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the price model and of random faults.")] = 0,
    strict: Annotated[bool, typer.Option(help="Answer malformed requests with Disconnect 814.")] = False,
    latency_probe: Annotated[
        bool, typer.Option(help="Benchmarks: stamp the send time (µs mod 2^32) into the volume field.")
    ] = False,
    market_hours: Annotated[
        bool,
        typer.Option(
            help="Instruments trade only in their exchange's session on the clock, like Dhan's feed"
            " (--no-market-hours: always open, for load tests)."
        ),
    ] = True,
    prev_close: Annotated[
        str,
        typer.Option(
            help="Previous close as code 6 for every instrument (code6), or code 6 for indices only and"
            " the previous close in Quote/Full close (indices): Dhan's sources disagree."
        ),
    ] = "code6",
    liquidity: Annotated[
        float,
        typer.Option(help="Thin far strikes: an option trades with chance exp(-|ln K/S| / this); 0: off."),
    ] = 0.0,
    snapshot_after_hours: Annotated[
        bool,
        typer.Option(help="A subscribe outside the session answers with one packet of the last values."),
    ] = False,
    account: Annotated[
        list[str] | None,
        typer.Option(
            help="Another account as CLIENT_ID=TOKEN (repeat for several): each has its own 5 sockets,"
            " limits, tokens and faults."
        ),
    ] = None,
    clock_start: ClockStart = None,
    clock_speed: ClockSpeed = None,
) -> None:
    """Run the Dhan-compatible feed simulator until Ctrl-C/SIGTERM; prints ``SIMULATOR ws://host:port``.

    On a virtual clock it also prints ``CLOCK`` with the environment that makes another process (a
    ``tickgate serve`` against it) read the same time."""
    import asyncio

    from tickgate.config import Settings
    from tickgate.sim import announce, run

    updates: dict[str, object] = {}
    if clock_start is not None:  # a clock started here: anchored now, not at the environment's anchor
        updates["clock_start"] = _instant(clock_start)
        updates["clock_anchor"] = None
    if clock_speed is not None:
        updates["clock_speed"] = clock_speed
    settings = Settings().model_copy(update=updates)
    credentials = {client_id: token}
    for item in account or []:
        cid, sep, secret = item.partition("=")
        if not sep or not cid or not secret:
            raise typer.BadParameter(f"--account takes CLIENT_ID=TOKEN, got {item.split('=')[0]!r}=…")
        credentials[cid] = secret

    asyncio.run(
        run(
            master=master,
            ready=announce,
            host=host,
            port=port,
            rate=rate,
            stack=stack,
            token=token,
            client_id=client_id,
            credentials=credentials,
            corrupt_pct=corrupt_pct,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            tick_interval=tick_ms / 1000.0,
            seed=seed,
            strict_requests=strict,
            latency_probe=latency_probe,
            market_hours=market_hours,
            liquidity_width=liquidity,
            prev_close=prev_close,
            snapshot_after_hours=snapshot_after_hours,
            clock=settings.make_clock(),
        )
    )
