"""The feed, assembled: planner decisions executed on the connection pool, frames decoded into the store.

One asyncio event loop, three kinds of tasks: a reader per socket (only queues frames: pongs keep flowing
under any load), one decoder (drains the queue in batches, yielding between them so the loop never stalls),
and a watchdog (recycles sockets that are stale, not merely quiet: :mod:`tickgate.feed.watchdog`).
Every change of plan — a user's add, a connection lost or regained, a rebalance, end of day — goes through
the planner and comes back as actions; this class only executes them and reports what the sockets did.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tickgate.config import Settings
from tickgate.dhan.batch import PacketBatch, decode_batch
from tickgate.dhan.client import (
    ConnectionState,
    CredentialsProvider,
    DownReason,
    FeedPool,
)
from tickgate.dhan.protocol import subscribe_messages, unsubscribe_messages
from tickgate.feed.quotes import Array, QuoteStore
from tickgate.feed.watchdog import SocketSilence, StaleJudge
from tickgate.orchestrator import Orchestrator, PlanChange
from tickgate.planner import Planner, PlannerEvent, PlanResult
from tickgate.schedule.sessions import MARKETS, SEGMENT_MARKET, Market, market_of

DECODE_SLICE_S = 0.005
log = logging.getLogger(__name__)


@dataclass
class FeedMetrics:
    """Counters of the ingest path (exported to Prometheus by the API layer)."""

    frames: int = 0
    packets_by_code: Counter[int] = field(default_factory=Counter)
    skipped_by_code: Counter[int] = field(default_factory=Counter)
    corrupt_frames: int = 0
    unknown_segment: int = 0
    dropped_frames: int = 0  # decode backlog overflow (oldest dropped)
    undelivered_actions: int = 0  # actions for a socket that had just gone down
    requests_sent: int = 0
    batches: int = 0
    decode_lag_last_s: float = 0.0
    decode_lag_max_s: float = 0.0
    server_disconnects: Counter[int] = field(default_factory=Counter)
    stale_recycles: int = 0
    recycles_held: int = 0  # stale sockets the recycle rate limit held back (tried again later)
    quiet_alerts: int = 0  # times every socket of a trading market fell silent together
    loop_failures: Counter[str] = field(default_factory=Counter)  # decoder/watchdog exceptions survived


def _events_to(callback: Callable[[list[PlannerEvent]], None]) -> Callable[[PlanChange], None]:
    def forward(change: PlanChange) -> None:
        if change.events:
            callback(list(change.events))

    return forward


class FeedManager:
    """Executes the planner's actions on a :class:`FeedPool` and folds received frames into a store."""

    def __init__(
        self,
        settings: Settings,
        planner: Planner,
        credentials: CredentialsProvider,
        *,
        store: QuoteStore | None = None,
        url: str | None = None,
        trading: Callable[[], frozenset[Market]] = lambda: frozenset(MARKETS),
        on_events: Callable[[list[PlannerEvent]], None] | None = None,
        on_batch: Callable[[PacketBatch, int], None] | None = None,
        orchestrator: Orchestrator | None = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.planner = planner
        # Socket events (up, down, the start-up barrier) change the plan like any request: through the
        # orchestrator, which sends the actions back here. A manager on its own makes its own.
        self.orchestrator = orchestrator if orchestrator is not None else Orchestrator(planner)
        self.orchestrator.connect(self)
        if on_events is not None:
            self.orchestrator.subscribe("on_events", _events_to(on_events))
        self.store = store if store is not None else QuoteStore()  # an empty store is falsy
        self.metrics = FeedMetrics()
        self.trading = trading  # the markets in continuous session now (the service's sessions, its clock)
        feed_cfg = settings.feed
        self.judge = StaleJudge(
            feed_cfg.stale_after_s,
            feed_cfg.recycle_min_interval_s,
            feed_cfg.recycles_per_window,
            feed_cfg.recycle_window_s,
        )
        self.quiet: frozenset[Market] = frozenset()  # trading markets on which every socket is silent
        self._session_mask: tuple[int, Array] | None = None
        self._on_batch = on_batch  # after each batch is in the store: push fan-out, benchmarks
        self.pool = FeedPool(
            url or settings.feed_url,
            credentials,
            limits=settings.limits,
            settings=settings.feed,
            on_up=self._on_up,
            on_down=self._on_down,
            on_frame=self._on_frame,
            on_frames=self._on_frames,
        )
        self._frames: deque[bytes] = deque()
        self._times: deque[int] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        # Start-up barrier: connections that opened before the others are reported together.
        self._barrier_open = False
        self._waiting_up: list[int] = []

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._barrier_open = self.settings.feed.startup_barrier_s <= 0
        self._waiting_up = []
        self._tasks = [
            asyncio.create_task(self._decode_loop(), name="feed-decoder"),
            asyncio.create_task(self._watchdog_loop(), name="feed-watchdog"),
            asyncio.create_task(self._release_barrier_later(), name="feed-startup-barrier"),
        ]
        await self.pool.start()

    async def stop(self) -> None:
        self._running = False
        await self.pool.stop()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._drain()  # whatever arrived before the sockets closed still lands in the store

    async def __aenter__(self) -> FeedManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- executing the plan ------------------------------------------------------------------------------

    def execute(self, result: PlanResult) -> None:
        """Send a plan result's actions, in order (the orchestrator's sink: nothing else calls this)."""
        per_message = self.limits.instruments_per_message
        for action in result.actions:
            encode = subscribe_messages if action.op == "subscribe" else unsubscribe_messages
            if action.op == "subscribe":
                self.store.register(action.keys)
            messages = list(encode(action.mode, action.keys, per_message=per_message))
            if self.pool.send(action.connection, messages):
                self.metrics.requests_sent += len(messages)
            else:
                self.metrics.undelivered_actions += 1

    def plan(self, change: Callable[[Planner], PlanResult], cause: str = "feed") -> PlanResult:
        """Apply one planner call through the orchestrator: ``manager.plan(lambda p: p.rebalance())``."""
        return self.orchestrator.apply(cause, change)

    def _on_up(self, connection: int) -> None:
        if not self._barrier_open:
            self._waiting_up.append(connection)
            if len(self._waiting_up) == len(self.pool.connections):
                self._open_barrier()
            return
        self.orchestrator.apply(f"connection {connection} up", Planner.connection_up, connection)

    def _on_down(self, connection: int, reason: DownReason) -> None:
        if reason.code is not None:
            self.metrics.server_disconnects[reason.code] += 1
        if connection in self._waiting_up:
            self._waiting_up.remove(connection)  # never reported up: nothing to re-plan
            return
        why = str(reason)
        self.orchestrator.apply(
            f"connection {connection} down: {why}", Planner.connection_down, connection, why
        )

    def _open_barrier(self) -> None:
        """Report every socket that is up at once; rebalance only after the last of them."""
        if self._barrier_open:
            return
        self._barrier_open = True
        waiting, self._waiting_up = self._waiting_up, []
        last = len(waiting) - 1
        for i, connection in enumerate(sorted(waiting)):
            cause = f"connection {connection} up"
            self.orchestrator.apply(cause, Planner.connection_up, connection, rebalance=i == last)

    async def _release_barrier_later(self) -> None:
        await asyncio.sleep(self.settings.feed.startup_barrier_s)
        self._open_barrier()

    # -- ingest ------------------------------------------------------------------------------------------

    def _on_frame(self, connection: int, frame: bytes, received_ns: int) -> None:
        self._frames.append(frame)
        self._times.append(received_ns)
        if len(self._frames) > self.settings.feed.max_pending_frames:
            self._frames.popleft()
            self._times.popleft()
            self.metrics.dropped_frames += 1
        self._wake.set()

    def _on_frames(self, connection: int, frames: list[bytes], received_ns: int) -> None:
        self._frames.extend(frames)
        self._times.extend(itertools.repeat(received_ns, len(frames)))
        over = len(self._frames) - self.settings.feed.max_pending_frames
        for _ in range(max(over, 0)):
            self._frames.popleft()
            self._times.popleft()
        self.metrics.dropped_frames += max(over, 0)
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Frames received but not yet decoded."""
        return len(self._frames)

    async def _decode_loop(self) -> None:
        """Decode in time slices: batches until the queue is empty or ``DECODE_SLICE_S`` has passed, then
        yield. One batch per turn of the loop would starve decoding behind five busy readers (throughput
        collapses under overload); an unbounded drain would stall pings and the API."""
        gather = self.settings.feed.decode_gather_s
        while self._running:
            await self._wake.wait()
            if gather > 0 and len(self._frames) < self.settings.feed.decode_batch_frames:
                # Let a few reads' frames gather: a batch costs a fixed numpy set-up whatever its size,
                # so at 50k frames/s one batch per socket read would spend most of the loop on set-up.
                await asyncio.sleep(gather)
            self._wake.clear()
            while self._frames:
                deadline = time.perf_counter() + DECODE_SLICE_S
                while self._frames and time.perf_counter() < deadline:
                    try:
                        self._decode_some()
                    except Exception:  # that batch is lost; the feed goes on
                        self.metrics.loop_failures["decoder"] += 1
                        log.exception("decoding a batch failed; its frames are dropped")
                await asyncio.sleep(0)  # let readers, pings and the API run between slices

    def _drain(self) -> None:
        while self._frames:
            self._decode_some()

    def _decode_some(self) -> None:
        """Decode one batch: at most ``decode_batch_frames`` frames and about ``decode_batch_bytes`` bytes,
        so a backlog of stacked frames is still cut into slices short enough to keep the loop responsive."""
        limit = min(len(self._frames), self.settings.feed.decode_batch_frames)
        budget = self.settings.feed.decode_batch_bytes
        popf, popt = self._frames.popleft, self._times.popleft
        frames: list[bytes] = []
        taken = 0
        while len(frames) < limit and taken < budget:
            frame = popf()
            frames.append(frame)
            taken += len(frame)
        oldest = popt()
        for _ in range(len(frames) - 1):
            popt()
        batch = decode_batch(frames)
        now = time.monotonic_ns()
        self.store.apply(batch, now, self._in_session())
        if self._on_batch is not None:
            self._on_batch(batch, now)
        m, stats = self.metrics, batch.stats
        m.batches += 1
        m.frames += stats.frames
        m.packets_by_code.update(stats.packets)
        m.skipped_by_code.update(stats.skipped)
        m.corrupt_frames += stats.corrupt_frames
        m.unknown_segment += stats.unknown_segment
        lag = (now - oldest) / 1e9
        m.decode_lag_last_s = lag
        m.decode_lag_max_s = max(m.decode_lag_max_s, lag)

    def _in_session(self) -> Array:
        """A bool per segment code: trading now (see :meth:`QuoteStore.apply`); worked out once a second."""
        second = int(time.monotonic())
        if self._session_mask is None or self._session_mask[0] != second:
            trading = self.trading()
            mask = np.zeros(256, dtype=bool)
            for segment, market in SEGMENT_MARKET.items():
                mask[int(segment)] = market in trading
            self._session_mask = (second, mask)
        return self._session_mask[1]

    # -- watchdog ----------------------------------------------------------------------------------------

    async def _watchdog_loop(self) -> None:
        """Recycle sockets that are stale, not merely quiet (:mod:`tickgate.feed.watchdog`)."""
        stale_after = self.settings.feed.stale_after_s
        interval = min(1.0, stale_after / 4)
        while self._running:
            await asyncio.sleep(interval)
            try:
                await self._recycle_stale(stale_after)
            except Exception:
                self.metrics.loop_failures["watchdog"] += 1
                log.exception("the stale-socket watchdog failed; it runs again in %.1f s", interval)

    async def _recycle_stale(self, stale_after: float) -> None:
        now = time.monotonic()
        loads = self.planner.loads()
        silent: list[tuple[int, float]] = []
        heard: list[tuple[int, float]] = []
        for status in self.pool.status():
            if status.state is not ConnectionState.UP or status.up_since is None or loads[status.id] == 0:
                continue
            last = max(status.last_data or 0.0, status.up_since)
            (silent if now - last > stale_after else heard).append((status.id, last))
        if not silent:
            self._set_quiet(frozenset())
            return
        actual = self.planner.actual()
        sockets = [
            SocketSilence(sid, frozenset(market_of(k.segment) for k in actual[sid]), last)
            for sid, last in (*silent, *heard)
        ]
        verdict = self.judge.judge(sockets, self.trading(), now)
        self._set_quiet(verdict.quiet)
        self.metrics.recycles_held += len(verdict.held)
        for sid in verdict.recycle:
            self.metrics.stale_recycles += 1
            try:
                await self.pool.recycle(sid, f"stale: no data for {now - dict(silent)[sid]:.0f}s")
            except Exception:  # this socket's recycle failed; the others are still handled
                self.metrics.loop_failures["recycle"] += 1
                log.exception("recycling stale connection %d failed", sid)

    def _set_quiet(self, quiet: frozenset[Market]) -> None:
        if quiet - self.quiet:
            self.metrics.quiet_alerts += 1
            log.warning(
                "every socket carrying %s is silent while it trades: a quiet or halted market, or the"
                " account's data stopped; not recycling",
                ", ".join(sorted(quiet - self.quiet)),
            )
        self.quiet = quiet

    # -- introspection -----------------------------------------------------------------------------------

    def connection_status(self) -> list[dict[str, Any]]:
        """Per connection: state, planned instruments, reconnects, last data age, last disconnect reason."""
        loads = self.planner.loads()
        now = time.monotonic()
        rows = []
        for status in self.pool.status():
            rows.append(
                {
                    "id": status.id,
                    "state": str(status.state),
                    "instruments": loads[status.id],
                    "connects": status.connects,
                    "reconnects": status.reconnects,
                    "frames": status.frames,
                    "last_data_age_s": None if status.last_data is None else round(now - status.last_data, 3),
                    "up_for_s": None if status.up_since is None else round(now - status.up_since, 3),
                    "last_disconnect": status.last_disconnect,
                    "next_attempt_in_s": status.next_attempt_in,
                }
            )
        return rows

    @property
    def alert(self) -> str | None:
        """A fatal account-level condition a human must fix (bad or expired token, data plan missing)."""
        fatal = self.pool.fatal
        return None if fatal is None else f"feed stopped retrying: {fatal}"

    @property
    def warning(self) -> str | None:
        """Every socket of a trading market silent at once: worth a look, not a reason to reconnect (nor to
        report the service unready: a quiet market is not a broken feed)."""
        if not self.quiet:
            return None
        return f"no data from {', '.join(sorted(self.quiet))} while it trades (a quiet or halted market?)"

    def all_up(self) -> bool:
        return all(s.state is ConnectionState.UP for s in self.pool.status())

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` until true or ``timeout`` (seconds) passes; for start-up and tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.02)
        return predicate()
