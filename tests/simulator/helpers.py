"""Helpers for the simulator tests: well-known keys and a raw feed client.

The client is deliberately thin (``websockets`` + :func:`tickgate.dhan.protocol.decode_frame`): these tests
check the server, so nothing of tickgate's own feed client is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import (
    CorruptFrame,
    DecodeStats,
    Disconnect,
    ExchangeSegment,
    FeedMode,
    InstrumentKey,
    Packet,
    decode_frame,
    disconnect_message,
    subscribe_messages,
    unsubscribe_messages,
)
from tickgate.sim import StaticUniverse

NIFTY = InstrumentKey(ExchangeSegment.IDX_I, 13)
BANKNIFTY = InstrumentKey(ExchangeSegment.IDX_I, 25)
RELIANCE = InstrumentKey(ExchangeSegment.NSE_EQ, 2885)
HDFCBANK = InstrumentKey(ExchangeSegment.NSE_EQ, 1333)
TCS = InstrumentKey(ExchangeSegment.NSE_EQ, 11536)
NIFTY_FUT = InstrumentKey(ExchangeSegment.NSE_FNO, 40000)
UNKNOWN = InstrumentKey(ExchangeSegment.NSE_EQ, 999_999)
REAL_LIMITS = FeedLimits()

# Short keepalive so ping behaviour is observable in a fast suite.
FAST = {"ping_interval": 0.1, "ping_timeout": 0.6, "close_timeout": 1.0, "tick_interval": 0.005}


def chain_keys(
    universe: StaticUniverse, strikes: Iterable[float]
) -> dict[float, tuple[InstrumentKey, InstrumentKey]]:
    """(CE, PE) keys by strike of the sample universe's NIFTY weekly chain (ids from 50000, step 50)."""
    out = {}
    for strike in strikes:
        sid = 50_000 + int((strike - 24_000) // 50) * 2
        ce, pe = InstrumentKey(ExchangeSegment.NSE_FNO, sid), InstrumentKey(ExchangeSegment.NSE_FNO, sid + 1)
        assert ce in universe
        assert pe in universe
        out[float(strike)] = (ce, pe)
    return out


class FeedClient:
    """A bare feed connection that records every frame and decoded packet in the background."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[bytes] = []
        self.packets: list[Packet] = []
        self.stats = DecodeStats()
        self.closed = asyncio.Event()
        self.close_exc: ConnectionClosed | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> FeedClient:
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("close_timeout", 1)
        return cls(await connect(url, max_queue=None, **kwargs))

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.frames.append(message)
                    self.packets.extend(decode_frame(message, self.stats))
        except ConnectionClosed as exc:
            self.close_exc = exc
        finally:
            if self.close_exc is None:
                with contextlib.suppress(Exception):
                    await self.ws.wait_closed()
            self.closed.set()

    async def subscribe(self, mode: FeedMode, keys: Iterable[InstrumentKey], per_message: int = 100) -> None:
        for message in subscribe_messages(mode, keys, per_message=per_message):
            await self.ws.send(message)

    async def unsubscribe(self, mode: FeedMode, keys: Iterable[InstrumentKey]) -> None:
        for message in unsubscribe_messages(mode, keys, per_message=100):
            await self.ws.send(message)

    async def send_disconnect(self) -> None:
        await self.ws.send(disconnect_message())

    def of(self, kind: type[Any], key: InstrumentKey | None = None) -> list[Any]:
        return [
            p
            for p in self.packets
            if isinstance(p, kind) and (key is None or (p.segment, p.security_id) == key)  # type: ignore[union-attr]
        ]

    @property
    def disconnects(self) -> list[int]:
        return [p.reason_code for p in self.packets if isinstance(p, Disconnect)]

    @property
    def corrupt(self) -> list[CorruptFrame]:
        return [p for p in self.packets if isinstance(p, CorruptFrame)]

    async def wait(
        self, predicate: Callable[[], object], timeout: float = 3.0, what: str = "condition"
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"client: timed out waiting for {what or predicate}")
            await asyncio.sleep(0.005)

    async def wait_closed(self, timeout: float = 3.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
