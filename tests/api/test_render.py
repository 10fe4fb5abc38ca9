"""Hand-rendered JSON of the hot paths equals what the pydantic models say, and is reused until it changes."""

from __future__ import annotations

import json

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from tickgate.api.models import QuoteOut
from tickgate.api.render import QuoteRenderer, finish_chain, quote_json
from tickgate.api.routes import quote_out
from tickgate.dhan.batch import decode_batch
from tickgate.dhan.protocol import DepthLevel, ExchangeSegment, Full, InstrumentKey, Ticker, encode_packet
from tickgate.feed.quotes import QuoteStore

KEY = InstrumentKey(ExchangeSegment.NSE_FNO, 41_000)
prices = st.floats(0.0625, 1e6, allow_nan=False, allow_infinity=False, width=32)


def _full(ltp: float, volume: int, bid: float, ask: float) -> bytes:
    depth = tuple(DepthLevel(10 + i, 20 + i, 1, 2, bid - i, ask + i) for i in range(5))
    return encode_packet(
        Full(
            KEY.segment,
            KEY.security_id,
            ltp,
            5,
            1_000,
            ltp,
            volume,
            7,
            8,
            900,
            950,
            800,
            ltp,
            ltp,
            ltp,
            ltp,
            depth,
        )
    )


@given(prices, st.integers(0, 2**31 - 1), prices, prices, st.booleans())
def test_quote_json_is_the_model(ltp: float, volume: int, bid: float, ask: float, full: bool) -> None:
    store = QuoteStore()
    frame = (
        _full(ltp, volume, bid, ask) if full else encode_packet(Ticker(KEY.segment, KEY.security_id, ltp, 9))
    )
    store.apply(decode_batch([frame]), now_ns=1)
    snapshot = store.get(KEY)
    assert snapshot is not None
    rendered = json.loads(quote_json(snapshot))
    assert rendered == quote_out(snapshot).model_dump(mode="json")
    assert QuoteOut.model_validate(rendered).model_dump(mode="json") == rendered


def test_a_quote_is_rendered_once_per_update_whoever_reads_it() -> None:
    store = QuoteStore()
    renderer = QuoteRenderer(store)
    assert renderer.quote(KEY) == b"null"  # never seen
    store.apply(decode_batch([_full(100.0, 10, 99.5, 100.5)]), now_ns=1)
    first = [renderer.quote(KEY) for _ in range(100)]
    assert len(set(first)) == 1
    assert (renderer.rendered, renderer.reused) == (1, 99)
    store.apply(decode_batch([_full(101.0, 11, 100.5, 101.5)]), now_ns=2)
    assert json.loads(renderer.quote(KEY))["ltp"] == 101.0
    assert renderer.rendered == 2
    leg = json.loads(renderer.leg(KEY))
    assert leg["security_id"] == KEY.security_id
    assert leg["key"] == str(KEY)
    assert leg["quote"]["volume"] == 11


def test_the_caller_part_of_a_chain() -> None:
    assert json.loads(finish_chain(b'{"symbol":"X"', None)) == {"symbol": "X", "watchlist_id": None}
    assert json.loads(finish_chain(b'{"symbol":"X"', 12)) == {"symbol": "X", "watchlist_id": 12}


def test_push_messages_equal_the_plain_encoding() -> None:
    store = QuoteStore()
    renderer = QuoteRenderer(store)
    other = InstrumentKey(ExchangeSegment.IDX_I, 13)
    frames = _full(100.0, 10, 99.5, 100.5) + encode_packet(
        Ticker(other.segment, other.security_id, 24_000.5, 9)
    )
    store.apply(decode_batch([frames]), now_ns=1)
    slots = [s for s in (store.slot_of(KEY), store.slot_of(other)) if s is not None]
    assert len(slots) == 2
    quotes = []
    for slot in slots:
        q = store.snapshot_at(slot)
        quotes.append({**q.as_dict(), "updates": q.updates})
    expected = {"type": "quotes", "quotes": quotes, "coalesced": 7}
    assert json.loads(renderer.quotes_message(slots, 7, binary=False)) == expected
    assert msgpack.unpackb(renderer.quotes_message(slots, 7, binary=True)) == expected
    assert json.loads(renderer.quotes_message([], 0, binary=False)) == {
        **expected,
        "quotes": [],
        "coalesced": 0,
    }


def test_one_rendering_per_quote_per_push_tick() -> None:
    """Clients of one push tick share one rendering of a quote even if it ticks meanwhile; the next tick
    (and the chain endpoint, which never uses tick renderings) sees the new value."""
    store = QuoteStore()
    renderer = QuoteRenderer(store)
    store.apply(decode_batch([_full(100.0, 10, 99.5, 100.5)]), now_ns=1)
    slot = store.slot_of(KEY)
    assert slot is not None
    first = renderer.slot_json(slot, this_tick=True)
    store.apply(decode_batch([_full(101.0, 11, 100.5, 101.5)]), now_ns=2)
    assert renderer.slot_json(slot, this_tick=True) == first  # same tick: the same bytes for everyone
    assert json.loads(renderer.slot_json(slot))["ltp"] == 101.0  # exact readers always get the latest
    renderer.next_generation()
    assert json.loads(renderer.slot_json(slot, this_tick=True))["ltp"] == 101.0
