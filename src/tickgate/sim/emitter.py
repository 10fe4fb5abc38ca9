"""Market data out: which packets each socket is owed, built in numpy batches and written as ready frames.

Why batches: the simulator must outrun any client pointed at it (tens of thousands of packets a second on
one core) and still answer pings, so packets are drawn, priced and framed per timer tick in vectorised
numpy, and each socket gets one ``transport.write`` per tick.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from websockets.frames import Frame, Opcode

from tickgate.clock import Clock
from tickgate.dhan.protocol import FeedMode, ResponseCode
from tickgate.sim.pricing import Array, PriceModel
from tickgate.sim.records import SimulatorStats

if TYPE_CHECKING:
    from tickgate.sim.connection import SimSocket

CorruptMode = Literal["mixed", "garble", "truncate"]


@functools.lru_cache(maxsize=512)
def ws_header(length: int) -> bytes:
    """Header of an unmasked, final binary WebSocket frame of ``length`` payload bytes, as websockets
    itself serialises it: data frames are prebuilt in bulk, but the framing stays websockets'."""
    frame = Frame(Opcode.BINARY, bytes(length)).serialize(mask=False, extensions=[])
    return frame[: len(frame) - length]


def ws_frame(payload: bytes) -> bytes:
    return ws_header(len(payload)) + payload


_TICKER, _QUOTE, _FULL, _OI = (
    int(c) for c in (ResponseCode.TICKER, ResponseCode.QUOTE, ResponseCode.FULL, ResponseCode.OI)
)
_STREAM_CODES = (_TICKER, _QUOTE, _FULL, _OI)
_MODE_CODE = {FeedMode.TICKER: _TICKER, FeedMode.QUOTE: _QUOTE, FeedMode.FULL: _FULL}


class _SlotSet:
    """Price-model slots with O(1) add and remove and a contiguous array to draw from."""

    def __init__(self) -> None:
        self._array = np.empty(64, dtype=np.int64)
        self._at: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._at)

    def add(self, slot: int) -> None:
        if slot in self._at:
            return
        n = len(self._at)
        if n == len(self._array):
            self._array = np.concatenate([self._array, np.empty(n, dtype=np.int64)])
        self._array[n] = slot
        self._at[slot] = n

    def discard(self, slot: int) -> None:
        i = self._at.pop(slot, None)
        if i is None:
            return
        last = len(self._at)
        if i != last:  # the last one fills the hole
            moved = int(self._array[last])
            self._array[i] = moved
            self._at[moved] = i

    def view(self) -> Array:
        return self._array[: len(self._at)]


# ----------------------------------------------------------------------------------------------- simulator


class StreamSlots:
    """What one socket streams, by packet kind, kept in step with its subscriptions one key at a time
    (:meth:`subscribed`, :meth:`unsubscribed`): rebuilding it from all 5,000 subscriptions after every
    message cost the simulator most of a core while a client added chains by the hundred."""

    def __init__(self) -> None:
        self._kinds = {code: _SlotSet() for code in _STREAM_CODES}

    def subscribed(
        self, changes: Sequence[tuple[int, FeedMode | None]], mode: FeedMode, model: PriceModel
    ) -> None:
        """``(slot, previous mode or None)`` pairs now subscribed in ``mode``."""
        for slot, old in changes:
            if old is not None:
                self._drop(slot, old)
            self._kinds[_MODE_CODE[mode]].add(slot)
        if mode is not FeedMode.TICKER:
            slots = np.fromiter((slot for slot, _ in changes), dtype=np.int64)
            oi = self._kinds[_OI]
            for slot in slots[model.is_derivative(slots)].tolist() if len(slots) else ():
                oi.add(slot)

    def unsubscribed(self, changes: Sequence[tuple[int, FeedMode]]) -> None:
        for slot, old in changes:
            self._drop(slot, old)

    def _drop(self, slot: int, mode: FeedMode) -> None:
        self._kinds[_MODE_CODE[mode]].discard(slot)
        self._kinds[_OI].discard(slot)

    def sample(self, count: int, rng: np.random.Generator, oi_share: float) -> list[tuple[int, Array]]:
        """``count`` random (code, slots) draws over this socket's subscriptions, each instrument in its
        subscribed mode; quote/full derivatives also get OI packets (``oi_share`` of their draws)."""
        sizes = {code: len(kind) for code, kind in self._kinds.items()}
        share = oi_share if sizes[_OI] else 0.0
        weights = {
            _TICKER: float(sizes[_TICKER]),
            _QUOTE: sizes[_QUOTE] * (1 - share),
            _FULL: sizes[_FULL] * (1 - share),
            _OI: (sizes[_QUOTE] + sizes[_FULL]) * share,
        }
        kept = [code for code, w in weights.items() if w > 0 and sizes[code]]
        if not kept:
            return []
        w = np.array([weights[code] for code in kept], dtype=np.float64)
        counts = rng.multinomial(count, w / w.sum())
        out = []
        for code, n in zip(kept, counts.tolist(), strict=True):
            if n:
                slots = self._kinds[code].view()
                out.append((code, slots[rng.integers(0, len(slots), size=n)]))
        return out


