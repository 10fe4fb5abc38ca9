"""Dhan live market feed v2 wire protocol, as pure functions over bytes (sans-I/O).

Nothing here touches a socket: requests are built as JSON text, responses are decoded from ``bytes``.
The network shell (:mod:`tickgate.dhan.client`) and the simulator (:mod:`tickgate.sim`) both
sit on top of this module, so the client and the fake server can never disagree about the format.
Facts come from ``shared/docs/dhan-feed.md`` (Dhan v2 docs, annexure, the official SDK 2.3.0).
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, IntEnum
from typing import Any, NamedTuple

import numpy as np

from tickgate.clock import IST


class ExchangeSegment(IntEnum):
    """Feed segment: the JSON requests use the name, binary response headers use the number."""

    IDX_I = 0
    NSE_EQ = 1
    NSE_FNO = 2
    NSE_CURRENCY = 3
    BSE_EQ = 4
    MCX_COMM = 5
    BSE_CURRENCY = 7
    BSE_FNO = 8

    @classmethod
    def from_name(cls, name: str) -> ExchangeSegment:
        """``"NSE_EQ"`` → ``ExchangeSegment.NSE_EQ``; raises ``ValueError`` naming the bad value."""
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown exchange segment {name!r}") from None


# Scrip master (exchange id, segment letter) → feed segment. The one place this mapping lives.
MASTER_SEGMENTS: dict[tuple[str, str], ExchangeSegment] = {
    ("NSE", "I"): ExchangeSegment.IDX_I,
    ("BSE", "I"): ExchangeSegment.IDX_I,
    ("NSE", "E"): ExchangeSegment.NSE_EQ,
    ("NSE", "D"): ExchangeSegment.NSE_FNO,
    ("NSE", "C"): ExchangeSegment.NSE_CURRENCY,
    ("BSE", "E"): ExchangeSegment.BSE_EQ,
    ("BSE", "D"): ExchangeSegment.BSE_FNO,
    ("BSE", "C"): ExchangeSegment.BSE_CURRENCY,
    ("MCX", "M"): ExchangeSegment.MCX_COMM,
}


def segment_for_master(exchange: str, segment: str) -> ExchangeSegment | None:
    """Feed segment of a scrip-master row, or ``None`` when Dhan's feed does not carry that pair."""
    return MASTER_SEGMENTS.get((exchange, segment))


class FeedMode(Enum):
    """Subscription mode. Value = subscribe request code; unsubscribe is always subscribe + 1."""

    TICKER = 15
    QUOTE = 17
    FULL = 21

    @property
    def subscribe_code(self) -> int:
        return self.value

    @property
    def unsubscribe_code(self) -> int:
        return self.value + 1

    @property
    def rank(self) -> int:
        """Richness order (ticker < quote < full): when owners disagree, the richest mode wins."""
        return _MODE_RANK[self]

    @classmethod
    def from_request_code(cls, code: int) -> tuple[FeedMode, bool]:
        """``(mode, is_subscribe)`` for a request code; ``ValueError`` for anything else."""
        for mode in cls:
            if code == mode.subscribe_code:
                return mode, True
            if code == mode.unsubscribe_code:
                return mode, False
        raise ValueError(f"not a feed subscription request code: {code}")


_MODE_RANK = {FeedMode.TICKER: 0, FeedMode.QUOTE: 1, FeedMode.FULL: 2}


class InstrumentKey(NamedTuple):
    """What Dhan identifies an instrument by on the feed: (segment, security id)."""

    segment: ExchangeSegment
    security_id: int

    def __str__(self) -> str:
        return f"{self.segment.name}:{self.security_id}"

    @classmethod
    def parse(cls, text: str) -> InstrumentKey:
        """Inverse of ``str()``: ``"NSE_EQ:2885"``. ``ValueError`` with the reason on bad input."""
        seg, sep, sid = text.partition(":")
        if not sep or not sid.isdigit():
            raise ValueError(f"instrument key must look like SEGMENT:SECURITY_ID, got {text!r}")
        return cls(ExchangeSegment.from_name(seg), int(sid))


