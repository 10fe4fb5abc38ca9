"""The simulator's pure core: Dhan's per-socket book, its limits and its token rules, without a socket."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.sim.core import SocketBook, TokenBook, sockets_to_evict

LIMITS = FeedLimits(sockets_per_account=2, instruments_per_socket=5, instruments_per_message=3)


def k(i: int) -> InstrumentKey:
    return InstrumentKey(ExchangeSegment.NSE_FNO, i)


def test_a_message_over_the_limit_is_refused_whole() -> None:
    book = SocketBook(LIMITS)
    done = book.apply(True, FeedMode.QUOTE, [k(1), k(2), k(3), k(4)])
    assert done.breach == "instruments_per_message"
    assert len(book) == 0
    # Unknown ids count towards the message limit too: ``sent`` is what the message listed.
    assert book.apply(True, FeedMode.QUOTE, [k(1)], sent=4).breach == "instruments_per_message"


def test_the_socket_limit_is_applied_then_flagged() -> None:
    book = SocketBook(LIMITS)
    assert book.apply(True, FeedMode.QUOTE, [k(1), k(2), k(3)]).breach is None
    done = book.apply(True, FeedMode.QUOTE, [k(4), k(5), k(6)])
    assert done.breach == "instruments_per_socket"
    assert done.size == 6
    assert book.max_size == 6


def test_resubscribe_changes_mode_and_unsubscribe_ignores_it() -> None:
    book = SocketBook(LIMITS)
    assert book.apply(True, FeedMode.QUOTE, [k(1), k(2)]).new == [k(1), k(2)]
    again = book.apply(True, FeedMode.FULL, [k(1)])
    assert again.new == []
    assert again.changed == ((k(1), FeedMode.QUOTE),)
    gone = book.apply(False, FeedMode.QUOTE, [k(1), k(2), k(9)])
    assert gone.removed == ((k(1), FeedMode.FULL), (k(2), FeedMode.QUOTE))
    assert gone.mismatches == 1
    assert book.clear() == 0


@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 8), max_size=3, unique=True)), max_size=30))
def test_book_matches_a_dict(messages: list[tuple[bool, list[int]]]) -> None:
    book = SocketBook(FeedLimits(instruments_per_socket=100))
    expected: dict[InstrumentKey, FeedMode] = {}
    for subscribe, ids in messages:
        mode = FeedMode.QUOTE if len(ids) % 2 else FeedMode.TICKER
        done = book.apply(subscribe, mode, [k(i) for i in ids])
        for i in ids:
            if subscribe:
                expected[k(i)] = mode
            else:
                expected.pop(k(i), None)
        assert done.size == len(expected)
    assert book.subscriptions == expected


def test_sockets_over_the_account_limit_evict_the_oldest() -> None:
    assert sockets_to_evict(0, LIMITS) == 0
    assert sockets_to_evict(1, LIMITS) == 0
    assert sockets_to_evict(2, LIMITS) == 1
    assert sockets_to_evict(4, LIMITS) == 3


def test_tokens() -> None:
    book = TokenBook.of({"C1": "tok1", "C2": "tok2"})
    ok = {"version": "2", "authType": "2", "token": "tok1", "clientId": "C1"}
    assert book.check(ok) == ("C1", "tok1", None)
    assert book.check({**ok, "version": "1"})[2] == 808
    assert book.check({**ok, "token": "nope"})[2] == 809
    assert book.check({**ok, "clientId": "C2"})[2] == 810
    assert book.expire("C1") == ["tok1"]
    assert book.check(ok)[2] == 807
    assert book.check({**ok, "token": "tok2", "clientId": "C2"})[2] is None
    book.issue("tok1b", "C1")
    assert book.check({**ok, "token": "tok1b"})[2] is None
    assert book.client_ids() == ["C1", "C2"]
