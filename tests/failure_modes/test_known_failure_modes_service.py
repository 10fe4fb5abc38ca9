"""Known failure modes of other systems at the service level: a whole :class:`TickgateService` on the
generated full-size master, a SQLite file, the real scheduler jobs (on a manual clock) and the simulator over
loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pinned import flowing, frozen
from service.conftest import SMALL_TIER_B, service_settings, simulator
from tickgate.chains.tracker import recentre_target
from tickgate.clock import Clock
from tickgate.dhan.client import ConnectionState, Credentials
from tickgate.instruments import InstrumentRegistry
from tickgate.planner import Tier
from tickgate.schedule.calendar import IST
from tickgate.service import NotFound, TickgateService
from tickgate.service.watchlists import AddResult
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator

from .conftest import WAIT_S, converged, plan_count, sim_count

__all__ = ["simulator"]  # the service suite's simulator fixture (full generated master)

pytestmark = pytest.mark.timeout(180)
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)  # these scenarios are a Wednesday's: sessions matter
REPO_ROOT = Path(__file__).resolve().parents[2]
STOCKS = ["RELIANCE", "HDFCBANK", "TCS", "INFY", "SBIN", "ITC", "LT", "AXISBANK", "MARUTI", "WIPRO"]
MCX = ["CRUDEOIL", "NATURALGAS", "GOLD", "SILVER", "COPPER", "ZINC", "GOLDM", "LEAD", "ALUMINIUM"]


ServiceFactory = Callable[..., Awaitable[TickgateService]]


@pytest.fixture
async def services(
    simulator: Simulator, registry: InstrumentRegistry, tmp_path: Path
) -> AsyncIterator[ServiceFactory]:
    """Start services on one SQLite file (a restart is a second ``make``), small Tier B, optional real
    scheduler; all stopped at the end."""
    tier_b = tmp_path / "tier_b.toml"
    tier_b.write_text(SMALL_TIER_B)
    started: list[TickgateService] = []

    async def make(clock: Clock, *, scheduler: bool = False) -> TickgateService:
        svc = TickgateService(
            service_settings(tmp_path, tier_b=tier_b),
            credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
            feed_url=simulator.url,
            registry=registry,
            scheduler=scheduler,
            clock=clock,
        )
        await svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        await svc.stop()


def tier_a_groups(svc: TickgateService) -> set[str]:
    return {g.group for g in svc.planner.groups() if g.tier is Tier.A}


async def db_groups(svc: TickgateService) -> set[str]:
    return {w.group_id for w in await svc.store.watchlists.active()}


# -- OpenAlgo #1924, through the service ---------------------------------------------------------------------


async def test_openalgo_1924_watchlist_removals_and_recentres_shrink_the_broker_view(
    services: ServiceFactory, simulator: Simulator
) -> None:
    """OpenAlgo #1924 at the API's level: watchlist removals (and chain recentres, which drop strikes)
    must unsubscribe at the broker, or its count drifts up until the limit.

    Twelve cycles of watchlist adds and removes by three users, with a chain recentred every few cycles
    by moving its underlying in the simulator: after each cycle the simulator's per-socket view equals
    the plan exactly (counts equal too), and after removing everything only Tier B is left."""
    svc = await services(flowing(NOW))
    await converged(svc.feed, simulator)
    tier_b = sim_count(simulator)
    assert tier_b == svc.planner.totals().by_tier[Tier.B] == 43
    users = [(await svc.store.users.create(f"drift{i}"))[0].id for i in range(3)]
    rng = random.Random(1924)
    live: dict[int, tuple[int, AddResult]] = {}
    recentred = 0
    for cycle in range(12):
        for _ in range(2):
            user = rng.choice(users)
            added = await svc.watchlists.add(user, rng.choice(STOCKS), strikes=rng.choice([3, 5, 11]))
            live[added.entry.id] = (user, added)
        for wid in rng.sample(sorted(live), k=min(len(live) - 1, rng.randint(0, 2))):
            user, _ = live.pop(wid)
            await svc.watchlists.remove(user, wid)
        if cycle % 3 == 1:
            recentred += await _recentre_one(svc, simulator, [a.entry.group_id for _, a in live.values()])
        await converged(svc.feed, simulator)
        assert sim_count(simulator) == plan_count(svc.planner) == len(svc.planner.desired()), cycle
    assert recentred >= 3
    for wid, (user, _) in list(live.items()):
        await svc.watchlists.remove(user, wid)
    await converged(svc.feed, simulator)
    assert sim_count(simulator) == tier_b, "removed watchlists are still subscribed at the broker"
    assert await db_groups(svc) == tier_a_groups(svc) == set()
    assert simulator.breaches == []


async def _recentre_one(svc: TickgateService, sim: Simulator, groups: list[str]) -> int:
    """Move one tracked chain's underlying 3 strikes away in the simulator and recentre on the live LTP."""
    group = next((g for g in groups if svc.tracker.window(g) is not None), None)
    if group is None:
        return 0
    window = svc.tracker.window(group)
    assert window is not None
    strikes = window.listing.strikes
    target = window.atm_index + (3 if window.atm_index + 3 < len(strikes) else -3)
    sim.set_price(window.symbol, float(strikes[target]))
    hysteresis = svc.settings.chains.hysteresis

    def moved_live() -> bool:
        ltp = svc.ltp_of(window.underlying.key)
        return ltp is not None and recentre_target(window, ltp, hysteresis) is not None

    assert await svc.feed.wait_until(moved_live, WAIT_S), "the simulator's price move never arrived"
    # an hour per call later: past any cooldown, also the one this helper's previous call started
    svc.recentre_once(svc.clock.timestamp() + 3600 * (svc.recentres + 1))
    after = svc.tracker.window(group)
    assert after is not None
    assert after.atm_strike != window.atm_strike
    assert set(svc.planner.group_keys(group)) == set(after.keys())
    return 1