# --------------------------------------------------------------------------------------------------------
# Requests (client → server): JSON text frames.
# --------------------------------------------------------------------------------------------------------

DISCONNECT_REQUEST_CODE = 12


def _per_message(per_message: int | None) -> int:
    if per_message is None:
        from tickgate.config import get_settings  # lazy: pydantic costs ~20 MB, unused by most importers

        per_message = get_settings().limits.instruments_per_message
    if per_message < 1:
        raise ValueError(f"instruments per message must be >= 1, got {per_message}")
    return per_message


def _request_messages(code: int, keys: Iterable[InstrumentKey], per_message: int | None) -> Iterator[str]:
    size = _per_message(per_message)
    unique = list(dict.fromkeys(keys))  # first occurrence wins, order kept
    for start in range(0, len(unique), size):
        chunk = unique[start : start + size]
        yield json.dumps(
            {
                "RequestCode": code,
                "InstrumentCount": len(chunk),
                "InstrumentList": [
                    {"ExchangeSegment": key.segment.name, "SecurityId": str(key.security_id)} for key in chunk
                ],
            },
            separators=(",", ":"),
        )


def subscribe_messages(
    mode: FeedMode, keys: Iterable[InstrumentKey], *, per_message: int | None = None
) -> Iterator[str]:
    """JSON subscribe frames for ``keys``: at most ``per_message`` (settings: 100) each, duplicates once."""
    return _request_messages(mode.subscribe_code, keys, per_message)


def unsubscribe_messages(
    mode: FeedMode, keys: Iterable[InstrumentKey], *, per_message: int | None = None
) -> Iterator[str]:
    """JSON unsubscribe frames (request code = subscribe + 1), same batching rules as subscribe."""
    return _request_messages(mode.unsubscribe_code, keys, per_message)


def disconnect_message() -> str:
    """The polite goodbye: Dhan drops the socket's subscriptions and closes it."""
    return json.dumps({"RequestCode": DISCONNECT_REQUEST_CODE})


class SubscriptionRequest(NamedTuple):
    """A parsed subscribe/unsubscribe request (what the server side sees)."""

    mode: FeedMode
    subscribe: bool
    keys: tuple[InstrumentKey, ...]


class DisconnectRequest(NamedTuple):
    """A parsed ``{"RequestCode": 12}``."""


class RequestError(ValueError):
    """A client request the server cannot understand; the message says why."""


def parse_request(text: str | bytes) -> SubscriptionRequest | DisconnectRequest:
    """Server-side parser for a client's JSON request. Raises :class:`RequestError` naming the problem.

    ``InstrumentCount`` is *not* trusted: the list is what counts (a server must police the real size).
    """
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"request is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("RequestCode"), int):
        raise RequestError("request must be a JSON object with an integer RequestCode")
    code = message["RequestCode"]
    if code == DISCONNECT_REQUEST_CODE:
        return DisconnectRequest()
    try:
        mode, is_subscribe = FeedMode.from_request_code(code)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    items = message.get("InstrumentList")
    if not isinstance(items, list):
        raise RequestError("InstrumentList must be a list")
    keys = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"InstrumentList[{index}] must be an object")
        segment, security_id = item.get("ExchangeSegment"), item.get("SecurityId")
        if not isinstance(segment, str) or not isinstance(security_id, str) or not security_id.isdigit():
            raise RequestError(
                f"InstrumentList[{index}] needs string ExchangeSegment and numeric string SecurityId"
            )
        try:
            keys.append(InstrumentKey(ExchangeSegment.from_name(segment), int(security_id)))
        except ValueError as exc:
            raise RequestError(f"InstrumentList[{index}]: {exc}") from None
    return SubscriptionRequest(mode, is_subscribe, tuple(keys))


# --------------------------------------------------------------------------------------------------------
# Responses (server → client): little-endian binary packets, each starting with an 8-byte header
# <BHBI: response code, packet length (whole packet incl. header), segment number, security id.
# --------------------------------------------------------------------------------------------------------