class Emitter:
    """The stream: ``rate`` market packets a second across all sockets, spread over their subscriptions,
    ``stack`` packets a frame; ``corrupt_pct`` % of frames damaged on request; a socket with more than
    ``max_buffer`` bytes unread skips its share (counted as withheld)."""

    def __init__(
        self,
        model: PriceModel,
        rng: np.random.Generator,
        stats: SimulatorStats,
        clock: Clock,
        *,
        rate: float,
        stack: int,
        oi_share: float,
        max_buffer: int,
    ) -> None:
        self.model = model
        self.rng = rng
        self.stats = stats
        self.clock = clock
        self.rate = 0.0
        self.stack = 1
        self.set_rate(rate, stack)
        self.oi_share = oi_share
        self.max_buffer = max_buffer
        self.corrupt_pct = 0.0
        self.corrupt_mode: CorruptMode = "mixed"
        self.liquidity_width = 0.0  # 0: every draw trades; else options far from the money trade rarely
        self.emitted = 0  # market packets sent (PrevClose excluded)
        self._carry = 0.0

    def set_rate(self, rate: float, stack: int | None = None) -> None:
        """Market packets per second across all sockets (0 pauses streaming) and packets per frame."""
        if not (rate >= 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        if stack is not None:
            if not 1 <= stack <= 400:
                raise ValueError(f"stack must be within 1..400 packets per frame, got {stack}")
            self.stack = int(stack)
        self.rate = float(rate)

    def set_corruption(self, pct: float, mode: CorruptMode = "mixed") -> None:
        """Corrupt ``pct`` % of market-data frames from now on: ``garble`` a packet length (< 8 or past the
        frame end), ``truncate`` the frame mid-packet, or ``mixed`` (either, 50/50). 0 turns it off."""
        if not 0 <= pct <= 100:
            raise ValueError(f"corrupt percentage must be within 0..100, got {pct}")
        if mode not in ("mixed", "garble", "truncate"):
            raise ValueError(f"corrupt mode must be mixed, garble or truncate, got {mode!r}")
        self.corrupt_pct = float(pct)
        self.corrupt_mode = mode

    def emit(self, sockets: Iterable[SimSocket], elapsed: float, open_segments: Array | None = None) -> None:
        """One tick: step the market by ``elapsed`` seconds and send what the rate owes ``sockets``.

        ``open_segments`` (a bool per segment code; None: all): instruments of a closed segment send nothing
        (Dhan sends a packet only when something changes), nor do thin strikes' draws that do not trade."""
        self.model.step(elapsed)
        streams = [s for s in sockets if s.streaming]
        if not streams or self.rate <= 0:
            self._carry = 0.0
            return
        self._carry += self.rate * elapsed
        total = int(self._carry)
        self._carry -= total
        if total == 0:
            return
        weights = np.array([len(s.record.subscriptions) for s in streams], dtype=np.float64)
        counts = self.rng.multinomial(total, weights / weights.sum()).tolist()
        by_code: dict[int, list[tuple[SimSocket, Array]]] = {}
        for sock, count in zip(streams, counts, strict=True):
            if count == 0:
                continue
            record = sock.record
            if record.stalled or not sock.writable:
                record.packets_withheld += count
                self.stats.packets_withheld += count
                continue
            if sock.buffered() > self.max_buffer:
                record.backpressure_skips += 1
                record.packets_withheld += count
                self.stats.backpressure_skips += 1
                self.stats.packets_withheld += count
                continue
            for code, drawn in sock.stream.sample(count, self.rng, self.oi_share):
                slots = self._trading(drawn, open_segments)
                if len(slots):
                    by_code.setdefault(code, []).append((sock, slots))
        now = self.clock.timestamp()
        for code, parts in by_code.items():
            packets = self.model.packets(code, np.concatenate([slots for _, slots in parts]), now)
            start = 0
            for sock, slots in parts:
                self.send_packets(sock, packets[start : start + len(slots)])
                start += len(slots)

    def _trading(self, slots: Array, open_segments: Array | None) -> Array:
        """The draws that trade now: in an open segment, and (with a liquidity profile) liquid enough."""
        keep = None if open_segments is None else self.model.in_segments(slots, open_segments)
        if self.liquidity_width > 0:
            liquid = self.model.liquid(slots, self.liquidity_width, self.rng)
            keep = liquid if keep is None else keep & liquid
        if keep is None:
            return slots
        self.stats.packets_quiet += int(len(slots) - keep.sum())
        result: Array = slots[keep]
        return result

    def send_packets(self, sock: SimSocket, packets: Array) -> None:
        """Frame ``packets`` (``stack`` per frame), corrupt some if asked, write them in one go."""
        n = len(packets)
        if n == 0 or not sock.writable or sock.record.stalled:
            return
        size = packets.dtype.itemsize
        raw = np.ascontiguousarray(packets).view(np.uint8).reshape(n, size)
        full, rest = divmod(n, self.stack)
        chunks: list[bytes] = []
        frames = corrupt = 0
        start = 0
        for rows, per in ((full, self.stack), (1 if rest else 0, rest)):
            if rows == 0:
                continue
            header = ws_header(per * size)
            hlen = len(header)
            matrix = np.empty((rows, hlen + per * size), dtype=np.uint8)
            matrix[:, :hlen] = np.frombuffer(header, dtype=np.uint8)
            matrix[:, hlen:] = raw[start : start + rows * per].reshape(rows, per * size)
            start += rows * per
            frames += rows
            if self.corrupt_pct > 0:
                data, bad = self._corrupt(matrix, hlen, size)
                chunks.append(data)
                corrupt += bad
            else:
                chunks.append(matrix.tobytes())
        data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        sock.ws.transport.write(data)
        code = int(packets[0]["code"])
        record, stats = sock.record, self.stats
        record.packets_sent[code] += n
        record.frames_sent += frames
        record.bytes_sent += len(data)
        record.corrupt_frames += corrupt
        stats.packets_sent[code] += n
        stats.frames_sent += frames
        stats.bytes_sent += len(data)
        stats.corrupt_frames += corrupt
        if code != ResponseCode.PREV_CLOSE:
            self.emitted += n

    def _corrupt(self, frames: Array, hlen: int, packet_size: int) -> tuple[bytes, int]:
        """Damage ``corrupt_pct`` % of the rows of a frame matrix so the decoder must flag them corrupt."""
        rows, width = frames.shape
        count = int(self.rng.binomial(rows, self.corrupt_pct / 100.0))
        if count == 0:
            return frames.tobytes(), 0
        chosen = self.rng.choice(rows, size=count, replace=False)
        if self.corrupt_mode == "garble":
            truncate = np.zeros(count, dtype=bool)
        elif self.corrupt_mode == "truncate":
            truncate = np.ones(count, dtype=bool)
        else:
            truncate = self.rng.random(count) < 0.5
        payload = width - hlen
        garble = chosen[~truncate]
        if len(garble):
            # First packet's length field: 3 (< header size) or 0xFFFF (past the end of the frame).
            big = (
                self.rng.random(len(garble)) < 0.5 if payload < 0xFFFF else np.zeros(len(garble), dtype=bool)
            )
            length = np.where(big, 0xFFFF, 3)
            frames[garble, hlen + 1] = length & 0xFF
            frames[garble, hlen + 2] = length >> 8
        cut_rows = chosen[truncate]
        if not len(cut_rows):
            return frames.tobytes(), count
        keep = np.ones(rows, dtype=bool)
        keep[cut_rows] = False
        parts = [frames[keep].tobytes()]
        for row in cut_rows.tolist():
            cut = int(self.rng.integers(1, payload))
            if cut % packet_size == 0:  # a cut on a packet boundary would still be a valid frame
                cut -= 1
            parts.append(ws_frame(frames[row, hlen : hlen + cut].tobytes()))
        return b"".join(parts), count
