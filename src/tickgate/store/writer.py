"""The store's one background writer: audit rows, subscription snapshots and ATM updates, batched.

Producers on the hot path (the planner path, the feed reader, the ATM engine) call ``submit_*``: synchronous,
no I/O, never blocks, never raises for database trouble. One asyncio task drains what was submitted into a
single transaction per batch (audit rows in submission order, the *latest* subscription snapshot, the latest
ATM window per chain), so a burst of decisions costs one commit, not one per event.

Backpressure, and why nothing of the audit log is dropped: the audit log must have an entry for every
change the feed saw, so audit rows are never discarded — not when the queue is long, not when the database
is down (transient errors are retried with capped backoff, keeping order). What *can* be shed is shed:
subscription snapshots and ATM updates coalesce (latest wins), so they occupy O(1) and O(chains) however
often they are submitted. Audit volume is bounded by planner decisions, which are bounded by user actions and
connection events, so the queue only grows when the database stops answering; past ``writer_high_water``
queued rows :attr:`StoreWriter.backlogged` turns true (logged, exported in :meth:`StoreWriter.stats`), and
producers that *can* wait — API handlers, before they ask the planner for something — ``await
wait_for_room()``, which throttles new user-driven decisions at the source instead of losing their record.
A row the database refuses outright (not a transient error) is isolated: the rest of its batch is written
row by row, and the refused row is logged in full at ERROR level and counted (never silently lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import exc as sa_exc

from tickgate.config import StoreSettings
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner.types import PlannerEvent, Tier
from tickgate.store import rows as conv
from tickgate.store.types import AtmEntry, JSONValue, SubscriptionRow, WatchlistState, utc

log = logging.getLogger(__name__)

SnapshotSource = Sequence[SubscriptionRow] | Callable[[], Sequence[SubscriptionRow]]
"""The rows themselves, or a function the writer calls when it is about to write (cheap to submit often:
only the snapshot current at write time is ever materialised)."""


class SubscriptionChanges(Protocol):
    """An incremental source of the subscriptions table (see ``store.planner_view.PlannerSubscriptions``)."""

    def changes(
        self, limit: int | None = None
    ) -> tuple[Sequence[SubscriptionRow], Sequence[InstrumentKey], bool]:
        """(rows to upsert, keys to delete, whether the rows are the whole table), as of now; at most
        ``limit`` keys of a diff, the rest kept for the next call (:meth:`pending`)."""
        ...

    def pending(self) -> int:
        """Changed keys not handed out yet."""
        ...

    def resync(self) -> None:
        """The change set last handed out was not written: the next one must be the whole table."""
        ...


class BatchSink(Protocol):
    """Where the writer's batches go (:class:`tickgate.store.batch.BatchWriter`): one transaction each."""

    async def write_batch(
        self,
        audit_rows: list[conv.Row],
        atm_rows: list[conv.Row],
        subs: conv.SubIndex | conv.SubDelta | None,
        *,
        touches: Sequence[tuple[int, datetime]] = (),
        marks: Sequence[conv.StateMark] = (),
        windows: Sequence[tuple[str, float]] = (),
    ) -> None: ...


def is_transient(e: BaseException) -> bool:
    """Errors worth retrying as-is: the database is busy, restarting or unreachable. Anything else (a
    constraint, a bad value) would fail again the same way."""
    if isinstance(e, sa_exc.DBAPIError):
        return e.connection_invalidated or isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError)
    return isinstance(e, OSError | ConnectionError | TimeoutError | sa_exc.DisconnectionError)


@dataclass(slots=True)
class WriterStats:
    """Counters for ``/admin/stats`` and metrics."""

    audit_submitted: int = 0
    audit_written: int = 0
    audit_failed: int = 0
    snapshots_submitted: int = 0
    snapshots_written: int = 0
    snapshots_failed: int = 0
    atm_submitted: int = 0
    atm_written: int = 0
    batches: int = 0
    retries: int = 0
    max_pending: int = 0
    last_error: str | None = None
    last_batch_s: float = 0.0


