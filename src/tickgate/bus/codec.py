"""What goes between the gateway and its API replicas, as bytes (issue 20): pure functions, no I/O.

Why Dhan's own frames for ticks: they are already the most compact binary form of a tick (a Quote is 50
bytes, a Full 162), the replica's store folds them with the very decoder and store code the gateway runs,
and so a replica's quotes are the gateway's, byte for byte, with no second format to keep in step. One
message per decoded batch: ``TGT1``, the delta's sequence number, then each frame with its length.

Quotes that do not come from the feed (the REST backfill, the saved last close) go as ``TGF1``: the
sequence number, the source and the quotes (msgpack tuples). A snapshot (``TGS1``) is the whole store in
chunks under the broker's message size: the sequence number it was taken at (every delta up to it is in
it), the chunk's place, the rows' packed keys and every column's bytes, in the store's column layout
(checked by a digest: a replica of another version refuses it instead of misreading it).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.feed.quotes import Array, QuoteStore, RestQuote

TICKS, FILL, SNAPSHOT = b"TGT1", b"TGF1", b"TGS1"
_HEAD = struct.Struct("<4sQ")  # kind, sequence
_FRAME = struct.Struct("<I")
_SNAP = struct.Struct("<4sQIII16s")  # kind, taken at sequence, chunk, chunks, rows, layout digest
_REST_FIELDS = ("ltp", "prev_close", "open", "high", "low", "atp", "volume", "oi", "ltq", "prev_oi")


class BusFormatError(ValueError):
    """A message this replica cannot read (corrupt, or from a gateway of another store layout)."""


@dataclass(frozen=True, slots=True)
class Ticks:
    seq: int
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Fill:
    seq: int
    source: int
    quotes: list[RestQuote]


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    seq: int  # every delta up to this sequence number is in the snapshot
    chunk: int
    chunks: int
    packed: Array
    columns: dict[str, Array]


def encode_ticks(seq: int, frames: Sequence[bytes]) -> bytes:
    parts = [_HEAD.pack(TICKS, seq)]
    for frame in frames:
        parts.append(_FRAME.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def encode_fill(seq: int, source: int, quotes: Sequence[RestQuote]) -> bytes:
    rows = [
        (int(q.key.segment), q.key.security_id, *(getattr(q, name) for name in _REST_FIELDS)) for q in quotes
    ]
    body: bytes = msgpack.packb([source, rows])
    return _HEAD.pack(FILL, seq) + body


def _cells(shape: tuple[int, ...]) -> int:
    """Values per row of a column of per-row ``shape`` (1 for a scalar column)."""
    return int(np.prod(shape, dtype=np.int64))


def layout_digest(store: QuoteStore) -> bytes:
    return hashlib.blake2b(repr(store.layout()).encode(), digest_size=16).digest()


def encode_snapshot(seq: int, store: QuoteStore, max_bytes: int = 900_000) -> list[bytes]:
    """The whole store at ``seq`` in chunks of at most about ``max_bytes``."""
    layout = store.layout()
    digest = layout_digest(store)
    row_bytes = 8 + sum(
        np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64)) for _, dtype, shape in layout
    )
    per_chunk = max(1, (max_bytes - _SNAP.size) // row_bytes)
    total = len(store)
    starts = list(range(0, total, per_chunk)) or [0]
    out = []
    for i, start in enumerate(starts):
        packed, columns = store.export_rows(start, start + per_chunk)
        body = [packed.astype("<i8").tobytes()]
        body += [np.ascontiguousarray(columns[name]).tobytes() for name, _, _ in layout]
        out.append(_SNAP.pack(SNAPSHOT, seq, i, len(starts), len(packed), digest) + b"".join(body))
    return out


def decode(message: bytes, store: QuoteStore) -> Ticks | Fill | SnapshotChunk:
    """Read one message (``store``: whose layout a snapshot must match)."""
    kind = message[:4]
    try:
        if kind == TICKS:
            return _ticks(message)
        if kind == FILL:
            _, seq = _HEAD.unpack_from(message)
            source, rows = msgpack.unpackb(message[_HEAD.size :])
            return Fill(seq, int(source), [_rest(row) for row in rows])
        if kind == SNAPSHOT:
            return _snapshot(message, store)
    except (struct.error, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BusFormatError(f"unreadable {kind!r} message: {exc}") from None
    raise BusFormatError(f"unknown message kind {kind!r}")


def _ticks(message: bytes) -> Ticks:
    _, seq = _HEAD.unpack_from(message)
    frames: list[bytes] = []
    pos = _HEAD.size
    end = len(message)
    while pos < end:
        (size,) = _FRAME.unpack_from(message, pos)
        pos += _FRAME.size
        if pos + size > end:
            raise ValueError("a frame runs past the message")
        frames.append(message[pos : pos + size])
        pos += size
    return Ticks(seq, frames)


def _rest(row: Sequence[Any]) -> RestQuote:
    key = InstrumentKey(ExchangeSegment(row[0]), int(row[1]))
    return RestQuote(key, **dict(zip(_REST_FIELDS, row[2:], strict=True)))


def _snapshot(message: bytes, store: QuoteStore) -> SnapshotChunk:
    _, seq, chunk, chunks, rows, digest = _SNAP.unpack_from(message)
    if digest != layout_digest(store):
        raise ValueError("the gateway's quote store has another layout (another version of tickgate)")
    view = memoryview(message)[_SNAP.size :]
    packed = np.frombuffer(view[: rows * 8], dtype="<i8")
    pos = rows * 8
    columns: dict[str, Array] = {}
    for name, dtype, shape in store.layout():
        count = rows * _cells(shape)
        size = count * np.dtype(dtype).itemsize
        columns[name] = np.frombuffer(view[pos : pos + size], dtype=dtype).reshape((rows, *shape))
        pos += size
    if pos != len(view):
        raise ValueError("a snapshot chunk of the wrong length")
    return SnapshotChunk(seq, chunk, chunks, packed, columns)


def chunks_complete(chunks: Sequence[SnapshotChunk]) -> bool:
    return bool(chunks) and len({c.chunk for c in chunks}) == chunks[0].chunks
