"""One WebSocket of the simulated server: its connection, its record, its book and what it is owed."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from tickgate.config import FeedLimits
from tickgate.sim.core import SocketBook
from tickgate.sim.emitter import StreamSlots
from tickgate.sim.records import SocketRecord


class SimConnection(ServerConnection):
    """A server connection that can go *silent*: every outgoing byte (pongs, close frames) is dropped, as
    if the server had hung, while incoming frames are still read so a closed TCP connection is noticed."""

    silent: bool = False

    def send_data(self) -> None:
        if self.silent:
            for _ in self.protocol.data_to_send():
                pass
            return
        super().send_data()


class SimSocket:
    """Server-side state of one connection (the public part is ``record``)."""

    def __init__(self, record: SocketRecord, ws: SimConnection, token: str, limits: FeedLimits) -> None:
        self.record = record
        self.ws = ws
        self.token = token
        self.closing = False
        self.admitted = False
        self.last_pong = 0.0
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.keepalive: asyncio.Task[None] | None = None
        self.book = SocketBook(limits, record.subscriptions)  # the record shows the book's subscriptions
        self.stream = StreamSlots()  # what it is owed, by packet kind, in step with the book

    @property
    def streaming(self) -> bool:
        """Owed market data by the rate (open, admitted, not being closed, subscribed to something)."""
        return self.admitted and not self.closing and bool(self.record.subscriptions)

    @property
    def writable(self) -> bool:
        return not self.closing and not self.ws.silent and self.ws.protocol.state is State.OPEN

    def buffered(self) -> int:
        return self.ws.transport.get_write_buffer_size()
