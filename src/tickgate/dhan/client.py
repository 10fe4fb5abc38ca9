"""The network shell around the protocol: up to five feed WebSocket connections of one Dhan account.

This module only moves bytes. It opens sockets (never more than the account limit at any instant, at a
limited rate, closing before reopening), sends the JSON requests it is handed, passes every received frame
to a callback without decoding it (the reader must never block, or pongs stop and Dhan drops the socket),
and reports each connection going up or down with the reason. What to subscribe where is decided elsewhere
(:mod:`tickgate.planner`, wired together in :mod:`tickgate.feed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tickgate.config import FeedClientSettings, FeedLimits
from tickgate.dhan.budget import SocketBudget
from tickgate.dhan.fastws import FeedConnection
from tickgate.dhan.protocol import (
    FATAL_DISCONNECT_CODES,
    HEADER_SIZE,
    ResponseCode,
    decode_frame,
    disconnect_message,
    disconnect_reason,
)

TOO_MANY_CONNECTIONS = 805
TOO_MANY_INSTRUMENTS = 804
BLOCKED = 429  # at the handshake: the client id is blocked or its data plan lapsed
# Bytes asyncio reads from a socket per callback (its default is 256 KiB). websockets parses everything read
# in that callback, so a smaller read keeps five busy sockets from holding the loop for long stretches
# (pongs, decoding and the API wait behind them; docs/decisions/0002-measured-tradeoffs.md).
READ_CHUNK_BYTES = 64 * 1024


class RedactTokens(logging.Filter):
    """Secrets travel in query strings: Dhan's token in the feed's connect URL (websockets logs the request
    line at DEBUG), the PIN and TOTP in headless generation's (httpx logs every request's URL at INFO).
    Their values go before any handler sees the record."""

    _SECRET = re.compile(r"((?:token|pin|totp)=)[^&\s\"']+", re.IGNORECASE)
    _NAMES = ("token=", "pin=", "totp=")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        lowered = message.lower()
        if any(name in lowered for name in self._NAMES):
            record.msg, record.args = self._SECRET.sub(r"\1***", message), None
        return True


log = logging.getLogger(__name__)
WS_LOG = logging.getLogger("tickgate.dhan.ws")
"""The feed sockets' own logger (websockets logs through it), with the token redacted."""
WS_LOG.addFilter(RedactTokens())


def _limit_read_size(ws: ClientConnection) -> None:
    transport = ws.transport
    if hasattr(transport, "max_size"):
        transport.max_size = READ_CHUNK_BYTES


@dataclass(frozen=True, slots=True)
class Credentials:
    """A Dhan client id and access token. ``repr`` never shows the token."""

    client_id: str
    access_token: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """A short digest that tells two tokens apart without revealing either."""
        return hashlib.sha256(self.access_token.encode()).hexdigest()[:12]

    def redact(self, text: str) -> str:
        """``text`` with the token (and its URL-encoded form) replaced: for every log line and error."""
        for secret in {self.access_token, urlencode({"t": self.access_token})[2:]}:
            if secret:
                text = text.replace(secret, "***")
        return text


CredentialsProvider = Callable[[], Credentials | Awaitable[Credentials]]
"""Called before every connect, so a daily token rollover is picked up without a restart."""


def feed_url(base_url: str, credentials: Credentials) -> str:
    """Dhan v2 feed URL: the token travels in the query string; no auth message follows."""
    query = urlencode(
        {
            "version": "2",
            "token": credentials.access_token,
            "clientId": credentials.client_id,
            "authType": "2",
        }
    )
    return f"{base_url}{'&' if '?' in base_url else '?'}{query}"


