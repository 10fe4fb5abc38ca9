"""Recentring: hysteresis around the midpoint, the local gap on non-uniform grids, the cooldown, and the
only-the-diff replacement through a real planner."""

from __future__ import annotations

import datetime as dt

import pytest

from tickgate.chains import AtmEngine, ChainTracker, ChainWindow, Recentre, recentre_target
from tickgate.config import FeedLimits
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner import Planner, PlanResult, Tier

from .conftest import chain_settings

JUL = dt.date(2025, 7, 31)  # 100 apart from 38500 up
SEP = dt.date(2025, 9, 25)  # 41000 → 41300 is one 300-wide gap
GROUP = "A:7:BANKNIFTY:2025-07-31"


class Prices:
    """A settable live LTP per key (what the quote store would answer)."""

    def __init__(self) -> None:
        self.ltp: dict[InstrumentKey, float | None] = {}

    def __call__(self, key: InstrumentKey) -> float | None:
        return self.ltp.get(key)


@pytest.fixture
def tracker(engine: AtmEngine) -> ChainTracker:
    return ChainTracker(engine)


def start(engine: AtmEngine, tracker: ChainTracker, ltp: float, *, expiry: dt.date = JUL) -> ChainWindow:
    w = engine.window("BANKNIFTY", expiry, 25, ltp=ltp)
    tracker.track(GROUP, w, now=0.0)
    return w


def test_wiggling_around_the_midpoint_does_not_recentre(engine: AtmEngine, tracker: ChainTracker):
    w = start(engine, tracker, 56_410.0)
    assert w.atm_strike == 56_400.0
    prices = Prices()
    t = 100.0
    for ltp in (56_449.0, 56_451.0, 56_455.0, 56_459.9, 56_350.0, 56_341.0, 56_451.0):
        prices.ltp[w.underlying.key] = ltp  # 56451 is nearer 56500, but not 0.6 strike past 56400
        assert tracker.check(prices, t) == []
        t += 10.0
    assert tracker.window(GROUP) is w


def test_crossing_six_tenths_of_a_strike_recentres(engine: AtmEngine, tracker: ChainTracker):
    w = start(engine, tracker, 56_410.0)
    prices = Prices()
    prices.ltp[w.underlying.key] = 56_460.0
    [r] = tracker.check(prices, 100.0)
    assert isinstance(r, Recentre)
    assert r.group == GROUP
    assert r.old is w
    assert r.new.atm_strike == 56_500.0
    assert r.new.ltp_source == "live"
    assert r.new.requested == 25
    assert tracker.window(GROUP) is r.new
    # one strike up: the bottom strike leaves, one enters at the top, CE and PE of each
    assert {k for k in r.removed} == {w.rows[0].ce, w.rows[0].pe}
    top = r.new.rows[-1]
    assert top.strike == 57_700.0
    assert set(r.added) == {top.ce, top.pe}
    assert "56400 → 56500" in r.describe()
    # down again: to come back it must go 0.6 below 56500, i.e. to 56440
    prices.ltp[w.underlying.key] = 56_445.0
    assert tracker.check(prices, 200.0) == []
    prices.ltp[w.underlying.key] = 56_440.0
    [back] = tracker.check(prices, 300.0)
    assert back.new.atm_strike == 56_400.0


def test_a_jump_goes_straight_to_the_nearest_strike(engine: AtmEngine, tracker: ChainTracker):
    w = start(engine, tracker, 56_410.0)
    prices = Prices()
    prices.ltp[w.underlying.key] = 56_780.0
    [r] = tracker.check(prices, 100.0)
    assert r.new.atm_strike == 56_800.0
    assert len(r.added) == len(r.removed) == 2 * 4


def test_a_price_beyond_the_listing_clamps_the_window_at_its_edge(engine: AtmEngine, tracker: ChainTracker):
    """The live price runs past the highest listed strike: the window follows it to the edge of the listing
    (truncated, never shifted past it), and further moves beyond the edge change nothing."""
    w = start(engine, tracker, 56_410.0)
    top = w.listing.strikes[-1]
    prices = Prices()
    prices.ltp[w.underlying.key] = top * 1.5
    [r] = tracker.check(prices, 100.0)
    assert r.new.atm_strike == top
    assert r.new.atm_index == len(r.new.listing.strikes) - 1
    assert (r.new.truncated_below, r.new.truncated_above) == (0, 12)
    assert r.new.rows[-1].strike == top
    for t, ltp in ((200.0, top * 2.0), (300.0, top * 1.1), (400.0, top + 1.0)):
        prices.ltp[w.underlying.key] = ltp
        assert tracker.check(prices, t) == [], ltp
    prices.ltp[w.underlying.key] = w.listing.strikes[0] / 3  # and below the lowest
    [down] = tracker.check(prices, 500.0)
    assert down.new.atm_strike == w.listing.strikes[0]
    assert down.new.truncated_below == 12


def test_hysteresis_uses_the_local_gap_on_a_non_uniform_grid(engine: AtmEngine, tracker: ChainTracker):
    w = start(engine, tracker, 41_000.0, expiry=SEP)
    assert w.atm_strike == 41_000.0
    assert w.step == 100.0
    prices = Prices()
    # 41160 is nearer 41300, and 1.6 *steps* away, but only 0.53 of the local 300 gap: stay
    prices.ltp[w.underlying.key] = 41_160.0
    assert tracker.check(prices, 100.0) == []
    prices.ltp[w.underlying.key] = 41_180.0  # 0.6 × 300
    [r] = tracker.check(prices, 200.0)
    assert r.new.atm_strike == 41_300.0
    # and downwards from 41300 the local gap is the same 300
    assert recentre_target(r.new, 41_125.0, 0.6) is None
    assert recentre_target(r.new, 41_120.0, 0.6) == w.atm_index


