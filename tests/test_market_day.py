"""A whole market day, short form: the real service against the simulator from 08:30 to 00:10 IST on a virtual
clock (one clock, shared), on a normal day and on an NSE holiday with an MCX evening session, under both of
Dhan's described previous-close behaviours. Measured at the simulator:

* no socket recycled as stale while every exchange it carries is closed (one silent while a peer carrying the
  same trading exchange receives data is stale by definition, as the issue has it);
* no Dhan limit breached, no REST request beyond one a second;
* every subscribed leg has a price and a previous close soon after its subscribe;
* change% right on a sample of legs of each segment;
* Tier A cleared at each exchange's end of day, Tier B kept;
* a restart at 20:00 shows the day's last NSE prices.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest

from recycles import recycled_while_shut
from tickgate.clock import IST, VirtualClock
from tickgate.config import FeedClientSettings, Settings
from tickgate.dhan.client import Credentials
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.instruments import InstrumentRegistry
from tickgate.planner import Tier
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator

pytestmark = pytest.mark.timeout(240)

SPEED = 1_500.0  # virtual seconds per real second: 15h40m of market in about 40 s
TIER_B = """
[defaults]
mode = "quote"
strikes = 11

[[options]]
symbol = "NIFTY"
exchange = "NSE"
expiries = "next 1 weekly"

[[futures]]
name = "MCX"
exchange = "MCX"
contracts = 1
symbols = ["CRUDEOIL", "GOLD"]
"""
DAYS = {
    "normal": dt.date(2026, 11, 25),  # a Wednesday; US standard time: MCX to 23:55
    "nse-holiday": dt.date(2026, 3, 3),  # Holi: NSE and BSE shut, MCX trades the evening only
}


def _settings(tmp: Path) -> Settings:
    tier_b = tmp / "tier_b.toml"
    tier_b.write_text(TIER_B)
    feed = FeedClientSettings(
        open_interval_s=0.01,
        backoff_initial_s=0.1,
        backoff_cap_s=0.5,
        ping_interval_s=2.0,
        ping_timeout_s=6.0,
        close_timeout_s=0.5,
        startup_barrier_s=0.5,
        stale_after_s=3.0,
    )
    settings = Settings(feed=feed, data_dir=tmp, db_url=f"sqlite+aiosqlite:///{tmp / 'tickgate.db'}")
    return settings.model_copy(update={"chains": settings.chains.model_copy(update={"tier_b": tier_b})})


def _service(
    settings: Settings, sim: Simulator, registry: InstrumentRegistry, clock: VirtualClock
) -> TickgateService:
    return TickgateService(
        settings,
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=sim.url,
        rest_url=sim.rest_url,
        registry=registry,
        clock=clock,
        scheduler=True,
    )


async def _until(clock: VirtualClock, hh: int, mm: int = 0) -> None:
    """Let the day run until ``hh:mm`` IST on the virtual clock."""
    target = clock.now().replace(hour=hh % 24, minute=mm, second=0, microsecond=0)
    if hh >= 24:
        target += dt.timedelta(days=1)
    await clock.sleep_until(target)


async def _priced(svc: TickgateService, keys: list[InstrumentKey], within: float) -> None:
    deadline = time.monotonic() + within
    missing: list[InstrumentKey] = []
    while time.monotonic() < deadline:
        quotes = svc.quotes.get_many(keys)
        missing = [k for k, q in zip(keys, quotes, strict=True) if q is None or not q.ltp or not q.prev_close]
        if not missing:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"{len(missing)} of {len(keys)} legs without a price and a previous close: {missing[:5]}"
    )


def _check_change(svc: TickgateService, sim: Simulator, keys: list[InstrumentKey]) -> int:
    """change% is measured from the simulator's previous close; returns how many legs were checked."""
    checked = 0
    for key in keys:
        quote, truth = svc.quotes.get(key), sim.last_values(key)
        if quote is None or truth is None or quote.ltp is None:
            continue
        assert quote.prev_close == pytest.approx(truth["prev_close"], rel=1e-6), key
        assert quote.change_pct == pytest.approx(
            100 * (quote.ltp - truth["prev_close"]) / truth["prev_close"]
        )
        checked += 1
    return checked


