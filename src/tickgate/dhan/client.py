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
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tickgate.config import FeedClientSettings, FeedLimits
from tickgate.dhan.fastws import FeedConnection
from tickgate.dhan.protocol import (
    FATAL_DISCONNECT_CODES,
    HEADER_SIZE,
    ResponseCode,
    decode_frame,
    disconnect_reason,
)

TOO_MANY_CONNECTIONS = 805
# Bytes asyncio reads from a socket per callback (its default is 256 KiB). websockets parses everything read
# in that callback, so a smaller read keeps five busy sockets from holding the loop for long stretches
# (pongs, decoding and the API wait behind them; docs/decisions/0002-measured-tradeoffs.md).
READ_CHUNK_BYTES = 64 * 1024


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
    FATAL = "fatal"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class DownReason:
    """Why a connection went down: a Dhan disconnect code, a WebSocket close, a connect failure, or us."""

    code: int | None
    text: str

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_DISCONNECT_CODES

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
    """Up to ``limits.sockets_per_account`` connections of one account, each reconnecting on its own.

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
    ) -> None:
        self.base_url = base_url
        self._credentials = credentials
        self.limits = limits
        self.settings = settings
        self._on_up, self._on_down, self._on_frame = on_up, on_down, on_frame
        self._on_frames = on_frames
        count = limits.sockets_per_account if connections is None else connections
        if not 1 <= count <= limits.sockets_per_account:
            raise ValueError(f"connections must be 1..{limits.sockets_per_account}, got {count}")
        self._rng = rng or random.Random()
        self.connections = [_Connection(i, self) for i in range(count)]
        # Held for a socket's whole life, released only once it is closed: never a 6th socket,
        # even mid-restart.
        self._slots = asyncio.Semaphore(limits.sockets_per_account)
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

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        self._tasks = [asyncio.create_task(c.run(), name=f"feed-conn-{c.id}") for c in self.connections]

    async def stop(self) -> None:
        """Close every socket politely and wait for the tasks to end."""
        self._stopping.set()
        self._fatal_cleared.set()
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

    def _set_fatal(self, reason: DownReason, fingerprint: str) -> None:
        self.fatal = reason
        self._fatal_fingerprint = fingerprint
        self._fatal_cleared.clear()

    async def _wait_until_allowed(self) -> None:
        """Block while the account is in a fatal state; re-read the token now and then (daily rollover)."""
        while self.fatal is not None and not self.stopping:
            try:
                credentials = await self.credentials()
            except Exception:  # a provider failure is just "no new token yet"
                credentials = None
            if credentials is not None and credentials.fingerprint != self._fatal_fingerprint:
                self.clear_fatal()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fatal_cleared.wait(), self.settings.fatal_recheck_s)

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
        ws = self.ws
        if ws is not None:
            self._close_reason = why
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1000, reason=why[:120]), 5)

    async def run(self) -> None:
        pool = self.pool
        while not pool.stopping:
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
                await asyncio.wait_for(self._wake.wait(), delay)
            self.status.next_attempt_in = None
        self.status.state = ConnectionState.STOPPED

    def _delay_after(self, reason: DownReason) -> float:
        pool = self.pool
        if reason.code == TOO_MANY_CONNECTIONS:
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
                ws = await asyncio.wait_for(
                    connect(
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
                    ),
                    pool.settings.connect_timeout_s + 1,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                reason = DownReason(None, f"connect refused: HTTP {status}")
                if status in (401, 403):
                    reason = DownReason(808, f"authentication rejected: HTTP {status}")
                    pool._set_fatal(reason, credentials.fingerprint)
                return self._record_down(reason, was_up=False)
            except Exception as exc:  # refused, reset, DNS, TLS, timeout: all mean retry later
                text = credentials.redact(f"connect failed: {type(exc).__name__}: {exc}")
                return self._record_down(DownReason(None, text), was_up=False)

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
            writer = asyncio.create_task(self._write(ws, self._outbox), name=f"feed-writer-{self.id}")
            try:
                pool._on_up(self.id)
                await self._read(ws)
            finally:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 5)
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