class ResponseCode(IntEnum):
    INDEX = 1
    TICKER = 2
    QUOTE = 4
    OI = 5
    PREV_CLOSE = 6
    MARKET_STATUS = 7
    FULL = 8
    DISCONNECT = 50


HEADER_SIZE = 8
DEPTH_LEVELS = 5

# Annexure meanings of the Disconnect packet's reason code.
DISCONNECT_REASONS: dict[int, str] = {
    800: "internal server error",
    804: "requested number of instruments exceeds limit",
    805: "too many requests or connections",
    806: "data APIs not subscribed",
    807: "access token expired",
    808: "authentication failed",
    809: "access token invalid",
    810: "client id invalid",
    811: "invalid expiry date",
    812: "invalid date format",
    813: "invalid security id",
    814: "invalid request",
}
# Reasons that reconnecting cannot cure: stop retrying the account and alert a human.
FATAL_DISCONNECT_CODES = frozenset({804, 806, 807, 808, 809, 810})


def disconnect_reason(code: int) -> str:
    """Human meaning of a disconnect reason code (annexure), or ``"unknown reason <code>"``."""
    return DISCONNECT_REASONS.get(code, f"unknown reason {code}")


class DepthLevel(NamedTuple):
    bid_qty: int
    ask_qty: int
    bid_orders: int
    ask_orders: int
    bid_price: float
    ask_price: float


class Ticker(NamedTuple):
    segment: ExchangeSegment
    security_id: int
    ltp: float
    ltt: int


class Quote(NamedTuple):
    segment: ExchangeSegment
    security_id: int
    ltp: float
    ltq: int
    ltt: int
    atp: float
    volume: int
    total_sell_qty: int
    total_buy_qty: int
    open: float
    close: float
    high: float
    low: float


class OpenInterest(NamedTuple):
    segment: ExchangeSegment
    security_id: int
    oi: int


class PrevClose(NamedTuple):
    segment: ExchangeSegment
    security_id: int
    prev_close: float
    prev_oi: int


class Full(NamedTuple):
    segment: ExchangeSegment
    security_id: int
    ltp: float
    ltq: int
    ltt: int
    atp: float
    volume: int
    total_sell_qty: int
    total_buy_qty: int
    oi: int
    oi_day_high: int
    oi_day_low: int
    open: float
    close: float
    high: float
    low: float
    depth: tuple[DepthLevel, ...]


class Disconnect(NamedTuple):
    segment: ExchangeSegment
    security_id: int
    reason_code: int

    @property
    def reason(self) -> str:
        return disconnect_reason(self.reason_code)

    @property
    def fatal(self) -> bool:
        return self.reason_code in FATAL_DISCONNECT_CODES


class CorruptFrame(NamedTuple):
    """The undecodable rest of a frame, from ``offset`` on. Never raised: returned and counted."""

    offset: int
    reason: str


MarketPacket = Ticker | Quote | OpenInterest | PrevClose | Full
Packet = MarketPacket | Disconnect | CorruptFrame

# numpy structured dtypes that *are* the wire layout (packed, little-endian). They serve the batch decoder
# (np.frombuffer over joined packets) and bulk encoders (array.tobytes()) alike.
_HEADER_FIELDS: list[tuple[str, str]] = [
    ("code", "u1"),
    ("length", "<u2"),
    ("segment", "u1"),
    ("security_id", "<u4"),
]
DEPTH_DTYPE = np.dtype(
    [
        ("bid_qty", "<u4"),
        ("ask_qty", "<u4"),
        ("bid_orders", "<u2"),
        ("ask_orders", "<u2"),
        ("bid_price", "<f4"),
        ("ask_price", "<f4"),
    ]
)
# Quote and Full share the trade fields and the OHLC block; Full puts open interest between them.
_TRADE_FIELDS: list[tuple[str, str]] = [
    ("ltp", "<f4"),
    ("ltq", "<u2"),
    ("ltt", "<u4"),
    ("atp", "<f4"),
    ("volume", "<u4"),
    ("total_sell_qty", "<u4"),
    ("total_buy_qty", "<u4"),
]
_OHLC_FIELDS: list[tuple[str, str]] = [("open", "<f4"), ("close", "<f4"), ("high", "<f4"), ("low", "<f4")]
TICKER_DTYPE = np.dtype([*_HEADER_FIELDS, ("ltp", "<f4"), ("ltt", "<u4")])
QUOTE_DTYPE = np.dtype([*_HEADER_FIELDS, *_TRADE_FIELDS, *_OHLC_FIELDS])
OI_DTYPE = np.dtype([*_HEADER_FIELDS, ("oi", "<u4")])
PREV_CLOSE_DTYPE = np.dtype([*_HEADER_FIELDS, ("prev_close", "<f4"), ("prev_oi", "<u4")])
FULL_DTYPE = np.dtype(
    [
        *_HEADER_FIELDS,
        *_TRADE_FIELDS,
        ("oi", "<u4"),
        ("oi_day_high", "<u4"),
        ("oi_day_low", "<u4"),
        *_OHLC_FIELDS,
        ("depth", DEPTH_DTYPE, (DEPTH_LEVELS,)),
    ]
)
DISCONNECT_DTYPE = np.dtype([*_HEADER_FIELDS, ("reason_code", "<u2")])