class Backoff:
    """Exponential reconnect delay with jitter, reset after a stable period.

    Jitter keeps five sockets (or many tickgate processes) from reconnecting in lockstep; the reset
    means a socket that dropped once a night for a month is not waiting the cap after the 30th drop.
    Pure: time and randomness are passed in.
    """

    def __init__(self, initial: float, cap: float, stable: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap, self.stable = initial, cap, stable
        self.failures = 0
        self._rng = rng or random.Random()
        self._up_since: float | None = None

    def connected(self, now: float) -> None:
        self._up_since = now

    def disconnected(self, now: float) -> None:
        if self._up_since is not None and now - self._up_since >= self.stable:
            self.failures = 0
        self._up_since = None

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [d/2, d], d = min(cap, initial·2^failures)."""
        ceiling = min(self.cap, self.initial * (2**self.failures))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)


class ConnectionState(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    UP = "up"
    BACKOFF = "backoff"
    GIVEN_UP = "given_up"  # left to another program on the client id (tickgate.dhan.budget)
    FATAL = "fatal"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class DownReason:
    """Why a connection went down: a Dhan disconnect code, a WebSocket close, a connect failure, or us."""

    code: int | None
    text: str

    @property
    def fatal(self) -> bool:
        """The account cannot go on until someone acts (a token, the data plan). 804 (too many instruments)
        is one socket's count, not the account's: that socket reconnects and is planned again."""
        return self.code in FATAL_DISCONNECT_CODES and self.code != TOO_MANY_INSTRUMENTS

    def __str__(self) -> str:
        return f"{self.code}: {self.text}" if self.code is not None else self.text


@dataclass(slots=True)
class ConnectionStatus:
    """What ``/ws/status`` shows for one connection (no secrets in here)."""

    id: int
    state: ConnectionState = ConnectionState.IDLE
    connects: int = 0
    reconnects: int = 0
    frames: int = 0
    up_since: float | None = None
    last_data: float | None = None
    last_disconnect: str | None = None
    next_attempt_in: float | None = None


FrameSink = Callable[[int, bytes, int], None]
"""``(connection id, frame, receive time ns)``: must return immediately (queue, never decode)."""
FramesSink = Callable[[int, list[bytes], int], None]
"""The same for a read's worth of frames at once (the fast path hands frames over in batches)."""


class FeedPool:
    """Up to ``limits.feed_sockets`` connections of one account (its sockets less those reserved for other
    programs), each reconnecting on its own.

    Callbacks run on the event loop, synchronously: ``on_up(conn)`` right after a socket opened (only then
    may requests be sent: nothing is acknowledged before the socket is ready), ``on_down(conn, reason)``
    after it closed, ``on_frame`` for each binary frame.
    """

    def __init__(
        self,
        base_url: str,
        credentials: CredentialsProvider,
        *,
        limits: FeedLimits,
        settings: FeedClientSettings,
        on_up: Callable[[int], None],
        on_down: Callable[[int, DownReason], None],
        on_frame: FrameSink,
        on_frames: FramesSink | None = None,
        connections: int | None = None,
        rng: random.Random | None = None,
        market_seconds: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url
        self._credentials = credentials
        self.limits = limits
        self.settings = settings
        self._on_up, self._on_down, self._on_frame = on_up, on_down, on_frame
        self._on_frames = on_frames
        count = limits.feed_sockets if connections is None else connections
        if not 1 <= count <= limits.feed_sockets:
            raise ValueError(f"connections must be 1..{limits.feed_sockets}, got {count}")
        self._rng = rng or random.Random()
        self.connections = [_Connection(i, self) for i in range(count)]
        # Held for a socket's whole life, released only once it is closed: never a 6th socket,
        # even mid-restart.
        self._slots = asyncio.Semaphore(limits.feed_sockets)
        self._open_lock = asyncio.Lock()
        self._last_open = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.fatal: DownReason | None = None
        self._fatal_fingerprint: str | None = None
        self._fatal_cleared = asyncio.Event()
        self.reconnects_by_reason: Counter[str] = Counter()
        self.open_sockets = 0
        self.max_open_sockets = 0
        self.goodbyes = 0  # disconnect requests (code 12) sent before closing on purpose
        self.blocked_until = 0.0  # monotonic: the account cools off after a 429 until then
        self.blocks = 0  # 429 episodes
        self._block_streak = 0  # episodes since the last successful connect (the cool-off grows)
        # The sockets other programs on the client id leave us (tickgate.dhan.budget), on market seconds:
        # a virtual day's foreign program holds its sockets for market hours, not real ones.
        self._market_seconds = market_seconds
        self.budget = SocketBudget(
            count,
            settings.budget_strikes,
            settings.budget_window_s,
            settings.budget_regrow_after_s,
            settings.budget_regrow_max_s,
        )
        self._down_on_805: set[int] = set()
        # Told when a socket parks on a fatal reason (the token's owner refreshes at once on 807/808).
        # ``(reason, fingerprint of the refused token)``.
        self.on_fatal: Callable[[DownReason, str], None] | None = None
        self._budget_changed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        self._tasks = [asyncio.create_task(c.run(), name=f"feed-conn-{c.id}") for c in self.connections]
        self._tasks.append(asyncio.create_task(self._budget_loop(), name="feed-budget"))

    async def stop(self) -> None:
        """Close every socket politely and wait for the tasks to end."""
        self._stopping.set()
        self._fatal_cleared.set()
        self._budget_changed.set()
        for conn in self.connections:
            conn.wake()
            await conn.close("shutdown")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- what the manager calls --------------------------------------------------------------------------

    def send(self, connection: int, messages: list[str]) -> bool:
        """Queue requests on a connection, in order. ``False`` if it is not up (the planner will be told)."""
        return self.connections[connection].enqueue(messages)

    async def recycle(self, connection: int, why: str) -> None:
        """Close a connection on purpose (e.g. stale); it reconnects through the usual backoff."""
        await self.connections[connection].close(why)

    def status(self) -> list[ConnectionStatus]:
        return [c.status for c in self.connections]

    def clear_fatal(self) -> None:
        """An operator (or a new token) says: try again."""
        self.fatal = None
        self._fatal_fingerprint = None
        self._fatal_cleared.set()

    async def credentials(self) -> Credentials:
        value = self._credentials()
        if inspect.isawaitable(value):
            value = await value
        assert isinstance(value, Credentials)
        return value

    # -- internals used by connections ----------------------------------------------------------------

    def _block(self) -> None:
        """A 429 at the handshake is the account's, not the socket's: every socket cools off together, a
        little longer each time it happens again before a connection succeeds."""
        now = time.monotonic()
        if now < self.blocked_until:
            return  # another socket of the same episode
        self.blocks += 1
        cool = min(
            self.settings.block_cooloff_s * 2 ** (self._block_streak), self.settings.block_cooloff_max_s
        )
        self._block_streak += 1
        self.blocked_until = now + cool
        log.warning("Dhan answered 429 at the handshake: the account cools off for %.0f s", cool)

    @property
    def blocked_for(self) -> float:
        """Seconds the account still cools off after a 429 (0: not blocked)."""
        return max(0.0, self.blocked_until - time.monotonic())

    def _on_805(self, conn: int) -> None:
        """Another program took a socket of the client id: count it; enough of them give sockets up."""
        self._down_on_805.add(conn)
        given = self.budget.on_805(conn, set(self._down_on_805), self._market_seconds())
        if given:
            for socket in given:  # one may be sleeping out its 805 back-off: it waits in the budget now
                self.connections[socket].wake()
            log.warning(
                "another program holds sockets of this client id: tickgate now holds %d of %d (%s)",
                self.budget.size,
                self.budget.sockets,
                self.budget.reason,
            )

    async def _budget_loop(self) -> None:
        """Probe a given-up socket back once the account has been quiet long enough; never dies."""
        while not self.stopping:
            try:
                socket = self.budget.due(self._market_seconds())
                if socket is not None:
                    log.info("no 805 for a while: probing socket %d back", socket)
                    self._budget_changed.set()
            except Exception:
                log.exception("the socket budget's loop failed; it goes on")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._stopping.wait()

    async def _wait_in_budget(self, conn: int) -> None:
        """Wait while ``conn`` is given up (it comes back as a probe, with no further backoff)."""
        while conn in self.budget.given_up and not self.stopping:
            self._budget_changed.clear()
            await self._budget_changed.wait()

    def _set_fatal(self, reason: DownReason, fingerprint: str) -> None:
        # The listener hears of each token refused, not only the first: sockets opened before a renewal
        # still carry the old token, so the first 807 may name a token already replaced (nothing to do)
        # and the next one the token in use (renew now), or the pool would wait on it forever.
        news = self.fatal is None or fingerprint != self._fatal_fingerprint
        self.fatal = reason
        self._fatal_fingerprint = fingerprint
        self._fatal_cleared.clear()
        if news and self.on_fatal is not None:
            try:
                self.on_fatal(reason, fingerprint)
            except Exception:
                log.exception("the fatal-state listener failed")

    async def _wait_until_allowed(self) -> None:
        """Block while the account cools off after a 429, or is in a fatal state (the token re-read now and
        then: a new one clears it)."""
        while (wait := self.blocked_for) > 0 and not self.stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()
        while self.fatal is not None and not self.stopping:
            try:
                credentials = await self.credentials()
            except Exception:  # a provider failure is just "no new token yet"
                credentials = None
            if credentials is not None and credentials.fingerprint != self._fatal_fingerprint:
                self.clear_fatal()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.fatal_recheck_s):
                    await self._fatal_cleared.wait()

    @contextlib.asynccontextmanager
    async def _socket_slot(self) -> AsyncIterator[None]:
        async with self._slots:
            async with self._open_lock:  # rate-limit opens across the account
                gap = self._last_open + self.settings.open_interval_s - time.monotonic()
                if gap > 0:
                    await asyncio.sleep(gap)
                self._last_open = time.monotonic()
            yield


class _Connection:
    """One socket's life: connect, read until closed, back off, repeat."""

    def __init__(self, conn_id: int, pool: FeedPool) -> None:
        self.id = conn_id
        self.pool = pool
        self.status = ConnectionStatus(conn_id)
        self.ws: ClientConnection | None = None
        self._outbox: asyncio.Queue[str] | None = None
        self._disconnect: DownReason | None = None
        self._close_reason: str | None = None
        s = pool.settings
        self.backoff = Backoff(s.backoff_initial_s, s.backoff_cap_s, s.backoff_stable_s, pool._rng)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def enqueue(self, messages: list[str]) -> bool:
        if self._outbox is None or self.status.state is not ConnectionState.UP:
            return False
        for message in messages:
            self._outbox.put_nowait(message)
        return True

    async def close(self, why: str) -> None:
        """Close on purpose (shutdown, recycle) with Dhan's goodbye first: a disconnect request (code 12)
        has Dhan drop the socket's subscriptions at once, instead of holding them until it notices the
        socket gone (which could count against the account's next connection)."""
        ws = self.ws
        if ws is not None:
            self._close_reason = why
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await ws.send(disconnect_message())
                    self.pool.goodbyes += 1
                    await ws.close(code=1000, reason=why[:120])

    async def run(self) -> None:
        pool = self.pool
        while not pool.stopping:
            if self.id in pool.budget.given_up:
                self.status.state = ConnectionState.GIVEN_UP
                self.status.next_attempt_in = None
                await pool._wait_in_budget(self.id)
            await pool._wait_until_allowed()
            if pool.stopping:
                break
            reason = await self._one_session()
            if pool.stopping:
                break
            delay = self._delay_after(reason)
            self.status.state = ConnectionState.BACKOFF
            self.status.next_attempt_in = delay
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self.status.next_attempt_in = None
        self.status.state = ConnectionState.STOPPED

    def _delay_after(self, reason: DownReason) -> float:
        pool = self.pool
        if reason.code == TOO_MANY_CONNECTIONS:
            pool._on_805(self.id)
            if self.id in pool.budget.given_up:
                return 0.0  # it waits in the budget instead, for as long as it stays given up
            # Dhan warns that hammering after 805 may block the user: wait long, with jitter.
            base = pool.settings.backoff_805_s
            self.backoff.failures += 1
            return pool._rng.uniform(base, base * 1.5)
        return self.backoff.next_delay()

    async def _one_session(self) -> DownReason:
        pool = self.pool
        async with pool._socket_slot():
            self.status.state = ConnectionState.CONNECTING
            credentials = await pool.credentials()
            url = feed_url(pool.base_url, credentials)
            self._disconnect = None
            self._close_reason = None
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can return a connection that
                # completes at the moment the task is cancelled, losing the cancel (a stopped pool then
                # kept one socket open and its stop() waited forever).
                async with asyncio.timeout(pool.settings.connect_timeout_s + 1):
                    ws = await connect(
                        url,
                        ping_interval=pool.settings.ping_interval_s,
                        ping_timeout=pool.settings.ping_timeout_s,
                        close_timeout=pool.settings.close_timeout_s,
                        max_size=None,
                        max_queue=None,  # the reader drains into our own bounded queue instead
                        compression=None,
                        open_timeout=pool.settings.connect_timeout_s,
                        user_agent_header=None,
                        create_connection=FeedConnection,
                        logger=WS_LOG,
                    )
            except InvalidStatus as exc:
                status = exc.response.status_code
                reason = DownReason(None, f"connect refused: HTTP {status}")
                if status == BLOCKED:
                    reason = DownReason(
                        None, "connect refused: HTTP 429 (account blocked or data plan lapsed)"
                    )
                    pool._block()
                if status in (401, 403):
                    reason = DownReason(808, f"authentication rejected: HTTP {status}")
                    pool._set_fatal(reason, credentials.fingerprint)
                return self._record_down(reason, was_up=False)
            except Exception as exc:  # refused, reset, DNS, TLS, timeout: all mean retry later
                text = credentials.redact(f"connect failed: {type(exc).__name__}: {exc}")
                return self._record_down(DownReason(None, text), was_up=False)

            if pool.stopping:  # stopped while the handshake finished: this socket must not outlive the pool
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await ws.close()
                return DownReason(None, "closed by tickgate: shutdown")
            self.ws = ws
            _limit_read_size(ws)
            self._outbox = asyncio.Queue()
            pool.open_sockets += 1
            pool.max_open_sockets = max(pool.max_open_sockets, pool.open_sockets)
            now = time.monotonic()
            self.status.state = ConnectionState.UP
            self.status.connects += 1
            self.status.up_since = now
            self.status.last_data = None
            self.backoff.connected(now)
            pool._block_streak = 0  # a connection succeeded: the next 429 starts the cool-off afresh
            pool._down_on_805.discard(self.id)
            writer = asyncio.create_task(self._write(ws, self._outbox), name=f"feed-writer-{self.id}")
            try:
                pool._on_up(self.id)
                await self._read(ws)
            finally:
                writer.cancel()
                # gather: the writer's own cancellation is a result, ours (a stop meanwhile) still raises.
                await asyncio.gather(writer, return_exceptions=True)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await ws.close()
                self.ws = None
                self._outbox = None
                pool.open_sockets -= 1
            reason = self._down_reason(ws, credentials)
            if reason.fatal:
                pool._set_fatal(reason, credentials.fingerprint)
            return self._record_down(reason, was_up=True)

    def _record_down(self, reason: DownReason, *, was_up: bool) -> DownReason:
        pool = self.pool
        now = time.monotonic()
        self.status.state = ConnectionState.FATAL if reason.fatal else ConnectionState.BACKOFF
        self.status.up_since = None
        self.status.last_disconnect = str(reason)
        self.backoff.disconnected(now)
        key = str(reason.code) if reason.code is not None else reason.text.split(":")[0]
        pool.reconnects_by_reason[key] += 1
        if was_up:
            self.status.reconnects += 1
            pool._on_down(self.id, reason)
        return reason

    def _down_reason(self, ws: ClientConnection, credentials: Credentials) -> DownReason:
        if self._disconnect is not None:
            return self._disconnect
        if self._close_reason is not None:
            return DownReason(None, f"closed by tickgate: {self._close_reason}")
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None:
            return DownReason(None, credentials.redact(f"server closed: {rcvd.code} {rcvd.reason}".strip()))
        return DownReason(None, "connection lost")

    async def _read(self, ws: ClientConnection) -> None:
        """Take frames as fast as they come and hand them on; decoding happens elsewhere."""
        sink = self.pool._on_frame
        conn_id = self.id
        status = self.status
        clock = time.monotonic_ns

        def deliver(frame: bytes) -> None:
            now = clock()
            status.frames += 1
            status.last_data = now / 1e9
            if frame and frame[0] == ResponseCode.DISCONNECT and len(frame) >= HEADER_SIZE + 2:
                self._note_disconnect(frame)
            sink(conn_id, frame, now)

        def deliver_many(frames: list[bytes]) -> None:
            now = clock()
            status.frames += len(frames)
            status.last_data = now / 1e9
            for frame in frames:
                if frame and frame[0] == ResponseCode.DISCONNECT and len(frame) >= HEADER_SIZE + 2:
                    self._note_disconnect(frame)
            if sink_many is None:
                for frame in frames:
                    sink(conn_id, frame, now)
            else:
                sink_many(conn_id, frames, now)

        sink_many = self.pool._on_frames
        if isinstance(ws, FeedConnection):
            ws.on_frames = deliver_many  # a read's binary frames skip websockets' parser (see dhan.fastws)
        try:
            async for frame in ws:  # whatever the fast path hands to websockets
                if isinstance(frame, str):
                    continue  # Dhan's feed is binary; text would be a server-side error message
                deliver(frame)
        except ConnectionClosed:
            pass

    def _note_disconnect(self, frame: bytes) -> None:
        for packet in decode_frame(frame):
            code = getattr(packet, "reason_code", None)
            if code is not None:
                self._disconnect = DownReason(code, disconnect_reason(code))

    async def _write(self, ws: ClientConnection, outbox: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await outbox.get()
                await ws.send(message)
