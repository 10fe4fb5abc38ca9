"""Protocol enums and keys exactly as the Dhan fact sheet states them."""

from __future__ import annotations

import pytest

from tickgate.dhan.protocol import (
    ExchangeSegment,
    FeedMode,
    InstrumentKey,
    segment_for_master,
)


def test_segment_numbers_match_fact_sheet() -> None:
    expected = {
        "IDX_I": 0,
        "NSE_EQ": 1,
        "NSE_FNO": 2,
        "NSE_CURRENCY": 3,
        "BSE_EQ": 4,
        "MCX_COMM": 5,
        "BSE_CURRENCY": 7,
        "BSE_FNO": 8,
    }
    assert {s.name: int(s) for s in ExchangeSegment} == expected
    for name, number in expected.items():
        assert ExchangeSegment.from_name(name) == ExchangeSegment(number)


def test_unknown_segment_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown exchange segment 'NSE'"):
        ExchangeSegment.from_name("NSE")


def test_master_mapping_matches_fact_sheet() -> None:
    assert segment_for_master("NSE", "I") is ExchangeSegment.IDX_I
    assert segment_for_master("BSE", "I") is ExchangeSegment.IDX_I
    assert segment_for_master("NSE", "E") is ExchangeSegment.NSE_EQ
    assert segment_for_master("NSE", "D") is ExchangeSegment.NSE_FNO
    assert segment_for_master("NSE", "C") is ExchangeSegment.NSE_CURRENCY
    assert segment_for_master("BSE", "E") is ExchangeSegment.BSE_EQ
    assert segment_for_master("BSE", "D") is ExchangeSegment.BSE_FNO
    assert segment_for_master("BSE", "C") is ExchangeSegment.BSE_CURRENCY
    assert segment_for_master("MCX", "M") is ExchangeSegment.MCX_COMM
    assert segment_for_master("MCX", "E") is None


@pytest.mark.parametrize(
    ("mode", "sub", "unsub"),
    [
        (FeedMode.TICKER, 15, 16),
        (FeedMode.QUOTE, 17, 18),
        (FeedMode.FULL, 21, 22),
    ],
)
def test_feed_mode_codes(mode: FeedMode, sub: int, unsub: int) -> None:
    assert (mode.subscribe_code, mode.unsubscribe_code) == (sub, unsub)
    assert FeedMode.from_request_code(sub) == (mode, True)
    assert FeedMode.from_request_code(unsub) == (mode, False)


def test_mode_rank_orders_richness() -> None:
    assert FeedMode.TICKER.rank < FeedMode.QUOTE.rank < FeedMode.FULL.rank
    assert max([FeedMode.QUOTE, FeedMode.FULL, FeedMode.TICKER], key=lambda m: m.rank) is FeedMode.FULL


def test_depth_codes_are_not_feed_modes() -> None:
    with pytest.raises(ValueError, match="23"):
        FeedMode.from_request_code(23)


def test_instrument_key_text_round_trip() -> None:
    key = InstrumentKey(ExchangeSegment.NSE_EQ, 2885)
    assert str(key) == "NSE_EQ:2885"
    assert InstrumentKey.parse("NSE_EQ:2885") == key
    assert hash(InstrumentKey.parse(str(key))) == hash(key)


@pytest.mark.parametrize("text", ["NSE_EQ", "NSE_EQ:", "NSE_EQ:x1", "FOO:1", ":12"])
def test_instrument_key_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"SEGMENT:SECURITY_ID|unknown exchange segment"):
        InstrumentKey.parse(text)