# Per market packet type: its code, record class, wire dtype and precompiled struct (same layout).
_DEPTH_FORMAT = "IIHHff"
_STRUCTS: dict[int, struct.Struct] = {
    ResponseCode.TICKER: struct.Struct("<BHBIfI"),
    ResponseCode.QUOTE: struct.Struct("<BHBIfHIfIIIffff"),
    ResponseCode.OI: struct.Struct("<BHBII"),
    ResponseCode.PREV_CLOSE: struct.Struct("<BHBIfI"),
    ResponseCode.FULL: struct.Struct("<BHBIfHIfIIIIIIffff" + _DEPTH_FORMAT * DEPTH_LEVELS),
    ResponseCode.DISCONNECT: struct.Struct("<BHBIH"),
}
DTYPES: dict[int, np.dtype[Any]] = {
    ResponseCode.TICKER: TICKER_DTYPE,
    ResponseCode.QUOTE: QUOTE_DTYPE,
    ResponseCode.OI: OI_DTYPE,
    ResponseCode.PREV_CLOSE: PREV_CLOSE_DTYPE,
    ResponseCode.FULL: FULL_DTYPE,
    ResponseCode.DISCONNECT: DISCONNECT_DTYPE,
}
PACKET_SIZES: dict[int, int] = {code: s.size for code, s in _STRUCTS.items()}
for _code_number, _dtype in DTYPES.items():
    assert _dtype.itemsize == PACKET_SIZES[_code_number], (
        _code_number,
        _dtype.itemsize,
    )  # layout self-check at import
MARKET_CODES: tuple[int, ...] = tuple(
    int(c)
    for c in (
        ResponseCode.TICKER,
        ResponseCode.QUOTE,
        ResponseCode.OI,
        ResponseCode.PREV_CLOSE,
        ResponseCode.FULL,
    )
)
# Segment number → ExchangeSegment (None where the number is not a feed segment): a list index, because an
# IntEnum call costs more than decoding the rest of a ticker packet.
_SEGMENT_BY_NUMBER: tuple[ExchangeSegment | None, ...] = tuple(
    ExchangeSegment(n) if n in ExchangeSegment._value2member_map_ else None for n in range(256)
)


@dataclass
class DecodeStats:
    """Counters a caller may pass to the decoders: frames, packets by code, skips and corrupt frames."""

    frames: int = 0
    packets: Counter[int] = field(default_factory=Counter)
    skipped: Counter[int] = field(default_factory=Counter)  # codes 0/1/7/unknown, skipped by length
    unknown_segment: int = 0  # well-formed packets naming no feed segment: dropped
    corrupt_frames: int = 0

    def merge(self, other: DecodeStats) -> None:
        self.frames += other.frames
        self.packets.update(other.packets)
        self.skipped.update(other.skipped)
        self.unknown_segment += other.unknown_segment
        self.corrupt_frames += other.corrupt_frames


