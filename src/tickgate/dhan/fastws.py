"""A fast path for the feed's binary frames under the ``websockets`` client.

Dhan's feed sends one packet per WebSocket frame: at 50,000 ticks a second the generic frame parser of
``websockets`` (a generator per frame, the message assembler, a task switch per ``recv``) cost more CPU than
decoding the packets. Server-to-client frames are simple — unmasked, and a market-data frame is one final
binary frame — so :func:`split_frames` (pure, over bytes) cuts those out of the stream itself and everything
else (pings, pongs, close, text, fragmented messages, anything odd) is handed, as whole frames, to the
``websockets`` protocol, which stays in charge of the connection: handshake, keepalive, closing, errors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, cast

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

OP_BINARY = 0x2
MAX_FAST_FRAME = 1 << 20  # larger frames (never seen on the feed) go the general way
_U16 = struct.Struct(">H").unpack_from
_U64 = struct.Struct(">Q").unpack_from


def split_frames(buf: bytes | bytearray) -> tuple[list[bytes | bytearray], list[bytes], int, bool]:
    """Cut complete frames off the front of ``buf`` (server-to-client frames, at a frame boundary).

    Returns ``(payloads, others, consumed, give_up)``: ``payloads`` of final, unmasked binary frames
    without extension bits, in order; ``others``, every other frame's whole bytes, in order; ``consumed``
    bytes were used; ``give_up`` means the frame at ``consumed`` is one this scanner will not size (masked,
    oversized): the caller hands the rest of the stream to the general parser. Relative order between the
    two lists is not kept (pings, pongs and text carry no market data). Payloads are slices of ``buf``:
    bytes from bytes, bytearrays from a bytearray."""
    payloads: list[bytes | bytearray] = []
    others: list[bytes] = []
    add = payloads.append
    pos = 0
    end = len(buf)
    while end - pos >= 2:
        b0 = buf[pos]
        length = buf[pos + 1]
        if b0 == 0x82 and length < 126:  # the feed's frame: final binary, short, unmasked
            stop = pos + 2 + length
            if stop > end:
                break
            add(buf[pos + 2 : stop])
            pos = stop
            continue
        head = 2
        if length & 0x80:
            return payloads, others, pos, True  # masked: not a server frame
        if length == 126:
            if end - pos < 4:
                break
            length = _U16(buf, pos + 2)[0]
            head = 4
        elif length == 127:
            if end - pos < 10:
                break
            length = _U64(buf, pos + 2)[0]
            head = 10
        if length > MAX_FAST_FRAME:
            return payloads, others, pos, True
        stop = pos + head + length
        if stop > end:
            break
        if b0 == 0x80 | OP_BINARY:
            add(buf[pos + head : stop])
        else:
            others.append(bytes(buf[pos:stop]))
        pos = stop
    return payloads, others, pos, False


class FeedConnection(ClientConnection):
    """A ``websockets`` client connection whose final binary frames go straight to :attr:`on_frames`, a
    read's worth at a time.

    Until ``on_frames`` is set, and while the handshake is in progress, everything goes the general way.
    The fast path starts only at a frame boundary of the general parser (its buffer empty), and the general
    parser is only ever given whole frames, so it always sits at a frame boundary itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_frames: Callable[[list[bytes]], None] | None = None
        self.fast_frames = 0
        self._pending = bytearray()
        self._general_only = False

    def data_received(self, data: bytes) -> None:
        if (
            self._general_only
            or self.on_frames is None
            or (not self._pending and (self.protocol.state is not State.OPEN or self.protocol.reader.buffer))
        ):
            super().data_received(data)
            return
        pending = self._pending
        if pending:  # a partial frame from the previous read: join (rare with 64 KiB reads)
            pending += data
            buf: bytes | bytearray = pending
        else:
            buf = data  # slices of bytes are bytes: one copy per payload
        payloads, others, consumed, give_up = split_frames(buf)
        frames: list[bytes]
        if pending:
            del pending[:consumed]
            frames = [bytes(p) for p in payloads]
        else:
            pending += data[consumed:]
            frames = cast(list[bytes], payloads)  # slices of ``data``
        if frames:
            self.fast_frames += len(frames)
            self.on_frames(frames)
        for frame in others:
            super().data_received(frame)
        if give_up:
            self._general_only = True
            rest = bytes(pending)
            pending.clear()
            super().data_received(rest)
