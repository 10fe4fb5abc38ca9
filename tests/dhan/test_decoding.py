"""Decoding: round trips for every packet type, stacked frames, cuts at every byte, garbage, LTT."""

from __future__ import annotations

import calendar
import struct
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickgate.dhan.batch import decode_batch
from tickgate.dhan.protocol import (
    FATAL_DISCONNECT_CODES,
    IST,
    PACKET_SIZES,
    CorruptFrame,
    DecodeStats,
    Disconnect,
    ExchangeSegment,
    InstrumentKey,
    Packet,
    Ticker,
    decode_frame,
    disconnect_reason,
    encode_disconnect,
    encode_packet,
    encode_raw,
    ltt_to_datetime,
)

from .strategies import any_packets, disconnects, fulls, open_interests, prev_closes, quotes, tickers

KEY = InstrumentKey(ExchangeSegment.NSE_FNO, 55796)


def _flatten(frames: list[bytes]) -> list[Packet]:
    return [p for frame in frames for p in decode_frame(frame)]


@pytest.mark.parametrize(
    ("strategy", "code"),
    [(tickers, 2), (quotes, 4), (open_interests, 5), (prev_closes, 6), (fulls, 8), (disconnects, 50)],
)
@given(data=st.data())
def test_round_trip_every_packet_type(
    strategy: st.SearchStrategy[Packet], code: int, data: st.DataObject
) -> None:
    packet = data.draw(strategy)
    raw = encode_packet(packet)  # type: ignore[arg-type]
    assert raw[0] == code
    assert struct.unpack_from("<H", raw, 1)[0] == len(raw) == PACKET_SIZES[code]
    stats = DecodeStats()
    assert decode_frame(raw, stats) == [packet]
    assert decode_batch([raw]).records() == [packet]
    assert stats.packets[code] == 1
    assert stats.corrupt_frames == 0


@given(st.lists(any_packets, min_size=1, max_size=12))
def test_stacked_frame_returns_every_packet_in_order(packets: list[Packet]) -> None:
    frame = b"".join(encode_packet(p) for p in packets)  # type: ignore[arg-type]
    assert decode_frame(frame) == packets
    assert decode_batch([frame]).records() == packets


@settings(max_examples=60)
@given(st.lists(any_packets, min_size=1, max_size=5))
def test_frame_cut_at_every_byte(packets: list[Packet]) -> None:
    encoded = [encode_packet(p) for p in packets]  # type: ignore[arg-type]
    frame = b"".join(encoded)
    boundaries = [0]
    for raw in encoded:
        boundaries.append(boundaries[-1] + len(raw))
    for cut in range(len(frame)):
        decoded = decode_frame(frame[:cut])
        whole = sum(1 for b in boundaries[1:] if b <= cut)
        assert decoded[:whole] == packets[:whole]
        if cut in boundaries and cut > 0:
            assert len(decoded) == whole  # a clean cut is a shorter, valid frame
        else:
            assert len(decoded) == whole + 1
            corrupt = decoded[-1]
            assert isinstance(corrupt, CorruptFrame)
            assert corrupt.offset == boundaries[whole]
        assert decode_batch([frame[:cut]]).records() == decoded


# >= 10,000 garbage cases in CI; the fuzz profile (make fuzz) raises it to 200,000 (~1M frames).
@settings(max_examples=max(10_000, settings().max_examples))
@given(st.lists(st.binary(max_size=400), max_size=10))
def test_garbage_never_raises_and_both_decoders_agree(frames: list[bytes]) -> None:
    stats = DecodeStats()
    per_frame = [p for f in frames for p in decode_frame(f, stats)]
    batch = decode_batch(frames)
    assert batch.records() == per_frame
    assert batch.stats == stats
    for frame in frames:
        corrupt = [p for p in decode_frame(frame) if isinstance(p, CorruptFrame)]
        assert len(corrupt) <= 1
        assert all(0 <= c.offset <= max(len(frame) - 1, 0) for c in corrupt)


@given(st.lists(st.one_of(any_packets, st.binary(min_size=0, max_size=200)), max_size=40))
def test_batch_equals_per_frame_on_mixed_valid_and_broken_frames(items: list[Packet | bytes]) -> None:
    frames = [i if isinstance(i, bytes) else encode_packet(i) for i in items]  # type: ignore[arg-type]
    assert decode_batch(frames).records() == _flatten(frames)


def test_skippable_codes_are_counted_and_skipped_by_length() -> None:
    ticker = Ticker(KEY.segment, KEY.security_id, 101.5, 1_700_000_000)
    frame = (
        encode_raw(0, (0, 0))
        + encode_raw(1, KEY, b"\x00" * 40)
        + encode_packet(ticker)
        + encode_raw(7, (0, 0), b"\x01\x00")
        + encode_raw(99, KEY, b"\xff" * 5)
    )
    stats = DecodeStats()
    assert decode_frame(frame, stats) == [ticker]
    assert dict(stats.skipped) == {0: 1, 1: 1, 7: 1, 99: 1}
    assert stats.packets[2] == 1
    assert stats.corrupt_frames == 0
    batch = decode_batch([frame])
    assert batch.records() == [ticker]
    assert batch.stats == stats