def _make_decoder(code: int) -> Callable[[bytes | memoryview, int], Packet | None]:
    """A specialised decoder for one packet type: the per-frame hot path.

    Records are built with ``tuple.__new__`` (what ``NamedTuple._make`` does, minus a Python frame) and the
    segment comes from a list index, not an enum call: together they halve the per-packet cost.
    """
    unpack = _STRUCTS[code].unpack_from
    new = tuple.__new__
    segments = _SEGMENT_BY_NUMBER
    if code == ResponseCode.FULL:

        def decode_full(data: bytes | memoryview, offset: int) -> Packet | None:
            v = unpack(data, offset)
            segment = segments[v[2]]
            if segment is None:
                return None
            depth = (
                new(DepthLevel, v[18:24]),
                new(DepthLevel, v[24:30]),
                new(DepthLevel, v[30:36]),
                new(DepthLevel, v[36:42]),
                new(DepthLevel, v[42:48]),
            )
            return new(Full, (segment, *v[3:18], depth))

        return decode_full
    record = _RECORD_BY_CODE[code]

    def decode(data: bytes | memoryview, offset: int) -> Packet | None:
        v = unpack(data, offset)
        segment = segments[v[2]]
        if segment is None:
            return None
        return new(record, (segment, *v[3:]))

    return decode


_RECORD_BY_CODE: dict[int, type[Packet]] = {
    ResponseCode.TICKER: Ticker,
    ResponseCode.QUOTE: Quote,
    ResponseCode.OI: OpenInterest,
    ResponseCode.PREV_CLOSE: PrevClose,
    ResponseCode.DISCONNECT: Disconnect,
}
_DECODERS = {code: _make_decoder(code) for code in _STRUCTS}


def _unpack_packet(code: int, data: bytes | memoryview, offset: int) -> Packet | None:
    """Decode one well-framed packet of a known code at ``offset``; ``None`` if its segment is unknown."""
    return _DECODERS[code](data, offset)


def iter_packet_spans(
    data: bytes | memoryview, stats: DecodeStats | None = None
) -> Iterator[tuple[int, int, int] | CorruptFrame]:
    """Walk a frame by its length fields: yields ``(code, offset, length)`` for each decodable packet and,
    at most once and last, a :class:`CorruptFrame`. Skippable codes are counted, not yielded."""
    end = len(data)
    if end == 0:
        yield CorruptFrame(0, "empty frame")
        return
    offset = 0
    while offset < end:
        remaining = end - offset
        if remaining < HEADER_SIZE:
            yield CorruptFrame(offset, f"{remaining} trailing bytes, shorter than a packet header")
            return
        code = data[offset]
        length = data[offset + 1] | (data[offset + 2] << 8)
        if length < HEADER_SIZE:
            yield CorruptFrame(offset, f"packet length {length} < header size {HEADER_SIZE}")
            return
        if length > remaining:
            yield CorruptFrame(offset, f"packet length {length} > {remaining} bytes remaining")
            return
        size = PACKET_SIZES.get(code)
        if size is None:
            if stats is not None:
                stats.skipped[code] += 1
        elif length < size:
            yield CorruptFrame(offset, f"code {code} packet of length {length} is truncated (needs {size})")
            return
        else:
            yield code, offset, length
        offset += length


_FRAME_SIZE = [PACKET_SIZES.get(code, -1) for code in range(256)]


def decode_frame(data: bytes | memoryview, stats: DecodeStats | None = None) -> list[Packet]:
    """Every packet in one WebSocket binary frame, in order; never raises on bad bytes.

    Known packets become typed records. Codes 0 (heartbeat), 1 (index), 7 (market status) and unknown codes
    are skipped by their length and counted in ``stats``. A length < 8, a length beyond the frame, or a known
    packet shorter than its layout ends decoding with a trailing :class:`CorruptFrame` naming the offset.
    A packet longer than its layout is decoded from its prefix (room for fields Dhan may append).
    """
    if stats is not None:
        stats.frames += 1
    n = len(data)
    # Fast path: the live feed sends one packet per frame.
    if n >= HEADER_SIZE:
        code = data[0]
        if _FRAME_SIZE[code] == n and (data[1] | (data[2] << 8)) == n:
            packet = _DECODERS[code](data, 0)
            if stats is not None:
                if packet is None:
                    stats.unknown_segment += 1
                else:
                    stats.packets[code] += 1
            return [] if packet is None else [packet]
    packets: list[Packet] = []
    for span in iter_packet_spans(data, stats):
        if isinstance(span, CorruptFrame):
            packets.append(span)
            if stats is not None:
                stats.corrupt_frames += 1
            break
        code, offset, _length = span
        packet = _unpack_packet(code, data, offset)
        if packet is None:
            if stats is not None:
                stats.unknown_segment += 1
            continue
        if stats is not None:
            stats.packets[code] += 1
        packets.append(packet)
    return packets


