"""An API replica's side of the bus: its quote store follows the gateway's (:mod:`tickgate.bus`).

Snapshot first, then deltas: the follower subscribes to the deltas, then asks for a snapshot; deltas that
arrive meanwhile wait. The snapshot says the number of the last delta it holds; the waiting deltas after
that number are applied in order, and from then on each delta must be the next number. A gap (the
gateway dropped some, or the replica missed some) means a new snapshot.

Never a stale quote served as live: the moment the broker connection is lost, every price that came from
the feed turns ``stale`` (:meth:`QuoteStore.mark_stale`), and stays so until the next snapshot replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import nats

from tickgate.bus.codec import BusFormatError, Fill, SnapshotChunk, Ticks, chunks_complete, decode
from tickgate.bus.publisher import DELTAS, SNAPSHOTS
from tickgate.dhan.batch import PacketBatch, decode_batch
from tickgate.feed.quotes import Array, QuoteStore

log = logging.getLogger(__name__)


class QuoteFollower:
    """Keeps ``store`` equal to the gateway's (see the module docstring)."""

    def __init__(
        self,
        store: QuoteStore,
        url: str,
        *,
        prefix: str = "",
        in_session: Callable[[], Array | None] = lambda: None,
        snapshot_timeout_s: float = 10.0,
        on_batch: Callable[[PacketBatch, int], None] | None = None,
    ) -> None:
        self.store = store
        self.url = url
        self.subject = prefix + DELTAS
        self.snapshot_subject = prefix + SNAPSHOTS
        self._in_session = in_session
        self._timeout = snapshot_timeout_s
        self._on_batch = on_batch  # after each batch is in the store, as the gateway's FeedManager has it
        self.live = False
        self.last_seq = -1
        self._syncing = False
        self._waiting: list[Ticks | Fill] = []
        self._nc: Any = None
        self._resync_task: asyncio.Task[None] | None = None
        self.snapshots = self.gaps = self.disconnects = self.applied = self.unreadable = 0

    async def start(self, *, wait: bool = True) -> None:
        """Connect and subscribe; with ``wait``, return once the first snapshot is in, else take it in the
        background (a replica may start before any gateway holds the lease)."""
        self._nc = await nats.connect(
            self.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.3,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            name="tickgate-replica",
        )
        await self._nc.subscribe(self.subject, cb=self._on_delta)
        if wait:
            await self._resync()
        else:
            self._schedule_resync()

    async def stop(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            await asyncio.gather(self._resync_task, return_exceptions=True)
        if self._nc is not None:
            await self._nc.close()
            self._nc = None
        self.live = False

    # -- the connection -----------------------------------------------------------------------------------

    async def _on_disconnected(self) -> None:
        self.disconnects += 1
        self.live = False
        stale = self.store.mark_stale()
        log.warning("lost the broker: %d live prices are stale until the next snapshot", stale)

    async def _on_reconnected(self) -> None:
        log.info("broker back: taking a snapshot")
        self._schedule_resync()

    def resync(self) -> None:
        """The source changed (a new gateway) or went silent: every live price is stale until a snapshot,
        asked for now (a request still waiting on the old gateway is dropped)."""
        self.live = False
        self.store.mark_stale()
        if self._resync_task is not None and not self._resync_task.done():
            self._resync_task.cancel()
        self._resync_task = asyncio.get_running_loop().create_task(self._resync(), name="bus-resync")

    def _schedule_resync(self) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.get_running_loop().create_task(self._resync(), name="bus-resync")

    # -- deltas -------------------------------------------------------------------------------------------

    async def _on_delta(self, msg: Any) -> None:
        try:
            delta = decode(msg.data, self.store)
        except BusFormatError:
            self.unreadable += 1
            log.exception("an unreadable message on %s; skipped", self.subject)
            return
        if isinstance(delta, SnapshotChunk):
            return
        if self._syncing:
            self._waiting.append(delta)
            return
        if delta.seq <= self.last_seq:
            # Already in the snapshot: a snapshot is sent at once, while deltas wait in the gateway's
            # queue, so a snapshot overtakes the deltas it holds. (A new gateway, whose numbers start
            # again, is told by its plan digest: tickgate.replica takes a snapshot from it then.)
            return
        if delta.seq != self.last_seq + 1:
            self.gaps += 1
            log.warning("deltas %d..%d missed: taking a snapshot", self.last_seq + 1, delta.seq - 1)
            self._waiting.append(delta)
            self._schedule_resync()
            return
        self._apply(delta)

    def _apply(self, delta: Ticks | Fill) -> None:
        now = time.monotonic_ns()
        if isinstance(delta, Ticks):
            batch = decode_batch(delta.frames)
            self.store.apply(batch, now, self._in_session())
            if self._on_batch is not None:
                self._on_batch(batch, now)
        else:
            self.store.fill(delta.quotes, now, delta.source)
        self.last_seq = delta.seq
        self.applied += 1

    # -- snapshots ----------------------------------------------------------------------------------------

    async def _resync(self) -> None:
        """Take a snapshot, then the deltas after it; retried until it works (the broker may be away)."""
        self._syncing = True
        self.live = False
        while True:
            try:
                chunks = await self._fetch_snapshot()
                break
            except Exception as exc:
                log.warning("no snapshot (%s: %s); asking again", type(exc).__name__, exc)
                await asyncio.sleep(0.5)
        now = time.monotonic_ns()
        for chunk in sorted(chunks, key=lambda c: c.chunk):
            self.store.import_rows(chunk.packed, chunk.columns, now)
        self.last_seq = chunks[0].seq
        self.snapshots += 1
        waiting, self._waiting = sorted(self._waiting, key=lambda d: d.seq), []
        for delta in waiting:
            if delta.seq <= self.last_seq:
                continue
            if delta.seq != self.last_seq + 1:  # still a hole: another snapshot
                self.gaps += 1
                self._waiting = [d for d in waiting if d.seq > self.last_seq]
                self._syncing = False
                self._schedule_resync_later()
                return
            self._apply(delta)
        self._syncing = False
        self.live = True

    def _schedule_resync_later(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(self._schedule_resync)

    async def _fetch_snapshot(self) -> list[SnapshotChunk]:
        inbox = self._nc.new_inbox()
        got: list[SnapshotChunk] = []
        done = asyncio.Event()

        async def on_chunk(msg: Any) -> None:
            chunk = decode(msg.data, self.store)
            if isinstance(chunk, SnapshotChunk):
                got.append(chunk)
                if chunks_complete(got):
                    done.set()

        sub = await self._nc.subscribe(inbox, cb=on_chunk)
        try:
            await self._nc.publish(self.snapshot_subject, b"", reply=inbox)
            await asyncio.wait_for(done.wait(), self._timeout)
        except TimeoutError:
            of = f"{len({c.chunk for c in got})} of {got[0].chunks}" if got else "none"
            raise TimeoutError(f"snapshot chunks received in {self._timeout:g} s: {of}") from None
        finally:
            await sub.unsubscribe()
        if len({c.seq for c in got}) != 1:
            raise BusFormatError("snapshot chunks of two different snapshots")
        return got
