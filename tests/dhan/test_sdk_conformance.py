"""Conformance with the official SDK (dhanhq 2.3.0, dev dependency only).

The SDK's ``MarketFeed`` parser is the reference for the byte layout: for generated packets of every code,
tickgate's decoder must agree with it field by field (the SDK formats prices as 2-decimal strings and LTT
as a UTC ``HH:MM:SS``, so those are compared in its format), and bytes tickgate builds must parse in the SDK.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given

from tickgate.dhan.batch import decode_batch
from tickgate.dhan.protocol import (
    DepthLevel,
    Disconnect,
    ExchangeSegment,
    Full,
    OpenInterest,
    PrevClose,
    Quote,
    Ticker,
    decode_frame,
    encode_packet,
    ltt_to_datetime,
)

from .strategies import disconnects, fulls, open_interests, prev_closes, quotes, tickers

marketfeed = pytest.importorskip("dhanhq.marketfeed")


@pytest.fixture(scope="module")
def sdk() -> Any:
    parser = object.__new__(marketfeed.MarketFeed)  # the parser methods only: no event loop, no socket
    parser.on_close = None
    return parser


def _p(value: float) -> str:
    return f"{value:.2f}"


def _ltt(value: int) -> str:
    # The SDK prints LTT as UTC HH:MM:SS; under the IST-as-UTC quirk that is the IST wall clock we compute.
    return ltt_to_datetime(value, ist_wall_clock=True).strftime("%H:%M:%S")


def _depth(levels: tuple[DepthLevel, ...]) -> list[dict[str, Any]]:
    return [
        {
            "bid_quantity": d.bid_qty,
            "ask_quantity": d.ask_qty,
            "bid_orders": d.bid_orders,
            "ask_orders": d.ask_orders,
            "bid_price": _p(d.bid_price),
            "ask_price": _p(d.ask_price),
        }
        for d in levels
    ]


def _decode_one(raw: bytes) -> Any:
    (packet,) = decode_frame(raw)
    assert decode_batch([raw]).records() == [packet]
    return packet


@given(tickers)
def test_ticker(sdk: Any, ticker: Ticker) -> None:
    raw = encode_packet(ticker)
    ours = _decode_one(raw)
    assert sdk.process_data(raw) == {
        "type": "Ticker Data",
        "exchange_segment": int(ours.segment),
        "security_id": ours.security_id,
        "LTP": _p(ours.ltp),
        "LTT": _ltt(ours.ltt),
    }


@given(quotes)
def test_quote(sdk: Any, quote: Quote) -> None:
    raw = encode_packet(quote)
    q = _decode_one(raw)
    assert sdk.process_data(raw) == {
        "type": "Quote Data",
        "exchange_segment": int(q.segment),
        "security_id": q.security_id,
        "LTP": _p(q.ltp),
        "LTQ": q.ltq,
        "LTT": _ltt(q.ltt),
        "avg_price": _p(q.atp),
        "volume": q.volume,
        "total_sell_quantity": q.total_sell_qty,
        "total_buy_quantity": q.total_buy_qty,
        "open": _p(q.open),
        "close": _p(q.close),
        "high": _p(q.high),
        "low": _p(q.low),
    }


@given(open_interests)
def test_oi(sdk: Any, oi: OpenInterest) -> None:
    raw = encode_packet(oi)
    ours = _decode_one(raw)
    assert sdk.process_data(raw) == {
        "type": "OI Data",
        "exchange_segment": int(ours.segment),
        "security_id": ours.security_id,
        "OI": ours.oi,
    }


@given(prev_closes)
def test_prev_close(sdk: Any, prev: PrevClose) -> None:
    raw = encode_packet(prev)
    ours = _decode_one(raw)
    assert sdk.process_data(raw) == {
        "type": "Previous Close",
        "exchange_segment": int(ours.segment),
        "security_id": ours.security_id,
        "prev_close": _p(ours.prev_close),
        "prev_OI": ours.prev_oi,
    }


@given(fulls)
def test_full(sdk: Any, full: Full) -> None:
    raw = encode_packet(full)
    f = _decode_one(raw)
    assert sdk.process_data(raw) == {
        "type": "Full Data",
        "exchange_segment": int(f.segment),
        "security_id": f.security_id,
        "LTP": _p(f.ltp),
        "LTQ": f.ltq,
        "LTT": _ltt(f.ltt),
        "avg_price": _p(f.atp),
        "volume": f.volume,
        "total_sell_quantity": f.total_sell_qty,
        "total_buy_quantity": f.total_buy_qty,
        "OI": f.oi,
        "oi_day_high": f.oi_day_high,
        "oi_day_low": f.oi_day_low,
        "open": _p(f.open),
        "close": _p(f.close),
        "high": _p(f.high),
        "low": _p(f.low),
        "depth": _depth(f.depth),
    }


@given(disconnects)
def test_disconnect(sdk: Any, disconnect: Disconnect) -> None:
    # The SDK only prints for code 50 (and returns None); its own struct must read the same reason code.
    raw = encode_packet(disconnect)
    ours = _decode_one(raw)
    assert struct.unpack("<BHBIH", raw) == (50, 10, int(ours.segment), ours.security_id, ours.reason_code)
    assert sdk.process_data(raw) is None


def test_real_frame_from_sdk_issue_90(sdk: Any) -> None:
    """First bytes of a real 162-byte full packet reported in the SDK's issue #90, rest zero-filled."""
    head = bytes.fromhex("08 a2 00 02 f4 d9 00 00 cd 4c 18 43 4b 00")
    raw = head + bytes(162 - len(head))
    (packet,) = decode_frame(raw)
    assert isinstance(packet, Full)
    assert packet.segment is ExchangeSegment.NSE_FNO
    assert packet.security_id == 55796
    assert round(packet.ltp, 2) == 152.30
    assert packet.ltq == 75
    parsed = sdk.process_data(raw)
    assert (parsed["security_id"], parsed["LTP"], parsed["LTQ"]) == (55796, "152.30", 75)
