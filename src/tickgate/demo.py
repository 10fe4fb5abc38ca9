"""``tickgate demo`` (``make demo``): the whole service on its embedded defaults, offline.

A generated full-size scrip master, the Dhan-compatible simulator on loopback streaming at a realistic rate,
Tier B loaded, a demo user with a few watchlist chains, and — when the API package is present — the REST API
and dashboard on http://127.0.0.1:8000 with the demo key printed. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tickgate.config import Settings
from tickgate.dhan.client import Credentials
from tickgate.dhan.protocol import FeedMode

DEMO_USER = "demo"
DEMO_WATCHLIST = ("RELIANCE", "HDFCBANK", "INFY", "TCS", "SBIN")
DEMO_RATE = 20_000.0  # packets/s across all sockets: a busy but ordinary market
OFFLINE_FEED = "ws://127.0.0.1"  # what the demo's master is resolved for: a simulator on this machine


def demo_settings(clock_start: dt.datetime | None = None, clock_speed: float | None = None) -> Settings:
    """The environment's settings, the data directory defaulting to ./.data/demo; a virtual clock given on
    the command line beats the environment's (``TICKGATE_CLOCK_START`` / ``TICKGATE_CLOCK_SPEED``)."""
    settings = Settings()
    data_dir = Path(os.environ.get("TICKGATE_DATA_DIR", Path.cwd() / ".data" / "demo"))
    updates: dict[str, object] = {"data_dir": data_dir}
    if clock_start is not None:  # a clock started here: anchored now, not at the environment's anchor
        updates["clock_start"] = clock_start
        updates["clock_anchor"] = None
    if clock_speed is not None:
        updates["clock_speed"] = clock_speed
    return settings.model_copy(update=updates)


def status_table(service: object) -> Table:
    from tickgate.planner import Tier
    from tickgate.service import TickgateService

    assert isinstance(service, TickgateService)
    cap = service.planner.plan_capacity()
    table = Table(title="tickgate demo — live")
    for column in ("connection", "state", "instruments", "reconnects", "last data"):
        table.add_column(column, justify="right")
    for row in service.feed.connection_status():
        age = row["last_data_age_s"]
        table.add_row(
            str(row["id"]),
            row["state"],
            f"{row['instruments']:,}",
            str(row["reconnects"]),
            "-" if age is None else f"{age:.1f}s ago",
        )
    totals = service.planner.totals()
    table.caption = (
        f"{service.clock.now():%a %d %b %H:%M:%S} IST · "
        f"Tier B {totals.by_tier.get(Tier.B, 0):,} · Tier A {totals.by_tier.get(Tier.A, 0):,} · "
        f"free {cap.free:,} of {cap.total:,} · packets {service.quotes.packets:,} · "
        f"corrupt frames {service.feed.metrics.corrupt_frames}"
    )
    return table


async def run_demo(
    console: Console,
    *,
    serve_api: bool = True,
    duration: float | None = None,
    settings: Settings | None = None,
    market_hours: bool = False,
) -> None:
    from tickgate.instruments import InstrumentRegistry
    from tickgate.service import TickgateService
    from tickgate.service.app import resolve_master
    from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator

    settings = settings or demo_settings()
    clock = settings.make_clock()  # one clock for the simulator and the service: they agree on the time
    today = clock.today()
    console.print(f"[bold]Data directory[/]: {settings.data_dir}")
    console.print(f"[bold]Clock[/]: {_describe_clock(clock.describe())}")
    with console.status("Scrip master: generating/loading a full-size master…"):
        # the demo's feed is its own simulator (below): offline, whatever TICKGATE_FEED_URL says
        master = await asyncio.to_thread(resolve_master, settings, today, feed_url=OFFLINE_FEED)
        registry = await asyncio.to_thread(InstrumentRegistry.load, master, today=today)
    console.print(f"[bold]Scrip master[/]: {master} ({len(registry):,} instruments)")
    # Always open unless asked: a demo started in the evening still shows moving prices. ``--market-hours``
    # shows Dhan's real day on the clock (silent outside each exchange's session).
    simulator = Simulator(
        universe=RegistryUniverse(registry, today),
        master=master,
        clock=clock,
        rate=DEMO_RATE,
        market_hours=market_hours,
    )
    await simulator.start()
    console.print(f"[bold]Simulator[/]: {simulator.url} (Dhan protocol, {DEMO_RATE:,.0f} packets/s)")
    service = TickgateService(
        settings,
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=simulator.url,
        rest_url=simulator.rest_url,
        registry=registry,
        clock=clock,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server: Any = None
    try:
        await service.start()
        user = await service.store.users.by_name(DEMO_USER)
        key = None
        if user is None:
            user, key = await service.store.users.create(DEMO_USER)
        else:
            _key_row, key = await service.store.users.create_key(user.id)
        for symbol in DEMO_WATCHLIST:  # full mode: the dashboard's chain grid shows bid/ask depth
            with contextlib.suppress(Exception):
                await service.watchlists.add(user.id, symbol, mode=FeedMode.FULL)
        await service.feed.wait_until(service.feed.all_up, 10)
        console.print(f"[bold]Demo user[/]: {DEMO_USER}  [bold]API key[/]: {key}")
        if serve_api:
            server = await _start_api(service, settings, console)
        deadline = None if duration is None else loop.time() + duration
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            console.print(status_table(service))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
    finally:
        console.print("Stopping…")
        if server is not None:  # a graceful uvicorn shutdown (cancelling it would leak a traceback)
            server.should_exit = True
            await asyncio.gather(server.task, return_exceptions=True)
        await service.stop()
        await simulator.close()
        console.print("Stopped cleanly.")


async def _start_api(service: object, settings: Settings, console: Console) -> Any:
    """Serve the API + dashboard in this process if the API package is installed (it is, from issue 7)."""
    try:
        import uvicorn

        from tickgate.api import create_app
        from tickgate.api.app import uvicorn_config
    except ImportError:
        console.print("[yellow]API not available in this build: showing the live status only.[/]")
        return None
    app = create_app(service=service)  # type: ignore[arg-type]
    config = uvicorn_config(app, settings, log_level="warning")

    class _Server(uvicorn.Server):
        """Leaves signals to the demo, which stops the API, the feed and the simulator in order."""

        task: asyncio.Task[None] | None = None

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = _Server(config)
    server.task = asyncio.create_task(server.serve())
    console.print(f"[bold]Dashboard[/]: http://{settings.host}:{settings.port}/   [bold]API docs[/]: /docs")
    return server


def _describe_clock(info: dict[str, Any]) -> str:
    if not info["virtual"]:
        return f"{info['now']} (host clock)"
    return f"{info['now']} (virtual, {info['speed']:g}x from {info['start']})"


def main(
    duration: float | None = None,
    clock_start: dt.datetime | None = None,
    clock_speed: float | None = None,
    market_hours: bool = False,
) -> None:
    console = Console()
    console.rule("[bold]tickgate demo (offline, embedded defaults)")
    settings = demo_settings(clock_start, clock_speed)
    asyncio.run(run_demo(console, duration=duration, settings=settings, market_hours=market_hours))
    console.rule()
