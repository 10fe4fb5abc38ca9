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
    core), checking every action as Dhan would see it and, more strictly, as a careful client must send it.

    ``accounts``: each account's sockets, as given to the planner (default: one account). Connection ids
    run account by account; no account is ever sent an action for more sockets than it has."""

    def __init__(self, limits: FeedLimits, accounts: list[int] | None = None) -> None:
        self.limits = limits
        self.accounts = accounts or [limits.feed_sockets]
        assert all(1 <= n <= limits.feed_sockets for n in self.accounts), "an account over its sockets"
        n = sum(self.accounts)
        self.account_of = [a for a, m in enumerate(self.accounts) for _ in range(m)]
        self.books = {c: SocketBook(limits) for c in range(n)}
        self.ceilings = [limits.instruments_per_socket] * n

    @property
    def conns(self) -> dict[int, dict[InstrumentKey, FeedMode]]:
        return {c: book.subscriptions for c, book in self.books.items()}

    def drop(self, connection: int) -> None:
        """A socket closed: the server forgets everything subscribed on it."""
        self.books[connection].clear()

    def loads(self) -> dict[int, int]:
        return {c: len(book.subscriptions) for c, book in self.books.items()}

    def apply(self, result: PlanResult, live: Iterable[int], ceilings: list[int] | None = None) -> None:
        """``ceilings``: each connection's (the planner's, after an 804 lowered one); the limit otherwise."""
        live_set = set(live)
        if ceilings is not None:
            self.ceilings = ceilings
        subscribed_on: set[int] = set()
        for a in result.actions:
            assert a.keys, "empty message"
            assert a.connection in self.books, f"socket {a.connection} is no account's (or reserved)"
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


def check_chain_placed(
    before: dict[int, dict[InstrumentKey, FeedMode]],
    after: dict[int, dict[InstrumentKey, FeedMode]],
    chain: Iterable[InstrumentKey],
    *,
    live: list[int],
    ceilings: list[int],
    account_of: list[int] | None = None,
) -> None:
    """One chain added: its keys that were not placed before sit whole on one connection when a live
    connection had room for all of them, and that connection was the least loaded with room (within its
    account when the plan spans accounts: Tier B chooses the account first). ``before``: what each
    connection carried before the add."""
    was = {k for row in before.values() for k in row}
    load = {c: len(row) for c, row in before.items()}
    wanted = [k for k in chain if k not in was and any(k in row for row in after.values())]
    placed_on = {c for c, row in after.items() for k in wanted if k in row}
    if not wanted:
        return
    fits = [c for c in live if ceilings[c] - load[c] >= len(wanted)]
    if not fits:
        return
    assert len(placed_on) == 1, f"a chain of {len(wanted)} split over {sorted(placed_on)} with room on {fits}"
    (c,) = placed_on
    peers = [x for x in fits if account_of is None or account_of[x] == account_of[c]]
    assert load[c] == min(load[x] for x in peers), f"chain on {c} ({load[c]}) not least loaded {load}"
