"""Hypothesis strategies for Dhan feed packets (shared by the protocol tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from tickgate.dhan.protocol import (
    DEPTH_LEVELS,
    DepthLevel,
    Disconnect,
    ExchangeSegment,
    Full,
    OpenInterest,
    PrevClose,
    Quote,
    Ticker,
)

u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
f32 = st.floats(width=32, allow_nan=False)  # float32-exact values: decode must give them back bit for bit
segments = st.sampled_from(list(ExchangeSegment))

tickers = st.builds(Ticker, segments, u32, f32, u32)
quotes = st.builds(Quote, segments, u32, f32, u16, u32, f32, u32, u32, u32, f32, f32, f32, f32)
open_interests = st.builds(OpenInterest, segments, u32, u32)
prev_closes = st.builds(PrevClose, segments, u32, f32, u32)
depth_levels = st.builds(DepthLevel, u32, u32, u16, u16, f32, f32)
fulls = st.builds(
    Full,
    segments,
    u32,
    f32,
    u16,
    u32,
    f32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    f32,
    f32,
    f32,
    f32,
    st.tuples(*[depth_levels] * DEPTH_LEVELS),
)
disconnects = st.builds(Disconnect, segments, u32, u16)
market_packets = st.one_of(tickers, quotes, open_interests, prev_closes, fulls)
any_packets = st.one_of(market_packets, disconnects)