@pytest.mark.parametrize(
    ("frame", "offset", "reason"),
    [
        (b"", 0, "empty frame"),
        (b"\x02\x10\x00", 0, "shorter than a packet header"),
        (b"\x02\x04\x00\x01\x00\x00\x00\x00", 0, "length 4 < header size 8"),
        (b"\x02\x20\x00\x01\x00\x00\x00\x00" + b"\x00" * 8, 0, "length 32 > 16 bytes remaining"),
        (b"\x08\x10\x00\x01\x00\x00\x00\x00" + b"\x00" * 8, 0, "truncated"),
    ],
)
def test_corrupt_frames_are_reported_with_offset(frame: bytes, offset: int, reason: str) -> None:
    stats = DecodeStats()
    decoded = decode_frame(frame, stats)
    assert len(decoded) == 1
    corrupt = decoded[0]
    assert isinstance(corrupt, CorruptFrame)
    assert corrupt.offset == offset
    assert reason in corrupt.reason
    assert stats.corrupt_frames == 1


def test_corruption_after_good_packets_keeps_them() -> None:
    good = encode_packet(Ticker(KEY.segment, KEY.security_id, 10.0, 1))
    decoded = decode_frame(good + good + b"\x08\xa2\x00")
    assert decoded[:2] == [Ticker(KEY.segment, KEY.security_id, 10.0, 1)] * 2
    assert decoded[2] == CorruptFrame(32, "3 trailing bytes, shorter than a packet header")


def test_longer_packet_is_decoded_from_its_prefix() -> None:
    ticker = Ticker(KEY.segment, KEY.security_id, 10.0, 1)
    raw = encode_packet(ticker)
    extended = raw[:1] + struct.pack("<H", 20) + raw[3:] + b"\xaa" * 4
    assert decode_frame(extended + raw) == [ticker, ticker]
    assert decode_batch([extended, raw]).records() == [ticker, ticker]


def test_unknown_segment_packets_are_dropped_and_counted() -> None:
    raw = bytearray(encode_packet(Ticker(KEY.segment, KEY.security_id, 10.0, 1)))
    raw[3] = 6  # segment number 6 is unused by Dhan
    stats = DecodeStats()
    assert decode_frame(bytes(raw), stats) == []
    assert stats.unknown_segment == 1
    batch = decode_batch([bytes(raw), bytes(raw) * 2])
    assert batch.records() == []
    assert batch.stats.unknown_segment == 3


def test_disconnect_packet_carries_reason_and_meaning() -> None:
    (packet,) = decode_frame(encode_disconnect(805))
    assert isinstance(packet, Disconnect)
    assert packet.reason_code == 805
    assert packet.reason == "too many requests or connections"
    assert not packet.fatal
    assert decode_frame(encode_disconnect(807))[0].fatal  # type: ignore[union-attr]
    assert {804, 806, 807, 808, 809, 810} == FATAL_DISCONNECT_CODES
    assert disconnect_reason(808) == "authentication failed"
    assert disconnect_reason(809) == "access token invalid"
    assert disconnect_reason(123) == "unknown reason 123"


def test_batch_columns_expose_fields_in_stream_order() -> None:
    frames = [encode_packet(Ticker(KEY.segment, KEY.security_id, float(i), i)) for i in range(10)]
    batch = decode_batch(frames)
    tickers = batch.arrays[2]
    assert tickers["ltp"].tolist() == [float(i) for i in range(10)]
    assert tickers["security_id"].tolist() == [KEY.security_id] * 10
    assert batch.seqs[2].tolist() == sorted(batch.seqs[2].tolist())
    assert len(batch) == 10


# LTT: 2026-11-25 09:15:00 IST wall clock, encoded by the feed as if it were UTC.
LTT_0915_AS_UTC = calendar.timegm((2026, 11, 25, 9, 15, 0))


def test_ltt_ist_wall_clock_quirk() -> None:
    moment = ltt_to_datetime(LTT_0915_AS_UTC, ist_wall_clock=True)
    assert moment.tzinfo is not None
    assert moment == datetime(2026, 11, 25, 9, 15, tzinfo=IST)
    assert (moment.hour, moment.minute) == (9, 15)


def test_ltt_true_epoch_when_quirk_is_off() -> None:
    moment = ltt_to_datetime(LTT_0915_AS_UTC, ist_wall_clock=False)
    assert moment == datetime(2026, 11, 25, 14, 45, tzinfo=IST)


@given(st.lists(st.one_of(st.lists(fulls, min_size=1, max_size=6), st.lists(tickers, min_size=1))))
def test_uniform_stacks_take_the_vectorised_path_and_agree(stacks: list[list[Packet]]) -> None:
    """Frames stacking one packet type (how servers batch) decode like the walker would."""
    frames = [b"".join(encode_packet(p) for p in stack) for stack in stacks]  # type: ignore[arg-type]
    batch = decode_batch(frames)
    assert batch.records() == [p for stack in stacks for p in stack]
    assert batch.records() == _flatten(frames)
