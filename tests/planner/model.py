"""An independent model of what Dhan's server holds per connection, fed only with the planner's actions.

Tests compare it with ``Planner.actual()``: if the planner's bookkeeping and the actions it emits ever
disagree, the I/O layer would leave the real sockets in a state the planner does not know about.
"""

from __future__ import annotations

from collections.abc import Iterable

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.planner import PlanResult


def key(i: int) -> InstrumentKey:
    """Test key number ``i`` (two segments, so equal security ids in different segments are distinct)."""
    return InstrumentKey(ExchangeSegment.NSE_FNO if i % 3 else ExchangeSegment.BSE_FNO, i)


def keys(ids: Iterable[int]) -> list[InstrumentKey]:
    return [key(i) for i in ids]


class ServerModel:
    """Per-connection {key: mode}, checking every action as Dhan would see it."""

    def __init__(self, limits: FeedLimits) -> None:
        self.limits = limits
        self.conns: dict[int, dict[InstrumentKey, FeedMode]] = {
            c: {} for c in range(limits.sockets_per_account)
        }

    def drop(self, connection: int) -> None:
        """A socket closed: the server forgets everything subscribed on it."""
        self.conns[connection] = {}

    def apply(self, result: PlanResult, live: Iterable[int]) -> None:
        live_set = set(live)
        self.check_least_loaded(result, live_set)
        subscribed_on: set[int] = set()
        for a in result.actions:
            assert 1 <= len(a.keys) <= self.limits.instruments_per_message, f"bad message size {len(a.keys)}"
            assert a.connection in live_set, f"action for down connection {a.connection}"
            assert len(set(a.keys)) == len(a.keys), "duplicate key in one message"
            row = self.conns[a.connection]
            if a.op == "unsubscribe":
                assert a.connection not in subscribed_on, "unsubscribe after subscribe on one connection"
                for k in a.keys:
                    assert row.get(k) is a.mode, f"unsubscribe {k} {a.mode} but connection has {row.get(k)}"
                    del row[k]
            else:
                assert a.op == "subscribe"
                subscribed_on.add(a.connection)
                for k in a.keys:
                    assert k not in row, f"duplicate subscribe of {k} on {a.connection}"
                    row[k] = a.mode
                assert len(row) <= self.limits.instruments_per_socket, "connection over its limit mid-way"

    def check_least_loaded(self, result: PlanResult, live: set[int]) -> None:
        """Newly placed keys must land where one-at-a-time least-loaded placement (ties → lowest id)
        would put them, counted per connection. Results that move keys (rebalance) are exempt."""
        unsub_on: dict[InstrumentKey, int] = {}
        for a in result.actions:
            if a.op == "unsubscribe":
                for k in a.keys:
                    unsub_on[k] = a.connection
        loads = {c: len(self.conns[c]) for c in live}
        for c in unsub_on.values():
            loads[c] -= 1
        placed: dict[int, int] = {}
        for a in result.actions:
            if a.op != "subscribe":
                continue
            for k in a.keys:
                src = unsub_on.get(k)
                if src is None:
                    placed[a.connection] = placed.get(a.connection, 0) + 1
                elif src == a.connection:
                    loads[src] += 1  # mode change in place
                else:
                    return  # a move: not a placement decision
        expected: dict[int, int] = {}
        for _ in range(sum(placed.values())):
            c = min(loads, key=lambda c: (loads[c], c))
            loads[c] += 1
            expected[c] = expected.get(c, 0) + 1
        assert placed == expected, f"placement {placed} is not least-loaded-first {expected}"
