"""Focused property tests: placement arithmetic and bounded rebalancing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import FeedMode
from tickgate.planner import EventKind, Planner, Tier
from tickgate.planner.core import _waterfill

from .model import ServerModel, keys


@st.composite
def loads_and_n(draw: st.DrawFn) -> tuple[list[int], int, int]:
    cap = draw(st.integers(1, 60))
    loads = draw(st.lists(st.integers(0, cap), min_size=1, max_size=6))
    n = draw(st.integers(0, cap * len(loads) - sum(loads)))
    return loads, n, cap


@given(loads_and_n())
def test_waterfill_equals_one_at_a_time_least_loaded(case: tuple[list[int], int, int]) -> None:
    loads, n, cap = case
    naive = list(loads)
    for _ in range(n):
        i = min(range(len(naive)), key=lambda j: (naive[j], j))
        naive[i] += 1
    counts = _waterfill(loads, n, cap)
    assert [a + b for a, b in zip(loads, counts, strict=True)] == naive
    assert all(c >= 0 for c in counts)
    assert max(naive) <= cap


@st.composite
def loads_and_caps(draw: st.DrawFn) -> tuple[list[int], int, list[int]]:
    caps = draw(st.lists(st.integers(1, 60), min_size=1, max_size=6))
    loads = [draw(st.integers(0, c)) for c in caps]
    n = draw(st.integers(0, sum(caps) - sum(loads)))
    return loads, n, caps


@given(loads_and_caps())
def test_waterfill_under_per_connection_ceilings_equals_one_at_a_time(
    case: tuple[list[int], int, list[int]],
) -> None:
    """A socket Dhan answered 804 on has a lower ceiling: keys go one at a time to the least-loaded socket
    that still has room."""
    loads, n, caps = case
    naive = list(loads)
    for _ in range(n):
        i = min((j for j in range(len(naive)) if naive[j] < caps[j]), key=lambda j: (naive[j], j))
        naive[i] += 1
    counts = _waterfill(loads, n, caps)
    assert [a + b for a, b in zip(loads, counts, strict=True)] == naive
    assert all(x <= c for x, c in zip(naive, caps, strict=True))


@st.composite
def rebalance_cases(draw: st.DrawFn) -> tuple[int, int, list[int], int]:
    """(connections, per connection, Tier B group sizes that fit, connection to bounce)."""
    conns = draw(st.integers(2, 5))
    per = draw(st.integers(5, 40))
    sizes = draw(st.lists(st.integers(1, 30), min_size=1, max_size=12))
    return conns, per, sizes, draw(st.integers(0, conns - 1))


@given(
    case=rebalance_cases(),
    max_moves=st.one_of(st.none(), st.integers(0, 25)),
    tolerance=st.integers(0, 6),
)
def test_rebalance_moves_at_most_max_moves_and_keeps_the_plan(
    case: tuple[int, int, list[int], int], max_moves: int | None, tolerance: int
) -> None:
    conns, per, sizes, bounce = case
    limits = FeedLimits(sockets_per_account=conns, instruments_per_socket=per, instruments_per_message=4)
    p = Planner(limits)
    server = ServerModel(limits)
    for c in range(conns):
        server.apply(p.connection_up(c), p.live_connections())
    nxt = 0
    for i, size in enumerate(sizes):
        r = p.add_group(f"B:{i}", Tier.B, keys(range(nxt, nxt + size)), FeedMode.QUOTE, "b", 0.0)
        server.apply(r, p.live_connections())
        nxt += size
    server.drop(bounce)
    server.apply(p.connection_down(bounce), p.live_connections())
    server.apply(p.connection_up(bounce, rebalance=False), p.live_connections())
    plan = {k: m for row in p.actual().values() for k, m in row.items()}
    spread = max(p.loads()) - min(p.loads())

    r = p.rebalance(max_moves=max_moves, tolerance=tolerance)
    server.apply(r, p.live_connections())
    assert p.actual() == server.conns
    assert {k: m for row in p.actual().values() for k, m in row.items()} == plan
    moved = sum(len(a.keys) for a in r.actions if a.op == "subscribe")
    assert moved == sum(e.count for e in r.events if e.kind is EventKind.MOVE)
    new_spread = max(p.loads()) - min(p.loads())
    if spread <= tolerance:
        assert moved == 0
    elif max_moves is None:
        assert new_spread <= 1
    else:
        assert moved <= max_moves
        assert new_spread <= spread
        if moved < max_moves:
            assert new_spread <= 1