# -- OpenAlgo #1458 ------------------------------------------------------------------------------------------


async def test_openalgo_1458_adds_while_sockets_are_down_or_connecting_are_never_lost(
    services: ServiceFactory, simulator: Simulator
) -> None:
    """OpenAlgo #1458: subscribe requests were acknowledged to the user before the feed socket was
    ready; they were sent into a socket that was not open yet and silently lost.

    tickgate never writes to a socket that is not up (``FeedPool.send`` refuses, the action is counted
    as undelivered) and never needs to: an add is acknowledged once the row is committed and the planner
    has it — *suspended* (the user is told) while no socket can carry it — and every ``connection_up``
    (after the start-up barrier) places the suspended groups and sends them. Here the simulator refuses
    every connection while users add chains, then lets them in while more are added: every acknowledged
    add ends up carried by the simulator, exactly as planned."""
    simulator.faults.refuse(3.0)  # every connect answered 503 for 3 s
    svc = await services(flowing(NOW))
    assert not any(s.state is ConnectionState.UP for s in svc.feed.pool.status())
    user = (await svc.store.users.create("early-bird"))[0].id
    early = [await svc.watchlists.add(user, s, strikes=5) for s in STOCKS[:4]]
    assert all(r.status == "added" for r in early)
    assert all(r.suspended for r in early), "no socket is up: the user must be told the chain waits"
    assert simulator.open_sockets() == []
    assert await db_groups(svc) == {r.entry.group_id for r in early}  # durable before any socket exists
    simulator.faults.refuse(0)
    assert await svc.feed.wait_until(
        lambda: any(s.state is ConnectionState.UP for s in svc.feed.pool.status()), WAIT_S
    )
    late = [await svc.watchlists.add(user, s, strikes=5) for s in STOCKS[4:8]]  # while the rest connect
    assert await svc.feed.wait_until(svc.feed.all_up, WAIT_S)
    await converged(svc.feed, simulator)
    assert svc.planner.suspended() == []
    carried = {k for view in simulator.view().values() for k in view}
    for added in early + late:
        assert set(added.keys) <= carried, f"{added.entry.symbol} was acknowledged but never subscribed"
    assert await db_groups(svc) == tier_a_groups(svc)
    assert simulator.stats.refused > 0  # the refusal really happened


# -- OpenAlgo #1759 ------------------------------------------------------------------------------------------


