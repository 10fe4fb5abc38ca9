"""Quote store: values land where the packets say, latest wins, consumers pull coalesced updates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tickgate.dhan.batch import decode_batch
from tickgate.dhan.protocol import (
    DepthLevel,
    ExchangeSegment,
    Full,
    InstrumentKey,
    OpenInterest,
    PrevClose,
    Quote,
    Ticker,
    encode_packet,
)
from tickgate.feed.quotes import QuoteStore

A = InstrumentKey(ExchangeSegment.NSE_FNO, 40_001)
B = InstrumentKey(ExchangeSegment.IDX_I, 13)


def _full(key: InstrumentKey, ltp: float, volume: int = 10) -> Full:
    depth = tuple(
        DepthLevel(10 + i, 20 + i, 1, 2, ltp - 0.5 * (i + 1), ltp + 0.5 * (i + 1)) for i in range(5)
    )
    return Full(
        key.segment,
        key.security_id,
        ltp,
        5,
        1_000,
        ltp,
        volume,
        7,
        8,
        900,
        950,
        850,
        1.0,
        2.0,
        3.0,
        0.5,
        depth,
    )


def _apply(store: QuoteStore, *packets: object, now: int = 1) -> int:
    frames = [encode_packet(p) for p in packets]  # type: ignore[arg-type]
    return store.apply(decode_batch(frames), now)


def test_full_packet_fields_land_in_the_store() -> None:
    store = QuoteStore(capacity=4)
    packet = _full(A, 101.5)
    assert _apply(store, packet, PrevClose(A.segment, A.security_id, 100.0, 800), now=42) == 2
    quote = store.get(A)
    assert quote is not None
    assert (quote.ltp, quote.ltq, quote.ltt, quote.volume, quote.oi) == (101.5, 5, 1_000, 10, 900)
    assert (quote.open, quote.close, quote.high, quote.low) == (1.0, 2.0, 3.0, 0.5)
    assert quote.bids[0] == (101.0, 10, 1)
    assert quote.asks[4] == (104.0, 24, 2)
    assert quote.bid == 101.0
    assert quote.ask == 102.0
    assert quote.prev_close == 100.0
    assert quote.change == 1.5
    assert quote.change_pct == 1.5
    assert quote.updated_ns == 42
    assert quote.updates == 2


def test_unset_fields_are_none_not_zero() -> None:
    store = QuoteStore()
    _apply(store, Ticker(B.segment, B.security_id, 26_000.0, 5))
    quote = store.get(B)
    assert quote is not None
    assert quote.ltp == 26_000.0
    assert quote.volume is None
    assert quote.oi is None
    assert quote.bids == ()
    assert quote.change is None
    store.register([A])
    empty = store.get(A)
    assert empty is not None
    assert empty.ltp is None
    assert empty.updates == 0
    assert store.get(InstrumentKey(ExchangeSegment.BSE_EQ, 1)) is None


def test_latest_packet_in_stream_wins_across_types() -> None:
    store = QuoteStore()
    _apply(store, _full(A, 100.0), Ticker(A.segment, A.security_id, 99.0, 7), _full(A, 98.0))
    assert store.get(A).ltp == 98.0  # type: ignore[union-attr]
    _apply(store, _full(A, 97.0), Ticker(A.segment, A.security_id, 96.0, 9))
    quote = store.get(A)
    assert quote is not None
    assert quote.ltp == 96.0
    assert quote.ltt == 9


@given(st.lists(st.tuples(st.sampled_from([A, B]), st.floats(1, 1e5, width=32)), min_size=1, max_size=50))
def test_store_holds_the_last_price_sent_per_instrument(ticks: list[tuple[InstrumentKey, float]]) -> None:
    store = QuoteStore(capacity=1)  # forces growth
    packets = [
        Quote(k.segment, k.security_id, p, 1, 2, p, 3, 4, 5, p, p, p, p)
        if i % 2
        else Ticker(k.segment, k.security_id, p, i)
        for i, (k, p) in enumerate(ticks)
    ]
    _apply(store, *packets)
    last = {k: p for k, p in ticks}
    for key, price in last.items():
        assert store.get(key).ltp == price  # type: ignore[union-attr]
    assert store.packets == len(ticks)


def test_oi_and_quote_packets() -> None:
    store = QuoteStore()
    _apply(store, Quote(A.segment, A.security_id, 5.0, 1, 2, 4.5, 300, 4, 6, 4.0, 4.2, 5.5, 3.9))
    _apply(store, OpenInterest(A.segment, A.security_id, 12_345))
    quote = store.get(A)
    assert quote is not None
    assert (quote.ltp, quote.atp, quote.volume, quote.total_sell_qty, quote.total_buy_qty) == (
        5.0,
        4.5,
        300,
        4,
        6,
    )
    assert quote.oi == 12_345


def test_watch_delivers_each_change_once_and_coalesces() -> None:
    store = QuoteStore()
    watch = store.watch([A, B])
    initial = watch.take()  # a new watcher first gets the current state, even if nothing has ticked
    assert {q.key for q in initial} == {A, B}
    assert all(q.ltp is None for q in initial)
    assert watch.take() == []
    _apply(store, Ticker(A.segment, A.security_id, 1.0, 1))
    first = watch.take()
    assert [(q.key, q.ltp) for q in first] == [(A, 1.0)]
    assert watch.take() == []
    for price in (2.0, 3.0, 4.0):  # a slow consumer misses two of three updates
        _apply(store, Ticker(A.segment, A.security_id, price, 1))
    (latest,) = watch.take()
    assert latest.ltp == 4.0
    assert watch.coalesced == 2
    assert watch.delivered == 4


def test_watch_key_changes() -> None:
    store = QuoteStore()
    _apply(store, Ticker(A.segment, A.security_id, 1.0, 1), Ticker(B.segment, B.security_id, 2.0, 1))
    watch = store.watch([A])
    assert [q.key for q in watch.take()] == [A]
    watch.set_keys([A, B])
    assert [q.key for q in watch.take()] == [B]  # A was already seen; B is new to this watcher
    watch.set_keys([])
    _apply(store, Ticker(A.segment, A.security_id, 3.0, 1))
    assert watch.take() == []


def test_feed_manager_uses_the_store_it_is_given_even_when_empty() -> None:
    """Regression: an empty QuoteStore is falsy (it has __len__); ``store or QuoteStore()`` dropped it."""
    from tickgate.config import Settings
    from tickgate.dhan.client import Credentials
    from tickgate.feed import FeedManager
    from tickgate.planner import Planner

    store = QuoteStore()
    settings = Settings()
    manager = FeedManager(settings, Planner(settings.limits), lambda: Credentials("c", "t"), store=store)
    assert manager.store is store


@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([1, 2, 5]), st.integers(0, 2**32 - 1)).map(
                lambda t: InstrumentKey(ExchangeSegment(t[0]), t[1])
            ),
            max_size=30,
        ),
        max_size=12,
    ),
    st.integers(0, 10),
)
def test_incremental_index_finds_every_key_registered_or_ticked(
    batches: list[list[InstrumentKey]], ticked: int
) -> None:
    """Keys arrive by registration (chain adds) and by first tick, in any order: every one of them is found
    at its own slot, and ticks land on it."""
    store = QuoteStore(capacity=4)
    seen: list[InstrumentKey] = []
    for i, batch in enumerate(batches):
        if i % 2:
            store.register(batch)
        elif batch:
            frames = b"".join(encode_packet(Ticker(k.segment, k.security_id, 1.0 + i, 1)) for k in batch)
            store.apply(decode_batch([frames]), now_ns=i)
        seen.extend(batch)
    assert list(store._index_keys) == sorted(set(store._index_keys.tolist()))
    assert len(store) == len(set(seen))
    unique = list(dict.fromkeys(seen))[:: max(1, ticked)]
    prices = {k: float(n + 2) for n, k in enumerate(unique)}
    frames = b"".join(encode_packet(Ticker(k.segment, k.security_id, p, 1)) for k, p in prices.items())
    if frames:
        store.apply(decode_batch([frames]), now_ns=99)
    for key, price in prices.items():
        quote = store.get(key)
        assert quote is not None
        assert quote.key == key
        assert quote.ltp == price