# --------------------------------------------------------------------------------------------------------
# Server-side encoders (the simulator and the tests build real bytes with these).
# --------------------------------------------------------------------------------------------------------


def encode_packet(packet: MarketPacket | Disconnect) -> bytes:
    """Bytes of one packet exactly as Dhan sends it (header length = packet size)."""
    code: int
    if isinstance(packet, Full):
        code = ResponseCode.FULL
        flat_depth = [v for level in packet.depth for v in level]
        if len(packet.depth) != DEPTH_LEVELS:
            raise ValueError(f"a full packet carries {DEPTH_LEVELS} depth levels, got {len(packet.depth)}")
        return _STRUCTS[code].pack(
            code, PACKET_SIZES[code], packet.segment, packet.security_id, *packet[2:16], *flat_depth
        )
    code = _CODE_BY_RECORD[type(packet)]
    return _STRUCTS[code].pack(code, PACKET_SIZES[code], packet.segment, packet.security_id, *packet[2:])


_CODE_BY_RECORD: dict[type, int] = {
    Ticker: ResponseCode.TICKER,
    Quote: ResponseCode.QUOTE,
    OpenInterest: ResponseCode.OI,
    PrevClose: ResponseCode.PREV_CLOSE,
    Disconnect: ResponseCode.DISCONNECT,
}


def encode_disconnect(reason_code: int, key: InstrumentKey | None = None) -> bytes:
    """A Disconnect(50) packet; Dhan's header carries no meaningful instrument, zeros by default."""
    segment, security_id = key if key is not None else (0, 0)
    return encode_packet(Disconnect(segment, security_id, reason_code))  # type: ignore[arg-type]


def encode_raw(code: int, key: InstrumentKey | tuple[int, int], body: bytes = b"") -> bytes:
    """An arbitrary packet (e.g. heartbeat code 0, market status 7) with a correct header."""
    return struct.pack("<BHBI", code, HEADER_SIZE + len(body), int(key[0]), key[1]) + body


def empty_packets(code: int, count: int) -> np.ndarray[Any, np.dtype[Any]]:
    """A zeroed structured array of ``count`` packets with code and length set: fill fields, then
    ``.tobytes()`` for stacked frames or slice per packet. The bulk encoder for the simulator's hot path."""
    array = np.zeros(count, dtype=DTYPES[code])
    array["code"] = code
    array["length"] = PACKET_SIZES[code]
    return array


# --------------------------------------------------------------------------------------------------------
# Time.
# --------------------------------------------------------------------------------------------------------

IST_OFFSET_SECONDS = 19_800


def ltt_to_datetime(ltt: int, *, ist_wall_clock: bool = True) -> datetime:
    """Turn a raw LTT (last trade time) into an aware datetime in IST.

    Dhan documents LTT as epoch seconds, but the feed is widely reported to encode the *IST wall-clock*
    time as if it were UTC (09:15 IST arrives as 09:15Z), so the true instant is ``ltt - 19800``. With
    ``ist_wall_clock`` (settings: ``ltt_is_ist_wall_clock``, default on) that correction is applied; off, the
    value is taken as a true epoch. Decoders keep LTT raw; only this function interprets it.
    """
    epoch = ltt - IST_OFFSET_SECONDS if ist_wall_clock else ltt
    return datetime.fromtimestamp(epoch, tz=IST)