async def test_openalgo_1759_no_database_locked_under_the_scheduler(
    services: ServiceFactory, simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenAlgo #1759: SQLite "database is locked" errors when the scheduler's job wrote while the web
    threads did, losing writes.

    tickgate's SQLite set-up: WAL, one writer connection taking its lock up front (``BEGIN IMMEDIATE``,
    so a transaction never fails upgrading a read lock), ``busy_timeout`` for other processes, reads on
    separate read-only connections, and the audit/snapshot writer as one task. Here, all at once on one
    SQLite file: API-level watchlist adds / views / removes by four users, the store writer flushing
    their audit rows and subscription snapshots, the scheduler's own EOD jobs fired on six successive
    trading days (each clearing NSE/BSE Tier A), and another *process* writing users, audit rows and meta
    keys. Nothing may fail and nothing acknowledged may be lost."""
    caplog.set_level(logging.WARNING)
    clock = frozen(NOW)
    svc = await services(clock, scheduler=True)
    assert svc.eod is not None
    users = [(await svc.store.users.create(f"locked{i}"))[0].id for i in range(4)]
    settings = svc.settings
    assert settings.db_url is not None
    assert settings.db_url.startswith("sqlite")
    iterations = 150
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.failure_modes.sqlite_writer",
        settings.db_url,
        str(iterations),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    acknowledged: list[AddResult] = []
    acknowledged_after: list[tuple[AddResult, int]] = []  # with the MCX cleanups done when it was acked

    def mcx_closes() -> int:
        return sum(1 for r in svc.eod_runs if r["session"] == "MCX")

    removed: set[int] = set()

    async def user_session(user: int, symbols: list[str], exchange: str | None) -> None:
        for i, symbol in enumerate(symbols):
            added = await svc.watchlists.add(user, symbol, strikes=3, exchange=exchange)
            acknowledged.append(added)
            acknowledged_after.append((added, mcx_closes()))
            await svc.watchlists.list(user)
            if exchange is None and i % 3 == 2:
                views = await svc.watchlists.list(user)
                with contextlib.suppress(
                    NotFound, IndexError
                ):  # an EOD may clear the NSE row in between: fine
                    await svc.watchlists.view(user, views[0].entry.id)
                    removed.add((await svc.watchlists.remove(user, views[0].entry.id)).id)
            await asyncio.sleep(0)

    days = [dt.date(2026, 11, d) for d in (25, 26, 27, 30)] + [dt.date(2026, 12, d) for d in (1, 2)]

    async def scheduler_days() -> None:
        assert svc.eod is not None
        for day in days:
            done = svc.eod.runs.get("eod-nse-bse", 0)
            clock.set(dt.datetime.combine(day, dt.time(15, 31), IST))  # the scheduler's own jobs wake and run
            assert await svc.feed.wait_until(lambda n=done: svc.eod.runs.get("eod-nse-bse", 0) > n, WAIT_S)  # type: ignore[union-attr]
            await asyncio.sleep(0.05)

    await asyncio.gather(
        user_session(users[0], STOCKS, None),
        user_session(users[1], STOCKS[::-1], None),
        user_session(users[2], MCX, "MCX"),
        user_session(users[3], MCX[::-1], "MCX"),
        scheduler_days(),
    )
    out, err = await asyncio.wait_for(other.communicate(), 120)
    assert other.returncode == 0, f"the other process failed: {err.decode()[-2000:]}"
    assert out.decode().split()[-2:] == ["DONE", str(iterations)]

    assert svc.eod.failures == {}, "a scheduler job failed (see the log)"
    assert len([r for r in svc.eod_runs if not r["catch_up"] and r["session"] == "NSE_BSE"]) == len(days)
    await svc.store.writer.flush(timeout=30)
    stats = svc.store.writer.stats()
    assert stats["audit_failed"] == stats["snapshots_failed"] == 0, stats
    locked = [r.getMessage() for r in caplog.records if "locked" in r.getMessage().lower()]
    assert locked == []
    # nothing lost: every MCX add acknowledged after the last MCX close the clock passed (each jump to the
    # next day's 15:31 passes the previous day's 23:55) is in the database and the plan …
    rows = await db_groups(svc)
    last = mcx_closes()
    mcx = {a.entry.group_id for a, n in acknowledged_after if a.entry.exchange == "MCX" and n == last}
    assert mcx <= rows
    assert mcx <= tier_a_groups(svc)
    # … the database and the plan agree on every NSE row too (EOD and adds raced), and so do the sockets
    assert rows == tier_a_groups(svc)
    await converged(svc.feed, simulator)
    assert await svc.store.audit.count("EXTERNAL_WRITE") == iterations
    assert len([u for u in await svc.store.users.all() if u.name.startswith("external-")]) == iterations
    adds = sum(1 for a in acknowledged if a.status == "added")
    assert await svc.store.audit.count("WATCHLIST_ADD") == adds
    assert await svc.store.audit.count("WATCHLIST_REMOVE") == len(removed)


# -- EOD missed during a restart -----------------------------------------------------------------------------


async def test_eod_missed_during_restart_runs_once_on_start(
    services: ServiceFactory, simulator: Simulator
) -> None:
    """A scheduler only fires while the process runs: a service down across 15:30 (deploy, crash,
    reboot) would keep yesterday's Tier A for a whole day — and a naive catch-up would clear it again on
    every restart, wiping chains users added after the close.

    tickgate records the close each cleanup covered (``meta eod:<session>``); on start it compares that
    with the calendar's last close and catches up once. Down from 10:00 to 16:00: the restart clears the
    NSE/BSE Tier A (MCX still trading: kept; Tier B: kept); the real scheduler's late 15:30 job is then a
    no-op; a chain added after the close survives the next restart, which runs no cleanup at all."""
    clock = frozen(NOW)  # Wednesday 10:00
    svc = await services(clock, scheduler=True)
    user = (await svc.store.users.create("overnight"))[0].id
    infy = await svc.watchlists.add(user, "INFY", strikes=5)
    crude = await svc.watchlists.add(user, "CRUDEOIL", strikes=5, exchange="MCX")
    await converged(svc.feed, simulator)
    tier_b = {k for g in svc.planner.groups() if g.tier is Tier.B for k in svc.planner.group_keys(g.group)}
    await svc.stop()  # down through the 15:30 close

    clock.set(dt.datetime(2026, 11, 25, 16, 0, tzinfo=IST))
    svc2 = await services(clock, scheduler=True)
    close = dt.datetime(2026, 11, 25, 15, 30, tzinfo=IST)
    assert [(r["session"], r["close"], r["catch_up"]) for r in svc2.eod_runs] == [
        ("NSE_BSE", close.isoformat(), True)
    ]
    assert await db_groups(svc2) == tier_a_groups(svc2) == {crude.entry.group_id}
    b_after = {k for g in svc2.planner.groups() if g.tier is Tier.B for k in svc2.planner.group_keys(g.group)}
    assert b_after == tier_b
    await converged(svc2.feed, simulator)
    carried = {k for view in simulator.view().values() for k in view}
    assert tier_b | set(crude.keys) <= carried
    assert not (set(infy.keys) - tier_b - set(crude.keys)) & carried, "yesterday's Tier A still subscribed"
    # the scheduler's next NSE/BSE job is tomorrow's close, not the caught-up one again
    assert svc2.eod is not None
    assert svc2.eod.next_runs["eod-nse-bse"] == dt.datetime(2026, 11, 26, 15, 30, tzinfo=IST)
    assert len(svc2.eod_runs) == 1
    tcs = await svc2.watchlists.add(user, "TCS", strikes=5)  # after the close: kept until tomorrow's
    await svc2.stop()

    clock.set(dt.datetime(2026, 11, 25, 16, 5, tzinfo=IST))
    svc3 = await services(clock, scheduler=True)
    assert svc3.eod_runs == [], "the missed cleanup ran twice"
    assert await db_groups(svc3) == tier_a_groups(svc3) == {crude.entry.group_id, tcs.entry.group_id}
    await svc3.store.writer.flush(timeout=30)
    page = await svc3.store.audit.page(action=["EOD_CLEANUP"], limit=100)
    runs = [e for e in page.entries if e.reason is not None and close.isoformat() in e.reason]
    assert len(runs) == 1
    assert runs[0].actor == "startup-catch-up"
    await converged(svc3.feed, simulator)
