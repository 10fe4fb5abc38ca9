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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from tickgate.config import FeedLimits, Settings
from tickgate.dhan.batch import PacketBatch, decode_batch
from tickgate.dhan.client import (
    TOO_MANY_INSTRUMENTS,
    ConnectionState,
    ConnectionStatus,
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


@dataclass(frozen=True)
class FeedAccount:
    """One Dhan account's side of the feed: a name for operators, its credentials, its limits (its own
    reserved sockets). The planner's connections run account by account in this order."""

    name: str
    credentials: CredentialsProvider
    limits: FeedLimits


def _events_to(callback: Callable[[list[PlannerEvent]], None]) -> Callable[[PlanChange], None]:
    def forward(change: PlanChange) -> None:
        if change.events:
            callback(list(change.events))

    return forward


class SessionMask:
    """A bool per segment code: trading now (see :meth:`QuoteStore.apply`); worked out once a second. The
    gateway's feed and a replica's follower ask it for every batch they apply, so both mark the same
    quotes as traded in session."""

    def __init__(self, trading: Callable[[], frozenset[Market]]) -> None:
        self.trading = trading
        self._mask: tuple[int, Array] | None = None

    def __call__(self) -> Array:
        second = int(time.monotonic())
        if self._mask is None or self._mask[0] != second:
            trading = self.trading()
            mask = np.zeros(256, dtype=bool)
            for segment, market in SEGMENT_MARKET.items():
                mask[int(segment)] = market in trading
            self._mask = (second, mask)
        return self._mask[1]


class FeedManager:
    """Executes the planner's actions on one :class:`FeedPool` per account and folds received frames into a
    store. The planner's connection ids are global; each maps to (its account's pool, the pool's socket)."""

    def __init__(
        self,
        settings: Settings,
        planner: Planner,
        credentials: CredentialsProvider | Sequence[FeedAccount],
        *,
        store: QuoteStore | None = None,
        url: str | None = None,
        trading: Callable[[], frozenset[Market]] = lambda: frozenset(MARKETS),
        on_events: Callable[[list[PlannerEvent]], None] | None = None,
        on_batch: Callable[[PacketBatch, int], None] | None = None,
        orchestrator: Orchestrator | None = None,
        market_seconds: Callable[[], float] = time.monotonic,
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
        # The last stale recycles: (market seconds, socket, the markets it carried), for a run's audit of
        # the watchdog (a socket whose markets are all closed must never be recycled as stale).
        self.recycle_log: deque[tuple[float, int, frozenset[Market]]] = deque(maxlen=1_000)
        self._market_seconds = market_seconds
        self._in_session = SessionMask(trading)
        self._on_batch = on_batch  # after each batch is in the store: push fan-out, benchmarks
        # The frames of each batch, told right after the store applied them (the gateway's publisher numbers
        # them in that same step: tickgate.bus).
        self.on_applied: Callable[[list[bytes]], None] | None = None
        self.accounts: list[FeedAccount] = (
            list(credentials)
            if isinstance(credentials, Sequence)
            else [FeedAccount("default", credentials, settings.limits)]
        )
        shares = tuple(a.limits.feed_sockets for a in self.accounts)
        if planner.accounts != shares:
            raise ValueError(
                f"the planner plans on {planner.accounts} sockets per account, the feed has {shares}"
            )
        self.pools: list[FeedPool] = []
        self._where: list[tuple[FeedPool, int]] = []  # global connection id -> (pool, its socket id)
        for account in self.accounts:
            base = len(self._where)
            pool = FeedPool(
                url or settings.feed_url,
                account.credentials,
                limits=account.limits,
                settings=settings.feed,
                on_up=partial(self._pool_up, base),
                on_down=partial(self._pool_down, base),
                on_frame=self._on_frame,
                on_frames=self._on_frames,
                market_seconds=market_seconds,
            )
            self.pools.append(pool)
            self._where.extend((pool, local) for local in range(len(pool.connections)))
        self._frames: deque[bytes] = deque()
        self._times: deque[int] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()  # sockets of an account gone down, being closed
        self._running = False
        # Start-up barrier: connections that opened before the others are reported together.
        self._barrier_open = False
        self._waiting_up: list[int] = []

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def pool(self) -> FeedPool:
        """The first account's pool (the one-account case's only one)."""
        return self.pools[0]

    def statuses(self) -> list[tuple[int, ConnectionStatus]]:
        """Every socket's status with its global connection id, account by account."""
        out: list[tuple[int, ConnectionStatus]] = []
        for pool in self.pools:
            base = len(out)
            out.extend((base + s.id, s) for s in pool.status())
        return out

    async def start(self) -> None:
        self._running = True
        self._barrier_open = self.settings.feed.startup_barrier_s <= 0
        self._waiting_up = []
        self._tasks = [
            asyncio.create_task(self._decode_loop(), name="feed-decoder"),
            asyncio.create_task(self._watchdog_loop(), name="feed-watchdog"),
            asyncio.create_task(self._release_barrier_later(), name="feed-startup-barrier"),
        ]
        for pool in self.pools:
            await pool.start()

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*(pool.stop() for pool in self.pools))
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
            pool, local = self._where[action.connection]
            if pool.send(local, messages):
                self.metrics.requests_sent += len(messages)
            else:
                self.metrics.undelivered_actions += 1

    def plan(self, change: Callable[[Planner], PlanResult], cause: str = "feed") -> PlanResult:
        """Apply one planner call through the orchestrator: ``manager.plan(lambda p: p.rebalance())``."""
        return self.orchestrator.apply(cause, change)

    def _pool_up(self, base: int, local: int) -> None:
        self._on_up(base + local)

    def _pool_down(self, base: int, local: int, reason: DownReason) -> None:
        self._on_down(base + local, reason)

    def _on_up(self, connection: int) -> None:
        if not self._barrier_open:
            self._waiting_up.append(connection)
            if len(self._waiting_up) == len(self._where):
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
        account = self.planner.account_of(connection)
        if reason.fatal and len(self.accounts) > 1:
            self._account_down(account, connection, why)
            return
        carried = self.planner.loads()[connection]  # (actual() would copy the whole plan)
        self.orchestrator.apply(
            f"connection {connection} down: {why}", Planner.connection_down, connection, why
        )
        if reason.code == TOO_MANY_INSTRUMENTS:
            self._lower_ceiling(connection, carried)

    def _account_down(self, account: int, connection: int, why: str) -> None:
        """A reason that is the account's, not the socket's (its token refused: 807/808/809): every socket
        of that account goes in one re-plan, so nothing is moved onto a sibling about to fail too. Its
        sockets still open are closed (they reconnect when the token is good again); the other accounts
        take what they have room for, and past that Tier A waits, least recently used first."""
        name = self.accounts[account].name
        self.orchestrator.apply(
            f"account {name} down (connection {connection}: {why})",
            Planner.account_down,
            account,
            f"account {name}: {why}",  # each connection's audit row says whose it was
        )
        pool = self.pools[account]
        for status in pool.status():
            if status.state is ConnectionState.UP:
                task = asyncio.get_running_loop().create_task(pool.recycle(status.id, f"account down: {why}"))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _lower_ceiling(self, connection: int, carried: int) -> None:
        """Dhan answered 804 (too many instruments) on a socket tickgate kept within the limit: Dhan counts
        more than we do there. That socket carries a tenth of the limit less than it did (never below half
        the limit) until the next pre-open; the other sockets carry on, and what no longer fits is
        suspended, Tier A first."""
        per = self.limits.instruments_per_socket
        ceiling = max(per // 2, min(self.planner.ceilings()[connection], carried) - per // 10)
        self.orchestrator.apply(
            f"connection {connection}: Dhan answered 804, ceiling {ceiling}",
            Planner.set_ceiling,
            connection,
            ceiling,
            "804",
        )
        log.warning(
            "Dhan answered 804 (too many instruments) on connection %d, which carried %d: it now carries"
            " at most %d until the next pre-open",
            connection,
            carried,
            ceiling,
        )

    def reset_ceilings(self) -> None:
        """A new day: every socket may carry the full limit again (Dhan's count starts afresh)."""
        per = self.limits.instruments_per_socket
        for connection, ceiling in enumerate(self.planner.ceilings()):
            if ceiling < per:
                self.orchestrator.apply(
                    f"connection {connection}: ceiling restored",
                    Planner.set_ceiling,
                    connection,
                    None,
                    "new day",
                )

    def _open_barrier(self) -> None:
        """Report every socket that is up at once; rebalance only after the last of them."""
        if self._barrier_open:
            return
        self._barrier_open = True
        waiting, self._waiting_up = sorted(self._waiting_up), []
        if waiting:
            cause = f"connections {', '.join(map(str, waiting))} up"
            self.orchestrator.apply(cause, Planner.connections_up, waiting)

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
        if self.on_applied is not None:
            self.on_applied(frames)
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
        silent: dict[int, float] = {}
        rows: list[tuple[int, float, float]] = []
        for sid, status in self.statuses():
            if status.state is not ConnectionState.UP or status.up_since is None or loads[sid] == 0:
                continue
            last = max(status.last_data or 0.0, status.up_since)
            rows.append((sid, last, status.up_since))
            if now - last > stale_after:
                silent[sid] = last
        if not silent:
            self._set_quiet(frozenset())
            return
        actual = self.planner.actual()
        sockets = [
            SocketSilence(sid, frozenset(market_of(k.segment) for k in actual[sid]), last, up)
            for sid, last, up in rows
        ]
        verdict = self.judge.judge(sockets, self.trading(), now)
        self._set_quiet(verdict.quiet)
        self.metrics.recycles_held += len(verdict.held)
        carried = {s.id: s.markets for s in sockets}
        for sid in verdict.recycle:
            self.metrics.stale_recycles += 1
            self.recycle_log.append((self._market_seconds(), sid, carried[sid]))
            try:
                pool, local = self._where[sid]
                await pool.recycle(local, f"stale: no data for {now - silent[sid]:.0f}s")
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
        for sid, status in self.statuses():
            rows.append(
                {
                    "id": sid,
                    "account": self.accounts[self.planner.account_of(sid)].name,
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
        """An account-level condition: a 429 cool-off (Dhan blocked the client id, or its data plan lapsed),
        or a fatal one a human must fix (a bad or expired token); with several accounts, each one's, named."""
        notes = [
            note if len(self.pools) == 1 else f"account {self.accounts[a].name}: {note}"
            for a in range(len(self.pools))
            if (note := self.account_alert(a)) is not None
        ]
        return "; ".join(notes) or None

    def account_alert(self, account: int) -> str | None:
        pool = self.pools[account]
        blocked = pool.blocked_for
        if blocked > 0:
            return (
                f"Dhan answered 429 (client id blocked or data plan lapsed): the account cools off,"
                f" next connect in {blocked:.0f} s"
            )
        fatal = pool.fatal
        return None if fatal is None else f"feed stopped retrying: {fatal}"

    @property
    def warning(self) -> str | None:
        """Worth a look, not a reason to report the service unready: every socket of a trading market silent
        at once (a quiet market is not a broken feed), or sockets left to another program on the client id
        (the plan runs on fewer; what does not fit is suspended, Tier A first)."""
        notes = []
        if self.quiet:
            notes.append(
                f"no data from {', '.join(sorted(self.quiet))} while it trades (a quiet or halted market?)"
            )
        per = self.limits.instruments_per_socket
        lowered = [(c, x) for c, x in enumerate(self.planner.ceilings()) if x < per]
        if lowered:
            notes.append(
                "Dhan answered 804 (too many instruments): "
                + ", ".join(f"socket {c} carries at most {x:,}" for c, x in lowered)
                + " until the next pre-open"
            )
        for account, pool in zip(self.accounts, self.pools, strict=True):
            budget = pool.budget
            if budget.given_up:
                who = "" if len(self.pools) == 1 else f"account {account.name}: "
                notes.append(f"{who}holding {budget.size} of {budget.sockets} sockets: {budget.reason}")
        return "; ".join(notes) or None

    def all_up(self) -> bool:
        return all(s.state is ConnectionState.UP for _, s in self.statuses())

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` until true or ``timeout`` (seconds) passes; for start-up and tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.02)
        return predicate()
