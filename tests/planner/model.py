"""An independent model of what Dhan's server holds per connection, fed only with the planner's actions.

Tests compare it with ``Planner.actual()``: if the planner's bookkeeping and the actions it emits ever
disagree, the I/O layer would leave the real sockets in a state the planner does not know about.
"""

from __future__ import annotations

from collections.abc import Iterable

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.planner import PlanResult
from tickgate.sim.core import SocketBook


def key(i: int) -> InstrumentKey:
    """Test key number ``i`` (two segments, so equal security ids in different segments are distinct)."""
    return InstrumentKey(ExchangeSegment.NSE_FNO if i % 3 else ExchangeSegment.BSE_FNO, i)


def keys(ids: Iterable[int]) -> list[InstrumentKey]:
    return [key(i) for i in ids]


class ServerModel:
    """Per-connection books of Dhan's server (:class:`tickgate.sim.core.SocketBook`, the simulator's own
    core), checking every action as Dhan would see it and, more strictly, as a careful client must send it."""

    def __init__(self, limits: FeedLimits) -> None:
        self.limits = limits
        self.books = {c: SocketBook(limits) for c in range(limits.sockets_per_account)}

    @property
    def conns(self) -> dict[int, dict[InstrumentKey, FeedMode]]:
        return {c: book.subscriptions for c, book in self.books.items()}

    def drop(self, connection: int) -> None:
        """A socket closed: the server forgets everything subscribed on it."""
        self.books[connection].clear()

    def apply(self, result: PlanResult, live: Iterable[int]) -> None:
        live_set = set(live)
        self.check_least_loaded(result, live_set)
        subscribed_on: set[int] = set()
        for a in result.actions:
            assert a.keys, "empty message"
            assert a.connection in live_set, f"action for down connection {a.connection}"
            assert len(set(a.keys)) == len(a.keys), "duplicate key in one message"
            book = self.books[a.connection]
            if a.op == "unsubscribe":
                assert a.connection not in subscribed_on, "unsubscribe after subscribe on one connection"
                done = book.apply(False, a.mode, a.keys)
                assert done.breach is None, f"Dhan would disconnect: {done.breach} ({len(a.keys)} keys)"
                assert len(done.removed) == len(a.keys), "unsubscribe of a key the connection does not hold"
                assert done.mismatches == 0, f"unsubscribe in {a.mode} of keys held in another mode"
            else:
                assert a.op == "subscribe"
                subscribed_on.add(a.connection)
                done = book.apply(True, a.mode, a.keys)
                assert done.breach is None, f"Dhan would disconnect: {done.breach} ({len(a.keys)} keys)"
                assert len(done.new) == len(a.keys), f"duplicate subscribe on {a.connection}"

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