@dataclass(slots=True)
class _Batch:
    audit: list[conv.Row]
    atm: list[conv.Row]
    subs: conv.SubIndex | conv.SubDelta | None
    upto: int
    source: SubscriptionChanges | None = None  # told to resync if its change set is not written
    touches: list[tuple[int, datetime]] = field(default_factory=list)
    marks: list[conv.StateMark] = field(default_factory=list)
    windows: list[tuple[str, float]] = field(default_factory=list)


class StoreWriter:
    """See the module docstring. Not thread-safe: submit from the event loop's thread."""

    def __init__(self, sink: BatchSink, now: Callable[[], datetime], settings: StoreSettings) -> None:
        """``now``: the store's clock, for rows submitted without a time."""
        self._sink = sink
        self._now = now
        self._cfg = settings
        self._audit: deque[tuple[int, conv.Row]] = deque()
        self._atm: dict[tuple[str, date], conv.Row] = {}
        self._touches: dict[int, datetime] = {}  # watchlist id -> last used (latest wins)
        self._windows: dict[str, float] = {}  # a users' chain's group -> the ATM its window sits on (latest)
        self._marks: list[conv.StateMark] = []  # watchlist state changes, in decision order
        # A large subscriptions change set is written one chunk per short transaction, so that awaited writes
        # (a user's watchlist add) get the database between them; each chunk's rows are computed when it is
        # written (the source keeps the rest, see :meth:`_subs_continue`), so neither the CPU nor the lock
        # is taken in one long go.
        self._subs: SnapshotSource | SubscriptionChanges | None = None
        self._subs_first_seq = 0  # sequence number of the oldest submission the pending snapshot stands for
        self._last_snapshot = (
            -math.inf
        )  # monotonic time of the last snapshot written (the first goes at once)
        self._seq = 0  # last sequence number handed out
        self._done = 0  # everything submitted with a sequence number <= this is committed
        self._wake = asyncio.Event()
        self._urgent = False
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._room_waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._inflight = 0  # audit rows of the batch being written
        self._closing = False
        self._closed = False
        self._backlog_logged = False
        self._stats = WriterStats()

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("writer already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tickgate-store-writer")
        self._task.add_done_callback(self._on_task_done)

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self, timeout: float | None = 30.0) -> None:
        """Write everything submitted, then stop. Past ``timeout`` (database gone) the task is cancelled and
        what could not be written is logged with its count."""
        if self._closed:
            return
        self._closing = True
        self._urgent = True
        self._wake.set()
        try:
            if self._task is not None and not self._task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), timeout)
                except TimeoutError:
                    self._task.cancel()
                    await asyncio.gather(self._task, return_exceptions=True)
                except Exception:
                    pass  # a crash was logged by _on_task_done
            if self.pending or self._atm or self._subs is not None:
                log.error(
                    "store writer stopped with unwritten rows",
                    extra={
                        "audit_rows": self.pending,
                        "atm": len(self._atm),
                        "snapshot": self._subs is not None,
                    },
                )
        finally:
            self._closed = True
            self._fail_waiters(RuntimeError("store writer closed"))

    # ------------------------------------------------------------------------------------------ submit

    def submit_events(
        self,
        events: Iterable[PlannerEvent],
        actor: str,
        *,
        at: datetime | None = None,
        details: JSONValue = None,
    ) -> int:
        """Queue planner events (e.g. ``planner.drain_events()``) as audit rows; returns how many."""
        rows = conv.event_rows(events, actor=actor, at=at if at is not None else self._now(), details=details)
        for row in rows:
            self._push_audit(row)
        return len(rows)

    def submit_log(
        self,
        action: str,
        *,
        actor: str,
        group_id: str | None = None,
        owner: str | None = None,
        tier: Tier | str | None = None,
        connection: int | None = None,
        target: int | None = None,
        count: int = 0,
        mode: FeedMode | None = None,
        reason: str | None = None,
        details: JSONValue = None,
        at: datetime | None = None,
    ) -> None:
        """Queue one audit row (validated now: a bad value raises here, not in the writer)."""
        self._push_audit(
            conv.audit_row(
                action,
                actor=actor,
                at=at if at is not None else self._now(),
                group_id=group_id,
                owner=owner,
                tier=tier,
                connection=connection,
                target=target,
                count=count,
                mode=mode,
                reason=reason,
                details=details,
            )
        )

    def submit_subscriptions(self, source: SnapshotSource | SubscriptionChanges) -> None:
        """Replace the pending subscriptions snapshot (latest wins: older pending ones are never written).
        An incremental source (:class:`SubscriptionChanges`) is asked what changed when the writer is about
        to write, and that is written as a diff by key (the whole table when the source says so)."""
        self._check_accepting()
        self._stats.snapshots_submitted += 1
        self._bump()
        if self._subs is None:
            self._subs_first_seq = self._seq
        self._subs = source

    def submit_touch(self, watchlist_id: int, at: datetime) -> None:
        """Record that a watchlist entry was used (its LRU time, read back on restart). Coalesced per entry:
        viewing a chain many times a second costs one row update per batch, and no wait."""
        self._check_accepting()
        self._touches[watchlist_id] = at
        self._bump()

    def submit_window(self, group_id: str, atm: float) -> None:
        """Record the ATM a users' chain's window sits on (read back on restart: each chain comes back on
        its own window, even where two users' windows of one chain sit on different strikes). Coalesced."""
        self._check_accepting()
        self._windows[group_id] = atm
        self._bump()

    def submit_watchlist_state(
        self, groups: Iterable[str], state: WatchlistState, *, reason: str | None, at: datetime
    ) -> None:
        """Queue a state change of these groups' rows (evicted by a user's add). It applies only to rows
        created at or before ``at``, so a chain re-added meanwhile is not marked; readers that must see it
        (listing a watchlist) ``flush`` first."""
        self._check_accepting()
        gids = tuple(dict.fromkeys(groups))
        if gids:
            self._marks.append(conv.StateMark(gids, state.value, reason, utc(at)))
            self._bump()

    def submit_atm(self, entry: AtmEntry) -> None:
        """Queue an ATM cache upsert (latest per underlying and expiry wins)."""
        self._check_accepting()
        row = conv.atm_values(entry)
        self._stats.atm_submitted += 1
        self._atm[(row["underlying"], row["expiry"])] = row
        self._bump()

    # ------------------------------------------------------------------------------------------ waiting

    @property
    def pending(self) -> int:
        """Audit rows submitted but not committed yet, the batch being written included (snapshots and ATM
        updates coalesce and are not counted)."""
        return len(self._audit) + self._inflight

    @property
    def backlogged(self) -> bool:
        return self.pending >= self._cfg.writer_high_water

    def stats(self) -> dict[str, Any]:
        out = asdict(self._stats)
        out.update(pending=self.pending, backlogged=self.backlogged, alive=self.alive)
        return out

    async def wait_for_room(self) -> None:
        """Backpressure for producers that can wait: returns at once unless the queue is past high water,
        then when it has drained below it (or raises if the writer is gone)."""
        while self.backlogged:
            self._check_alive()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room_waiters.append(fut)
            await fut

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted before this call is committed (tests, shutdown, the end-of-day
        job before it reports). ``TimeoutError`` past ``timeout``; ``RuntimeError`` if the writer died."""
        target = self._seq
        if self._done >= target:
            return
        self._check_alive()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, fut))
        self._urgent = True
        self._wake.set()
        await asyncio.wait_for(asyncio.shield(fut), timeout)

    # ------------------------------------------------------------------------------------------ internals

    def _check_accepting(self) -> None:
        if self._closed:
            raise RuntimeError("store writer is closed: submit before closing the store")

    def _check_alive(self) -> None:
        if not self.alive:
            raise RuntimeError("store writer is not running")

    def _push_audit(self, row: conv.Row) -> None:
        self._check_accepting()
        self._seq += 1
        self._audit.append((self._seq, row))
        self._stats.audit_submitted += 1
        n = self.pending
        self._stats.max_pending = max(self._stats.max_pending, n)
        if n >= self._cfg.writer_high_water and not self._backlog_logged:
            self._backlog_logged = True
            log.warning(
                "store writer backlogged: audit rows are queuing faster than they are written",
                extra={"pending": n, "last_error": self._stats.last_error},
            )
        self._wake.set()

    @property
    def _subs_continue(self) -> bool:
        """The pending incremental source still holds the rest of a change set being written: it goes next,
        at once (no snapshot interval, no linger)."""
        s = self._subs
        return s is not None and not isinstance(s, Sequence) and not callable(s) and s.pending() > 0

    def _has_rows(self) -> bool:
        """Rows waiting to be written that do not wait for the snapshot interval."""
        return bool(
            self._audit or self._atm or self._touches or self._marks or self._windows or self._subs_continue
        )

    def _bump(self) -> None:
        self._seq += 1
        self._wake.set()

    def _snapshot_wait(self) -> float | None:
        """Seconds until the pending snapshot may be written (0: now); None when there is none."""
        if self._subs is None:
            return None
        if self._urgent or self._closing or self._subs_continue:
            return 0.0
        return max(0.0, self._last_snapshot + self._cfg.writer_snapshot_interval_s - time.monotonic())

    def _take(self, with_snapshot: bool) -> _Batch | None:
        n = min(len(self._audit), self._cfg.writer_batch_max)
        taken = [self._audit.popleft() for _ in range(n)]
        atm = list(self._atm.values())
        self._atm.clear()
        touches = list(self._touches.items())
        self._touches.clear()
        windows = list(self._windows.items())
        self._windows.clear()
        marks, self._marks = self._marks, []
        subs: conv.SubIndex | conv.SubDelta | None = None
        changes: SubscriptionChanges | None = None
        if with_snapshot and self._subs is not None:
            source, self._subs = self._subs, None
            first = self._subs_first_seq
            try:
                if isinstance(source, Sequence) or callable(source):
                    subs = conv.sub_index(source() if callable(source) else source)
                else:
                    changes = source
                    subs = _delta(*source.changes(self._cfg.writer_subs_chunk))
                    if source.pending():  # the rest next, at once, standing for the same submissions
                        self._subs, self._subs_first_seq = source, first
            except Exception:
                self._stats.snapshots_failed += 1
                if changes is not None:
                    changes.resync()
                log.exception("building the subscriptions snapshot failed; it is skipped")
        # Committed watermark: ATM rows pending now are all taken; audit rows up to the last one taken; a
        # snapshot left for later, or the rest of one being written, holds the mark below the first
        # submission it stands for.
        upto = self._seq if not self._audit else taken[-1][0]
        if self._subs is not None:
            upto = min(upto, self._subs_first_seq - 1)
        if not taken and not atm and subs is None and not touches and not marks and not windows:
            self._done = max(self._done, upto)
            return None
        return _Batch([row for _, row in taken], atm, subs, upto, changes, touches, marks, windows)

    async def _run(self) -> None:
        while True:
            wait = self._snapshot_wait()
            if not self._has_rows() and wait != 0.0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # None: until something arrives
                        await self._wake.wait()
            linger = self._cfg.writer_linger_s
            # Linger to gather a new batch; never between the chunks of a change set being written.
            if (
                linger > 0
                and not self._urgent
                and not self._subs_continue
                and len(self._audit) < self._cfg.writer_batch_max
            ):
                await asyncio.sleep(linger)
            self._wake.clear()
            with_snapshot = self._snapshot_wait() == 0.0
            self._urgent = False
            batch = self._take(with_snapshot)
            if batch is not None:
                self._inflight = len(batch.audit)
                try:
                    await self._commit(batch)
                finally:
                    self._inflight = 0
                self._done = max(self._done, batch.upto)
                # A SQLite batch commits inline, on the loop. Yield twice: a request that arrived meanwhile
                # is read in the first loop iteration and scheduled behind this task's wake-up; the second
                # lets it run before the next batch.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            self._notify()
            if (
                self._closing
                and not self._audit
                and not self._atm
                and not self._touches
                and not self._windows
                and self._subs is None
            ):
                return

    async def _commit(self, b: _Batch) -> None:
        delay = 0.05
        while True:
            t0 = time.perf_counter()
            try:
                await self._sink.write_batch(
                    b.audit, b.atm, b.subs, touches=b.touches, marks=b.marks, windows=b.windows
                )
            except Exception as e:
                if not is_transient(e):
                    log.error("store writer batch refused; writing it row by row", exc_info=True)
                    await self._isolate(b)
                    return
                self._stats.retries += 1
                self._stats.last_error = f"{type(e).__name__}: {e}"[:500]
                log.warning("store write failed (%s), retrying in %.2fs", self._stats.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._cfg.writer_retry_cap_s)
                continue
            self._stats.last_batch_s = time.perf_counter() - t0
            self._stats.batches += 1
            self._stats.audit_written += len(b.audit)
            self._stats.atm_written += len(b.atm)
            if b.subs is not None:
                self._stats.snapshots_written += 1
                self._last_snapshot = time.monotonic()
            self._stats.last_error = None
            self._backlog_logged = self._backlog_logged and self.backlogged
            return

    async def _isolate(self, b: _Batch) -> None:
        """Write a refused batch piece by piece so one bad row costs only itself."""
        for row in b.audit:
            if await self._write_alone([row], [], None, "audit row"):
                self._stats.audit_written += 1
            else:
                self._stats.audit_failed += 1
        for row in b.atm:
            if await self._write_alone([], [row], None, "ATM cache row"):
                self._stats.atm_written += 1
        if b.touches or b.marks or b.windows:
            await self._write_alone(
                [],
                [],
                None,
                "watchlist touches, states and windows",
                touches=b.touches,
                marks=b.marks,
                windows=b.windows,
            )
        if b.subs is not None:
            self._last_snapshot = time.monotonic()
            if await self._write_alone([], [], b.subs, "subscriptions snapshot"):
                self._stats.snapshots_written += 1
            else:
                self._stats.snapshots_failed += 1
                if b.source is not None:
                    b.source.resync()  # the whole table is rewritten next time

    async def _write_alone(
        self,
        audit: list[conv.Row],
        atm: list[conv.Row],
        subs: conv.SubIndex | conv.SubDelta | None,
        what: str,
        *,
        touches: Sequence[tuple[int, datetime]] = (),
        marks: Sequence[conv.StateMark] = (),
        windows: Sequence[tuple[str, float]] = (),
    ) -> bool:
        """One piece of a refused batch: retried while the database is merely unavailable, given up (and
        logged in full, so the record survives in the logs) only when the database refuses it."""
        delay = 0.05
        while True:
            try:
                await self._sink.write_batch(audit, atm, subs, touches=touches, marks=marks, windows=windows)
                return True
            except Exception as e:
                if is_transient(e):
                    self._stats.retries += 1
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._cfg.writer_retry_cap_s)
                    continue
                shown = "(snapshot)" if subs is not None else repr(audit or atm)
                log.exception("%s refused by the database, not written: %s", what, shown)
                return False

    def _notify(self) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._flush_waiters:
            if fut.done():
                continue
            if target <= self._done:
                fut.set_result(None)
            else:
                keep.append((target, fut))
        self._flush_waiters = keep
        if not self.backlogged:
            waiters, self._room_waiters = self._room_waiters, []
            for f in waiters:
                if not f.done():
                    f.set_result(None)

    def _fail_waiters(self, err: BaseException) -> None:
        for _, fut in self._flush_waiters:
            if not fut.done():
                fut.set_exception(err)
        for f in self._room_waiters:
            if not f.done():
                f.set_exception(err)
        self._flush_waiters = []
        self._room_waiters = []

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._fail_waiters(RuntimeError("store writer cancelled"))
            return
        err = task.exception()
        if err is not None:
            log.critical("store writer crashed", exc_info=err)
            self._fail_waiters(RuntimeError(f"store writer crashed: {err!r}"))
        else:
            self._notify()


def _delta(
    rows: Sequence[SubscriptionRow], gone: Sequence[InstrumentKey], full: bool
) -> conv.SubIndex | conv.SubDelta:
    index = conv.sub_index(rows)
    if full:
        return index
    return conv.SubDelta(index, tuple((k.segment.name, k.security_id) for k in gone))