def test_cooldown_between_recentres(engine: AtmEngine):
    tracker = ChainTracker(engine, chain_settings(recentre_cooldown_s=5.0))
    w = engine.window("BANKNIFTY", JUL, 25, ltp=56_410.0)
    tracker.track(GROUP, w)  # no start time: the first live price may move it at once
    prices = Prices()
    prices.ltp[w.underlying.key] = 56_470.0
    assert len(tracker.check(prices, 1000.0)) == 1
    prices.ltp[w.underlying.key] = 56_580.0
    assert tracker.check(prices, 1001.0) == []
    assert tracker.check(prices, 1004.99) == []
    [r] = tracker.check(prices, 1005.0)
    assert r.old.atm_strike == 56_500.0
    assert r.new.atm_strike == 56_600.0
    # a window tracked with a start time waits out the cooldown from then
    tracker.track("other", engine.window("BANKNIFTY", JUL, 25, ltp=56_610.0), now=2000.0)
    prices.ltp[w.underlying.key] = 56_700.0
    assert [x.group for x in tracker.check(prices, 2001.0)] == [GROUP]


def test_missing_or_bad_prices_leave_chains_alone(engine: AtmEngine, tracker: ChainTracker):
    w = start(engine, tracker, 56_410.0)
    prices = Prices()
    assert tracker.check(prices, 100.0) == []
    for bad in (None, 0.0, -1.0, float("nan")):
        prices.ltp[w.underlying.key] = bad
        assert tracker.check(prices, 100.0) == []


def test_revert_and_untrack(engine: AtmEngine, tracker: ChainTracker):
    w = start(engine, tracker, 56_410.0)
    prices = Prices()
    prices.ltp[w.underlying.key] = 56_600.0
    [r] = tracker.check(prices, 100.0)
    tracker.revert(r)
    assert tracker.window(GROUP) is w
    assert GROUP in tracker
    assert len(tracker) == 1
    assert list(tracker) == [GROUP]
    assert tracker.untrack(GROUP) is w
    assert tracker.untrack(GROUP) is None
    assert len(tracker) == 0


def _ops(result: PlanResult) -> tuple[set[InstrumentKey], set[InstrumentKey]]:
    subs = {k for a in result.actions if a.op == "subscribe" for k in a.keys}
    unsubs = {k for a in result.actions if a.op == "unsubscribe" for k in a.keys}
    return subs, unsubs


def test_only_the_diff_goes_through_the_planner(engine: AtmEngine, tracker: ChainTracker):
    planner = Planner(FeedLimits())
    for conn in range(FeedLimits().sockets_per_account):
        planner.connection_up(conn)
    w = start(engine, tracker, 56_410.0)
    added = planner.add_group(GROUP, Tier.A, w.keys(), FeedMode.QUOTE, "7", 0.0)
    assert added.accepted
    assert _ops(added)[0] == set(w.keys())
    # another chain shares strikes with this one (and the underlying)
    other = engine.window("BANKNIFTY", JUL, 1, ltp=55_210.0)
    assert other.strikes == (55_200.0,)
    assert w.rows[0].strike == 55_200.0
    planner.add_group("B:other", Tier.B, other.keys(), FeedMode.QUOTE, "tierb", 0.0)

    prices = Prices()
    prices.ltp[w.underlying.key] = 56_690.0
    [r] = tracker.check(prices, 100.0)
    assert r.new.atm_strike == 56_700.0  # three strikes up
    result = planner.replace_keys(r.group, r.new.keys(), 100.0)
    subs, unsubs = _ops(result)
    assert subs == set(r.added)
    assert len(subs) == 6
    # 55200 left this window but the other group still wants it: not unsubscribed
    shared = {w.rows[0].ce, w.rows[0].pe}
    assert unsubs == set(r.removed) - shared
    assert len(unsubs) == 4
    assert w.underlying.key not in subs | unsubs
    assert set(planner.group_keys(GROUP)) == set(r.new.keys())
    assert planner.refcount(w.underlying.key) == 2


def test_moves_come_one_at_a_time_and_skip_a_chain_untracked_meanwhile(
    engine: AtmEngine, tracker: ChainTracker
):
    w = engine.window("BANKNIFTY", JUL, 25, ltp=56_410.0)
    for g in ("A:1:X", "A:2:X", "A:3:X"):
        tracker.track(g, w, now=0.0)
    prices = Prices()
    prices.ltp[w.underlying.key] = 56_560.0
    moves = tracker.moves(prices, 100.0)
    first = next(moves)  # computed when reached, not all up front
    assert tracker.window(first.group) is first.new
    assert all(tracker.window(g) is w for g in ("A:1:X", "A:2:X", "A:3:X") if g != first.group)
    others = [g for g in ("A:1:X", "A:2:X", "A:3:X") if g != first.group]
    tracker.untrack(others[0])  # e.g. a user removed it while the service yielded between moves
    assert [m.group for m in moves] == [others[1]]
    assert first.new.atm_strike == 56_600.0