@pytest.mark.parametrize("prev_close", ["code6", "indices"])
@pytest.mark.parametrize("day_name", list(DAYS))
async def test_a_virtual_market_day(
    master: Path, registry: InstrumentRegistry, tmp_path: Path, day_name: str, prev_close: str
) -> None:
    day = DAYS[day_name]
    nse_open = day_name == "normal"
    clock = VirtualClock(dt.datetime.combine(day, dt.time(8, 30), tzinfo=IST), SPEED)
    sim = Simulator(
        universe=RegistryUniverse(registry, day), master=master, today=day, rate=2_000.0, clock=clock,
        market_hours=True, prev_close=prev_close, ping_interval=1.0, ping_timeout=8.0,
    )  # fmt: skip
    await sim.start()
    settings = _settings(tmp_path)
    svc = _service(settings, sim, registry, clock)
    restarted: TickgateService | None = None
    try:
        await svc.start()
        user, _ = await svc.store.users.create("desk")
        await _until(clock, 9, 30)
        nse_chain = await svc.watchlists.add(user.id, "RELIANCE", strikes=5) if nse_open else None
        mcx_chain = await svc.watchlists.add(user.id, "CRUDEOIL", exchange="MCX", strikes=5)
        legs = [k for k in svc.planner.desired(include_suspended=True)]
        await _priced(svc, legs, within=15.0)
        by_segment: dict[ExchangeSegment, list[InstrumentKey]] = {}
        for key in legs:
            by_segment.setdefault(key.segment, []).append(key)
        if nse_open:
            await _until(clock, 11)  # the NSE legs trade: the feed's own previous close and prices
            assert _check_change(svc, sim, by_segment[ExchangeSegment.NSE_FNO][:10]) >= 5
        await _until(clock, 18)  # MCX trades in the evening (on the holiday, only then)
        assert _check_change(svc, sim, by_segment[ExchangeSegment.MCX_COMM][:10]) >= 1
        groups = {g.group for g in svc.planner.groups()}
        if nse_chain is not None:
            assert nse_chain.entry.group_id not in groups, "NSE Tier A survived its end of day"
        assert mcx_chain.entry.group_id in groups, "MCX Tier A cleared before MCX closed"
        assert any(g.startswith("B:NIFTY") for g in groups), "Tier B must stay"

        await _until(clock, 20)  # a restart in the evening
        last = {k: svc.quotes.get(k).ltp for k in by_segment.get(ExchangeSegment.NSE_FNO, [])}  # type: ignore[union-attr]
        await svc.stop()
        restarted = _service(settings, sim, registry, clock)
        await restarted.start()
        if not nse_open:  # nothing was saved for a shut NSE: the REST backfill prices it again
            await _priced(restarted, list(last), within=10.0)
        for key, ltp in last.items():
            quote = restarted.quotes.get(key)
            assert quote is not None
            assert quote.ltp is not None, f"{key} blank after an evening restart"
            if quote.source == "saved":
                assert quote.ltp == pytest.approx(ltp, rel=1e-6)

        await _until(restarted.clock, 24, 10)  # past MCX's close: the day is done
        assert not [g for g in restarted.planner.groups() if g.tier is Tier.A], (
            "Tier A left after the last close"
        )
        # The criterion, as the week test checks it: no socket recycled as stale while every market
        # it carried was shut. (A socket silent while a peer carrying the same trading market receives data
        # is stale by definition: in a thin evening market that can be a socket holding only far strikes.)
        assert recycled_while_shut(svc.feed, clock, sim.sessions) == []
        assert recycled_while_shut(restarted.feed, clock, sim.sessions) == []
        state = sim.state(subscriptions=False, history=True)
        assert state["breaches"] == []
        assert state["rest"]["rate_limited"] == 0
        assert state["rest"]["max_per_second"] <= 1
        ours = (None, "client_closed", "client_request", "shutdown")  # tickgate's own restart, the test's end
        recycled = [r for r in state["history"] if r["close_reason"] not in ours]
        assert recycled == [], recycled
    finally:
        if restarted is not None:
            await restarted.stop()
        await svc.stop()
        await sim.close()
