"""Worked examples from the architecture seed, at the real limits (5 × 5,000, 100 per message)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner import (
    DuplicateGroupError,
    EventKind,
    Planner,
    PlannerError,
    PlanResult,
    Tier,
    UnknownGroupError,
)

from .model import ServerModel, key, keys

LIMITS = FeedLimits()
CHAIN = 202  # an index chain: 101 strikes × CE/PE


class Harness:
    """A planner plus the server model its actions are replayed on (checked after every call)."""

    def __init__(self, limits: FeedLimits = LIMITS, *, up: bool = True) -> None:
        self.p = Planner(limits)
        self.server = ServerModel(limits)
        if up:
            for c in range(limits.feed_sockets):
                self.run(self.p.connection_up(c))

    def run(self, result: PlanResult) -> PlanResult:
        self.server.apply(result, self.p.live_connections())
        assert self.p.actual() == self.server.conns
        return result

    def down(self, c: int, reason: int | str | None = None) -> PlanResult:
        self.server.drop(c)
        return self.run(self.p.connection_down(c, reason=reason))


def seed_state(h: Harness) -> tuple[int, int]:
    """Tier B 8,500 (42 index chains + 16 futures), then 330 Tier A chains of 50 filling 25,000.
    Returns (next free key id, number of Tier A groups)."""
    nxt = 0
    for i in range(42):
        h.run(h.p.add_group(f"B:IDX{i}", Tier.B, keys(range(nxt, nxt + CHAIN)), FeedMode.QUOTE, "tierb", 0.0))
        nxt += CHAIN
    h.run(h.p.add_group("B:MCXFUT", Tier.B, keys(range(nxt, nxt + 16)), FeedMode.FULL, "tierb", 0.0))
    nxt += 16
    assert h.p.plan_capacity().tier_b == 8_500
    n = 0
    while h.p.plan_capacity().free >= 50:
        r = h.run(
            h.p.add_group(f"A:{n}", Tier.A, keys(range(nxt, nxt + 50)), FeedMode.FULL, f"u{n}", 1.0 + n)
        )
        assert r.accepted
        assert not r.evicted
        nxt += 50
        n += 1
    return nxt, n


def test_seed_fill_then_lru_eviction_names_the_victim() -> None:
    h = Harness()
    nxt, n = seed_state(h)
    cap = h.p.plan_capacity()
    assert (n, cap.tier_b, cap.tier_a, cap.free, cap.placed) == (330, 8_500, 16_500, 0, 25_000)
    assert h.p.loads() == [5_000] * 5

    r = h.run(h.p.add_group("A:RELIANCE", Tier.A, keys(range(nxt, nxt + 50)), FeedMode.FULL, "u7", 1000.0))
    assert r.accepted
    assert [(e.group, e.owner, e.tier) for e in r.evicted] == [("A:0", "u0", Tier.A)]
    evict_events = [e for e in r.events if e.kind is EventKind.EVICT]
    assert [(e.group, e.owner, e.count) for e in evict_events] == [("A:0", "u0", 50)]
    assert "capacity" in (evict_events[0].reason or "")
    assert h.p.plan_capacity().free == 0
    unsubscribed = {k for a in r.actions if a.op == "unsubscribe" for k in a.keys}
    subscribed = {k for a in r.actions if a.op == "subscribe" for k in a.keys}
    assert unsubscribed == set(keys(range(8_500, 8_550)))  # A:0's keys
    assert subscribed == set(keys(range(nxt, nxt + 50)))
    assert h.p.loads() == [5_000] * 5


def test_touch_changes_which_group_is_evicted() -> None:
    h = Harness()
    nxt, _ = seed_state(h)
    h.p.touch("A:0", 500.0)
    h.p.touch("A:1", 501.0)
    r = h.run(h.p.add_group("A:NEW", Tier.A, keys(range(nxt, nxt + 50)), FeedMode.FULL, "u7", 502.0))
    assert [e.group for e in r.evicted] == ["A:2"]
    assert h.p.group("A:1").last_used == 501.0
    # A group needing 120 new keys takes the next three LRU chains (A:3, A:4, A:5), not A:0/A:1.
    r = h.run(h.p.add_group("A:BIG", Tier.A, keys(range(nxt + 50, nxt + 170)), FeedMode.FULL, "u8", 503.0))
    assert [e.group for e in r.evicted] == ["A:3", "A:4", "A:5"]


def test_shared_keys_count_as_free_and_only_freed_keys_count() -> None:
    h = Harness()
    nxt, _ = seed_state(h)
    # 40 of the 50 keys are Tier B's (already subscribed): the group costs 10 → one eviction.
    overlap = keys(range(100, 140)) + keys(range(nxt, nxt + 10))
    r = h.run(h.p.add_group("A:OVERLAP", Tier.A, overlap, FeedMode.FULL, "u9", 600.0))
    assert [e.group for e in r.evicted] == ["A:0"]
    assert {k for a in r.actions if a.op == "subscribe" for k in a.keys} >= set(keys(range(nxt, nxt + 10)))
    # A:1 is LRU now but its keys are all shared with a younger group: evicting it frees nothing, skip it.
    h.run(h.p.add_group("A:SHADOW", Tier.A, h.p.group_keys("A:1"), FeedMode.TICKER, "u9", 601.0))
    r = h.run(h.p.add_group("A:NEXT", Tier.A, keys(range(nxt + 10, nxt + 60)), FeedMode.FULL, "u9", 602.0))
    assert [e.group for e in r.evicted] == ["A:2"]
    assert h.p.has_group("A:1")


def test_reject_changes_nothing_and_says_why() -> None:
    h = Harness()
    nxt, n = seed_state(h)
    for i in range(n):
        h.run(h.p.pin(f"A:{i}"))
    h.p.drain_events()
    before = (h.p.snapshot(), h.p.actual())
    r = h.p.add_group("A:NOPE", Tier.A, keys(range(nxt, nxt + 50)), FeedMode.FULL, "u7", 700.0)
    assert not r.accepted
    assert r.actions == ()
    assert r.evicted == ()
    assert "needs 50" in (r.reason or "")
    assert "Tier B holds 8500" in (r.reason or "")
    assert (h.p.snapshot(), h.p.actual()) == before
    assert [e.kind for e in h.p.drain_events()] == [EventKind.REJECT]
    # Bigger than the whole capacity: rejected even with nothing pinned.
    h2 = Harness()
    r = h2.p.add_group("A:HUGE", Tier.A, keys(range(25_001)), FeedMode.TICKER, "u1", 1.0)
    assert not r.accepted
    assert h2.p.plan_capacity().free == 25_000


def test_tier_b_evicts_tier_a_even_pinned_but_not_beyond_capacity() -> None:
    h = Harness()
    nxt, _n = seed_state(h)
    h.run(h.p.pin("A:0"))
    r = h.run(h.p.add_group("B:NEW", Tier.B, keys(range(nxt, nxt + 100)), FeedMode.QUOTE, "tierb", 800.0))
    assert [e.group for e in r.evicted] == ["A:1", "A:2"]
    r = h.run(
        h.p.add_group(
            "B:ALL", Tier.B, keys(range(nxt + 100, nxt + 100 + 16_400)), FeedMode.QUOTE, "tierb", 801.0
        )
    )
    assert r.accepted
    assert h.p.has_group("A:0") is False
    assert h.p.plan_capacity().tier_a == 0
    r = h.p.add_group(
        "B:TOOMUCH", Tier.B, keys(range(nxt + 20_000, nxt + 20_001)), FeedMode.QUOTE, "tierb", 2.0
    )
    assert not r.accepted
    assert "Tier B alone" in (r.reason or "")


def test_connection_loss_at_capacity_suspends_5000_of_tier_a_and_restores_them() -> None:
    h = Harness()
    _, n = seed_state(h)
    lost = set(h.p.actual()[2])
    r = h.down(2, reason=805)
    # 100 least recently used chains of 50 = 5,000 keys suspended; Tier B untouched.
    assert [g.group for g in r.suspended] == [f"A:{i}" for i in range(100)]
    assert h.p.suspended() == [f"A:{i}" for i in range(100)]
    cap = h.p.plan_capacity()
    assert (cap.live, cap.placed, cap.suspended_keys, cap.free) == (20_000, 20_000, 5_000, 0)
    placed = {k for row in h.p.actual().values() for k in row}
    suspended_keys = set(keys(range(8_500, 8_500 + 5_000)))
    assert not placed & suspended_keys, "suspended keys must be gone from the connections"
    assert set(keys(range(8_500))) <= placed, "Tier B keeps running"
    assert h.p.loads() == [5_000, 5_000, 0, 5_000, 5_000]
    down_event = next(e for e in r.events if e.kind is EventKind.CONNECTION_DOWN)
    assert (down_event.connection, down_event.reason, down_event.count) == (2, "805", len(lost))
    assert len([e for e in r.events if e.kind is EventKind.SUSPEND]) == 100
    assert all(len(a.keys) <= 100 for a in r.actions)

    r = h.run(h.p.connection_up(2))
    assert [g.group for g in r.resumed] == [f"A:{i}" for i in range(99, -1, -1)]  # most recent first
    assert h.p.suspended() == []
    assert h.p.loads() == [5_000] * 5
    assert not [e for e in r.events if e.kind is EventKind.MOVE], "restoring at capacity needs no moves"
    assert {k for row in h.p.actual().values() for k in row} == placed | suspended_keys
    assert len(h.p.groups()) == 43 + n


def test_tier_b_suspended_only_after_all_of_tier_a() -> None:
    h = Harness()
    seed_state(h)
    for c in (4, 3, 2):
        h.down(c)
    # 10,000 live for 8,500 Tier B: every Tier A group that does not fit is suspended, Tier B runs.
    assert h.p.plan_capacity().placed <= 10_000
    assert not any(g.suspended for g in h.p.groups() if g.tier is Tier.B)
    h.down(1)
    # 5,000 live < 8,500 Tier B: all of Tier A suspended, then Tier B partly.
    infos = h.p.groups()
    assert all(g.suspended for g in infos if g.tier is Tier.A)
    assert any(g.suspended for g in infos if g.tier is Tier.B)
    assert h.p.plan_capacity().placed <= 5_000
    for c in (1, 2, 3, 4):
        h.run(h.p.connection_up(c))
    assert h.p.suspended() == []
    assert h.p.loads() == [5_000] * 5


def test_rebalance_is_bounded_and_converges() -> None:
    h = Harness()
    for i in range(40):
        h.run(
            h.p.add_group(f"B:{i}", Tier.B, keys(range(i * 250, i * 250 + 250)), FeedMode.QUOTE, "tierb", 0.0)
        )
    assert h.p.loads() == [2_000] * 5
    h.down(4)
    assert h.p.loads() == [2_500, 2_500, 2_500, 2_500, 0]
    h.run(h.p.connection_up(4, rebalance=False))
    assert h.p.loads() == [2_500, 2_500, 2_500, 2_500, 0]
    placed = {k: m for row in h.p.actual().values() for k, m in row.items()}

    r = h.run(h.p.rebalance(max_moves=300))
    assert sum(len(a.keys) for a in r.actions if a.op == "subscribe") == 300
    assert sum(e.count for e in r.events if e.kind is EventKind.MOVE) == 300
    assert all(len(a.keys) <= 100 for a in r.actions)
    assert h.p.loads() == [2_200, 2_500, 2_500, 2_500, 300]
    calls = 1
    while True:
        r = h.run(h.p.rebalance(max_moves=300))
        if not r.actions:
            break
        calls += 1
    assert h.p.loads() == [2_000] * 5
    assert calls == 7
    assert {k: m for row in h.p.actual().values() for k, m in row.items()} == placed
    # Within tolerance: nothing to do.
    h.run(h.p.add_group("A:x", Tier.A, keys(range(20_000, 20_050)), FeedMode.FULL, "u", 1.0))
    assert h.p.rebalance().actions == ()


def test_replace_keys_emits_only_the_diff() -> None:
    h = Harness()
    strikes = list(range(1_000, 1_000 + 2 * 101))  # 101 strikes, CE/PE interleaved
    h.run(h.p.add_group("A:7:NIFTY", Tier.A, keys(strikes), FeedMode.FULL, "u7", 1.0))
    h.p.drain_events()
    shifted = list(range(1_004, 1_004 + 2 * 101))  # ATM moved up two strikes
    r = h.run(h.p.replace_keys("A:7:NIFTY", keys(shifted), 2.0))
    assert {k for a in r.actions if a.op == "unsubscribe" for k in a.keys} == set(keys(range(1_000, 1_004)))
    assert {k for a in r.actions if a.op == "subscribe" for k in a.keys} == set(keys(range(1_202, 1_206)))
    assert h.p.group("A:7:NIFTY").last_used == 1.0, "a recentre is not a use"
    assert next(e.kind for e in r.events) is EventKind.REPLACE
    assert h.p.replace_keys("A:7:NIFTY", keys(shifted), 3.0).actions == ()


def test_mode_upgrade_and_downgrade() -> None:
    h = Harness()
    h.run(h.p.add_group("A:t", Tier.A, keys(range(0, 10)), FeedMode.TICKER, "u1", 1.0))
    r = h.run(h.p.add_group("A:f", Tier.A, keys(range(5, 15)), FeedMode.FULL, "u2", 2.0))
    # Shared keys 5..9 upgrade in place: unsubscribe ticker, subscribe full, same connection.
    unsubs = [(a.connection, a.mode, set(a.keys)) for a in r.actions if a.op == "unsubscribe"]
    assert {k for _, m, ks in unsubs for k in ks} == set(keys(range(5, 10)))
    assert all(m is FeedMode.TICKER for _, m, _ in unsubs)
    actual = {k: m for row in h.p.actual().values() for k, m in row.items()}
    assert all(actual[k] is FeedMode.FULL for k in keys(range(5, 15)))
    assert all(actual[k] is FeedMode.TICKER for k in keys(range(0, 5)))
    assert any(e.kind is EventKind.MODE_CHANGE and e.count == 5 for e in r.events)
    before = {k: c for c, row in h.p.actual().items() for k in row}

    r = h.run(h.p.remove_group("A:f", 3.0))  # downgrade back to ticker
    actual = {k: m for row in h.p.actual().values() for k, m in row.items()}
    assert set(actual) == set(keys(range(10)))
    assert all(m is FeedMode.TICKER for m in actual.values())
    assert {k: c for c, row in h.p.actual().items() for k in row} == {k: before[k] for k in keys(range(10))}


def test_eod_clears_tier_a_only() -> None:
    h = Harness()
    h.run(h.p.add_group("B:NIFTY", Tier.B, keys(range(0, 202)), FeedMode.QUOTE, "tierb", 0.0))
    h.run(h.p.add_group("A:1", Tier.A, keys(range(150, 250)), FeedMode.FULL, "u1", 1.0, pinned=True))
    h.run(h.p.add_group("A:2", Tier.A, keys(range(300, 350)), FeedMode.FULL, "u2", 2.0))
    h.run(h.p.add_group("A:MCX", Tier.A, keys(range(400, 420)), FeedMode.FULL, "u2", 2.0))
    h.p.drain_events()
    # NSE/BSE close: everything but the MCX chain.
    r = h.run(h.p.clear_tier(Tier.A, now=10.0, only=lambda g: "MCX" not in g.group))
    assert sorted(e.group or "" for e in r.events if e.kind is EventKind.EOD) == ["A:1", "A:2"]
    assert [g.group for g in h.p.groups()] == ["B:NIFTY", "A:MCX"]
    actual = {k: m for row in h.p.actual().values() for k, m in row.items()}
    assert all(actual[k] is FeedMode.QUOTE for k in keys(range(150, 202)))  # back to Tier B's mode
    r = h.run(h.p.clear_tier(Tier.A))
    assert [g.group for g in h.p.groups()] == ["B:NIFTY"]
    assert h.p.plan_capacity().tier_b == 202
    assert h.p.plan_capacity().tier_a == 0


def test_built_while_down_then_connections_come_up() -> None:
    h = Harness(up=False)
    for i in range(38):
        h.run(
            h.p.add_group(f"B:{i}", Tier.B, keys(range(i * 200, i * 200 + 200)), FeedMode.QUOTE, "tierb", 0.0)
        )
    for i in range(300):
        base = 10_000 + i * 50
        h.run(h.p.add_group(f"A:{i}", Tier.A, keys(range(base, base + 50)), FeedMode.FULL, "u", float(i)))
    assert h.p.actual() == {c: {} for c in range(5)}
    assert len(h.p.suspended()) == 338
    h.run(h.p.connection_up(0))
    assert all(g.suspended for g in h.p.groups() if g.tier is Tier.A)
    assert h.p.loads()[0] == 5_000
    h.run(h.p.connection_up(1))
    assert not any(g.suspended for g in h.p.groups() if g.tier is Tier.B)
    susp_a = [g.group for g in h.p.groups() if g.suspended]
    assert susp_a == [f"A:{i}" for i in range(len(susp_a))], "the least recently used wait longest"
    for c in (2, 3, 4):
        h.run(h.p.connection_up(c))
    assert h.p.suspended() == []
    assert sum(h.p.loads()) == 22_600
    assert max(h.p.loads()) - min(h.p.loads()) <= h.p.rebalance_tolerance


def test_snapshot_is_plain_json_in_lru_order() -> None:
    """What ``GET /admin/planner`` shows: every group, oldest use first within its tier, with pins."""
    h = Harness()
    seed_state(h)
    h.run(h.p.pin("A:5"))
    h.p.touch("A:0", 999.0)
    snap = json.loads(json.dumps(h.p.snapshot()))
    groups = snap["groups"]
    assert groups[-1]["id"] == "A:0"
    assert groups[-1]["last_used"] == 999.0
    assert [g["id"] for g in groups if g["pinned"]] == ["A:5"]
    assert sum(len(g["keys"]) for g in groups if g["tier"] == "B") == h.p.totals().by_tier[Tier.B]


def test_totals_and_capacity_views() -> None:
    h = Harness()
    h.run(h.p.add_group("B:1", Tier.B, keys(range(100)), FeedMode.QUOTE, "tierb", 0.0))
    h.run(h.p.add_group("A:1", Tier.A, keys(range(50, 150)), FeedMode.FULL, "u1", 1.0))
    h.run(h.p.add_group("A:2", Tier.A, keys(range(140, 160)), FeedMode.FULL, "u2", 2.0))
    t = h.p.totals()
    assert t.by_tier == {Tier.B: 100, Tier.A: 60}
    assert t.by_owner == {"tierb": 100, "u1": 100, "u2": 20}
    assert sum(t.by_connection.values()) == t.placed == t.desired == 160
    cap = h.p.plan_capacity()
    assert (cap.total, cap.tier_b, cap.tier_a, cap.free, cap.live_connections) == (25_000, 100, 60, 24_840, 5)
    assert h.p.refcount(key(55)) == 2
    assert h.p.refcount(key(10_000)) == 0
    info = h.p.group("A:2")
    assert (info.size, info.owner, info.last_used, info.suspended) == (20, "u2", 2.0, False)


def test_contract_errors() -> None:
    h = Harness()
    h.run(h.p.add_group("A:1", Tier.A, keys(range(3)), FeedMode.FULL, "u1", 1.0))
    with pytest.raises(DuplicateGroupError):
        h.p.add_group("A:1", Tier.A, keys(range(3)), FeedMode.FULL, "u1", 1.0)
    with pytest.raises(UnknownGroupError):
        h.p.remove_group("A:missing")
    with pytest.raises(UnknownGroupError):
        h.p.touch("A:missing", 1.0)
    with pytest.raises(ValueError, match="no keys"):
        h.p.add_group("A:empty", Tier.A, [], FeedMode.FULL, "u1", 1.0)
    with pytest.raises(PlannerError):
        h.p.connection_down(5)
    with pytest.raises(PlannerError):
        h.p.connection_up(-1)
    assert h.p.connection_up(0).actions == ()  # already live


def test_reject_of_replace_keeps_the_old_window() -> None:
    limits = FeedLimits(sockets_per_account=1, instruments_per_socket=10, instruments_per_message=4)
    h = Harness(limits)
    h.run(h.p.add_group("B:1", "B", keys(range(6)), FeedMode.QUOTE, "tierb", 0.0))  # type: ignore[arg-type]
    h.run(h.p.add_group("A:1", Tier.A, keys(range(6, 9)), FeedMode.FULL, "u1", 1.0))
    before = (h.p.snapshot(), h.p.actual())
    r = h.p.replace_keys("A:1", keys(range(6, 12)), 2.0)
    assert not r.accepted
    assert r.events[0].count == 6
    assert (h.p.snapshot(), h.p.actual()) == before
    assert h.p.group("B:1").tier is Tier.B  # a plain "B" is accepted as Tier.B


def test_actions_are_executable_messages() -> None:
    h = Harness()
    r = h.run(h.p.add_group("B:1", Tier.B, keys(range(1_234)), FeedMode.FULL, "tierb", 0.0))
    assert all(1 <= len(a.keys) <= 100 for a in r.actions)
    assert sum(len(a.keys) for a in r.actions) == 1_234
    assert {a.request_code for a in r.actions} == {21}
    assert isinstance(r.actions[0].keys[0], InstrumentKey)


def test_planner_imports_no_io() -> None:
    """The planner stays pure: stdlib data-structure modules, settings and the protocol types only."""
    allowed = {
        "__future__",
        "collections",
        "collections.abc",
        "dataclasses",
        "enum",
        "itertools",
        "typing",
        "tickgate.config",
        "tickgate.dhan.protocol",
    }
    pkg = Path(__file__).resolve().parents[2] / "src" / "tickgate" / "planner"
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name in allowed or name.startswith("tickgate.planner"), f"{path.name} imports {name}"
        assert "time." not in path.read_text(), f"{path.name} reads a clock"
