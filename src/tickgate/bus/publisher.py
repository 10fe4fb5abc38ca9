"""The gateway's side of the bus: every batch of frames and every fill, in the order they were applied to
its quote store, numbered, on one subject; a snapshot of the store to whoever asks (:mod:`tickgate.bus`).

Why the numbering happens where the store is written: a batch is numbered in the same synchronous step
that applied it (the decoder calls :meth:`TickPublisher.frames` right after ``QuoteStore.apply``), and a
snapshot is taken in one synchronous step too, with the last number given out. So "every delta up to
number N is in the snapshot" holds exactly, and a replica applies only what comes after N.

Publishing never blocks the decoder: messages wait in a bounded queue that a task of its own drains into
the connection. Past the bound the oldest are dropped and counted: the replicas see the gap in the numbers
and take a new snapshot, which is the right answer to a broker that cannot keep up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import nats

from tickgate.bus.codec import encode_fill, encode_snapshot, encode_ticks
from tickgate.feed.quotes import QuoteStore, RestQuote

log = logging.getLogger(__name__)

DELTAS = "tg.quotes"
SNAPSHOTS = "tg.snapshot"


class TickPublisher:
    """Numbers and publishes the store's deltas; answers snapshot requests (see the module docstring)."""

    def __init__(self, store: QuoteStore, url: str, *, prefix: str = "", max_queued: int = 10_000) -> None:
        self.store = store
        self.url = url
        self.subject = prefix + DELTAS
        self.snapshot_subject = prefix + SNAPSHOTS
        self.seq = 0
        self._queue: deque[bytes] = deque()
        self._max = max_queued
        self._wake = asyncio.Event()
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self.published = self.dropped = self.snapshots = self.failures = self.disconnects = 0

    async def start(self) -> None:
        self._nc = await nats.connect(
            self.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            name="tickgate-gateway",
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )
        await self._nc.subscribe(self.snapshot_subject, cb=self._on_snapshot_request)
        self.store.on_fill = self.fill
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="bus-publisher")

    async def stop(self) -> None:
        if self.store.on_fill == self.fill:
            self.store.on_fill = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    async def _on_disconnected(self) -> None:
        self.disconnects += 1
        log.warning("the gateway lost the broker: replicas see a gap and take a snapshot when it is back")

    async def _on_reconnected(self) -> None:
        log.info("the gateway is back on the broker")

    async def _on_error(self, exc: Exception) -> None:
        self.failures += 1
        log.warning("broker error: %s: %s", type(exc).__name__, exc)

    # -- deltas, in the order they were applied ------------------------------------------------------------

    def frames(self, frames: Sequence[bytes]) -> None:
        """A batch of Dhan frames the store has just applied."""
        self.seq += 1
        self._enqueue(encode_ticks(self.seq, frames))

    def fill(self, quotes: Sequence[RestQuote], source: int) -> None:
        """Quotes from outside the feed the store has just applied."""
        self.seq += 1
        self._enqueue(encode_fill(self.seq, source, quotes))

    def _enqueue(self, message: bytes) -> None:
        self._queue.append(message)
        while len(self._queue) > self._max:
            self._queue.popleft()
            self.dropped += 1
        self._wake.set()

    async def _drain(self) -> None:
        """Publish what is queued, in order; never dies (a failure is logged, counted, retried)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while self._queue:
                    await self._nc.publish(self.subject, self._queue[0])
                    self._queue.popleft()
                    self.published += 1
            except Exception:
                self.failures += 1
                log.exception("publishing quotes to the broker failed; retrying")
                await asyncio.sleep(0.1)
                self._wake.set()

    # -- snapshots ----------------------------------------------------------------------------------------

    async def _on_snapshot_request(self, msg: Any) -> None:
        """The whole store at the current number, in chunks, to the asker's inbox."""
        if not msg.reply:
            return
        chunks = encode_snapshot(self.seq, self.store)  # one synchronous step: consistent with self.seq
        self.snapshots += 1
        try:
            for chunk in chunks:
                await self._nc.publish(msg.reply, chunk)
        except Exception:
            self.failures += 1
            log.exception("sending a snapshot failed (the replica asks again)")
