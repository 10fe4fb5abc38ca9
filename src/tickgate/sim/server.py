"""A Dhan-compatible live-feed server on loopback: the thing tickgate's feed client is tested against.

This module is the thin server shell; the parts are :mod:`~tickgate.sim.core` (what Dhan holds and its
rules, pure), :mod:`~tickgate.sim.emitter` (market data out), :mod:`~tickgate.sim.faults`,
:mod:`~tickgate.sim.control` (plain HTTP: master and control API), :mod:`~tickgate.sim.universe` and
:mod:`~tickgate.sim.pricing`.

Nobody here can reach Dhan, so this server speaks its real protocol (every byte comes from
:mod:`tickgate.dhan.protocol`), enforces its limits (from :class:`tickgate.config.FeedLimits`, nowhere else)
and misbehaves on request. Three audiences shape it:

* **in-process tests** — ``async with Simulator(...) as sim`` on an ephemeral port; every socket's
  subscriptions, counts and close reason are kept as plain records (:meth:`Simulator.view`,
  :meth:`Simulator.state`), and every fault is a method;
* **other processes** (chaos tests, benchmarks) — ``tickgate simulate`` prints ``SIMULATOR ws://…`` and
  answers a JSON control API on the same port (``GET /control/...``) plus ``GET /master.csv``;
* **load** — packets are built in vectorised numpy batches on a timer and written as ready-made WebSocket
  frames, so the server outruns any client it is pointed at and pings still flow.

Behaviour where Dhan documents nothing (decided here, stated once):

* a request that does not parse (bad JSON, unknown code, binary frame) is counted and ignored — unless the
  simulator is built with ``strict_requests=True``, then it gets Disconnect 814 and the socket is closed;
* security ids absent from the master are ignored and counted (Dhan's behaviour), and do not count
  against the per-socket limit; an unsubscribe removes the instrument whatever mode it was subscribed in
  (a mode mismatch is counted);
* re-subscribing a subscribed instrument changes its mode; PrevClose is sent only for instruments new to
  the socket;
* missing/wrong ``version``/``authType`` or no token → 808; unknown token → 809; expired token → 807;
  token of another client id → 810. A Disconnect packet is followed by a normal close (1000);
* a socket that has not answered a ping for ``ping_timeout`` seconds is closed with 1011, as websockets
  itself would; a client too slow to read (``max_buffer`` bytes queued) is skipped, not buffered forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.protocol import State

from tickgate.clock import Clock
from tickgate.config import FeedLimits, get_settings
from tickgate.dhan.client import RedactTokens
from tickgate.dhan.protocol import (
    DisconnectRequest,
    ExchangeSegment,
    FeedMode,
    InstrumentKey,
    RequestError,
    ResponseCode,
    disconnect_reason,
    encode_disconnect,
    parse_request,
)
from tickgate.schedule.calendar import TradingCalendar
from tickgate.schedule.sessions import MarketSessions
from tickgate.sim.auth import PATHS as AUTH_PATHS
from tickgate.sim.auth import AuthApi
from tickgate.sim.connection import SimConnection, SimSocket
from tickgate.sim.control import ControlApi
from tickgate.sim.core import BreachKind, TokenBook, sockets_to_evict
from tickgate.sim.emitter import CorruptMode, Emitter, ws_frame
from tickgate.sim.faults import Faults
from tickgate.sim.http import HttpShell
from tickgate.sim.pricing import Array, AssetClass, PriceModel, fallback_price
from tickgate.sim.records import Breach, SimulatorStats, SocketRecord, keys_json
from tickgate.sim.rest import Answer, MarketQuoteApi, QuoteValues
from tickgate.sim.universe import RegistryUniverse, StaticUniverse, Universe

logger = logging.getLogger(__name__)

PrevCloseMode = Literal["code6", "indices"]


class _HandshakeNoise(logging.Filter):
    """Drop websockets' tracebacks for requests that are not WebSocket handshakes (HEAD, POST, probes,
    refused connections): expected on a port that also answers plain HTTP. Handler errors still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "opening handshake failed"


ws_logger = logging.getLogger(f"{__name__}.ws")
ws_logger.addFilter(RedactTokens())  # the connect request line carries the token
ws_logger.addFilter(_HandshakeNoise())

DEFAULT_TOKEN = "sim-access-token"
DEFAULT_CLIENT_ID = "1100000001"
DISCONNECT_CLOSE_CODE = 1000
KEEPALIVE_CLOSE_CODE = 1011


class Simulator:
    """The fake Dhan feed server (see the module docstring); record times are epochs of its clock.

    ``master`` (path or bytes) is served at ``/master.csv`` and, unless ``universe`` is given, loaded with
    the instrument registry to decide which ids exist; with neither, :meth:`StaticUniverse.sample` is used.
    ``credentials`` maps client id → valid access token (default: ``{client_id: token}``). ``limits``
    defaults to the settings' :class:`FeedLimits`. ``rate`` is market packets per second across all
    sockets, spread over subscribed instruments; ``stack`` packets share one frame. ``tick_interval`` is
    the batch period. ``max_buffer`` bytes queued to a slow client make it skip batches (counted as
    withheld). ``oi_share`` of quote/full draws on derivatives become OI packets. ``clock`` (the one clock,
    default: the configured one) feeds LTT, time to expiry and every record time, and ``today`` (default: the
    clock's date) is the day the universe counts expiries from; ``vol_scale`` speeds up the random walk.
    """

    def __init__(
        self,
        *,
        universe: Universe | None = None,
        master: Path | str | bytes | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        client_id: str = DEFAULT_CLIENT_ID,
        credentials: Mapping[str, str] | None = None,
        limits: FeedLimits | None = None,
        rate: float = 1_000.0,
        stack: int = 1,
        tick_interval: float = 0.01,
        ping_interval: float = 10.0,
        ping_timeout: float = 40.0,
        close_timeout: float = 5.0,
        corrupt_pct: float = 0.0,
        corrupt_mode: CorruptMode = "mixed",
        strict_requests: bool = False,
        latency_probe: bool = False,
        oi_share: float = 0.1,
        max_buffer: int = 4 * 2**20,
        seed: int = 0,
        vol_scale: float = 1.0,
        history_limit: int = 10_000,
        journal_limit: int = 10_000,
        today: dt.date | None = None,
        clock: Clock | None = None,
        market_hours: bool = True,
        calendar: TradingCalendar | None = None,
        liquidity_width: float = 0.0,
        prev_close: PrevCloseMode = "code6",
        snapshot_after_hours: bool = False,
        token_lifetime_s: float | None = None,
        logins: Mapping[str, tuple[str, str]] | None = None,
        rest_port: int = 0,
    ) -> None:
        self.clock = clock if clock is not None else get_settings().make_clock()
        today = today or self.clock.today()
        self.host = host
        self.requested_port = port
        self.limits = limits if limits is not None else get_settings().limits
        self.master_bytes: bytes | None = None
        self.master_path: Path | None = None
        if master is not None:
            if isinstance(master, bytes):
                self.master_bytes = master
            else:
                self.master_path = Path(master)
                self.master_bytes = self.master_path.read_bytes()
        if universe is None:
            universe = (
                RegistryUniverse.load(self.master_bytes, today)
                if self.master_bytes is not None
                else StaticUniverse.sample(today)
            )
        self.universe = universe
        self.stats = SimulatorStats()
        self.breaches: list[Breach] = []
        self.history: deque[SocketRecord] = deque(maxlen=history_limit)
        self.journal: deque[tuple[int, float, int, str, str, tuple[InstrumentKey, ...]]] = deque(
            maxlen=journal_limit
        )
        self.model = PriceModel(seed=seed, vol_scale=vol_scale, clock=self.clock.timestamp)
        # Benchmarks only: quote/full packets carry their send time (µs mod 2^32) in ``volume``.
        self.model.stamp_volume = latency_probe
        self.rng = np.random.default_rng(seed + 1)
        self.client_id = client_id
        self.tokens = TokenBook.of(credentials or {client_id: token})
        # The account's side of tokens: each lives ``token_lifetime_s`` of the market clock (None: forever,
        # the default for load tests); on expiry live sockets get 807. ``logins``: client id → (PIN, TOTP
        # secret) for headless generation.
        self.tokens.logins.update(logins or {})
        # Other programs on the same client ids: when each of their sockets opened (see add_foreign).
        self.foreign: dict[str, list[float]] = {}
        self._foreign_until: dict[str, float] = {}
        self._foreign_reconnect_s = 5.0
        self.auth_api = AuthApi(
            self.tokens, lifetime_s=token_lifetime_s, plan_active=lambda cid: not self.faults.blocked(cid)
        )
        for issued in list(self.tokens.valid):
            self.tokens.issue(issued, self.tokens.valid[issued], self.auth_api.expiry(self.clock.timestamp()))
        self.emitter = Emitter(
            self.model,
            self.rng,
            self.stats,
            self.clock,
            rate=rate,
            stack=stack,
            oi_share=oi_share,
            max_buffer=max_buffer,
        )
        self.faults = Faults(self, history_limit)
        self.tick_interval = tick_interval
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        if corrupt_pct:
            self.faults.corrupt(corrupt_pct, corrupt_mode)
        self.strict_requests = strict_requests
        # The market day: instruments trade only in their segment's continuous session (on the clock), and
        # with ``liquidity_width`` far strikes trade rarely. ``market_hours=False``: always open (benches).
        self.sessions = MarketSessions(calendar or TradingCalendar.load()) if market_hours else None
        self.emitter.liquidity_width = liquidity_width
        # Where the previous close comes from, as the sources disagree (both must work for a client):
        # "code6": a PrevClose packet on subscribe for every instrument, Quote/Full close 0 during the day;
        # "indices": PrevClose for IDX_I only, the previous close in every Quote/Full ``close``.
        if prev_close not in ("code6", "indices"):
            raise ValueError(f"prev_close must be code6 or indices, got {prev_close!r}")
        self.prev_close_mode: PrevCloseMode = prev_close
        self.model.close_is_prev_close = prev_close == "indices"
        # Whether a subscribe outside the instrument's session answers with one packet of the subscribed
        # mode holding the last values (some brokers' feeds do; Dhan's documentation does not say): off,
        # a client must not count on it (the REST backfill prices those legs instead).
        self.snapshot_after_hours = snapshot_after_hours
        # Dhan's REST market quote on a port of its own (websockets' HTTP side takes GET only).
        self.quote_api = MarketQuoteApi(self.tokens, self.limits, self.rest_quotes)
        self._rest = HttpShell(self._rest_request)
        self._rest_port = rest_port
        self._open_segments: tuple[int, Array] | None = None  # (clock second, bool per segment code)
        self.http = ControlApi(self)

        self.journal_seq = 0
        self._sockets: dict[int, SimSocket] = {}  # every live connection, authenticated or not
        self._next_id = 1
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._rate_mark = (0.0, 0)
        self.port = 0

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> Simulator:
        """Listen (port 0 → an ephemeral port, see :attr:`port`) and start the stream and watchdog loops."""
        if self._server is not None:
            return self
        self._server = await serve(
            self._handler,
            self.host,
            self.requested_port,
            process_request=self.http.process_request,
            compression=None,  # frames are prebuilt: no per-message deflate
            ping_interval=None,  # keepalive is ours (stall/silent faults need control over it)
            ping_timeout=None,
            close_timeout=self.close_timeout,
            max_size=2**20,
            create_connection=SimConnection,
            logger=ws_logger,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.port = int(sockname[1])
        await self._rest.start(self.host, self._rest_port)
        self._loops = [
            asyncio.create_task(self._stream_loop(), name="simulator-stream"),
            asyncio.create_task(self._watchdog_loop(), name="simulator-watchdog"),
        ]
        return self

    async def close(self) -> None:
        """Stop streaming, close every socket (1001 going away) and the listener."""
        if self._server is None:
            return
        for task in self._loops:
            task.cancel()
        await self._rest.close()
        for sock in list(self._sockets.values()):
            for handle in sock.timers.values():
                handle.cancel()
            if not sock.closing:
                sock.closing = True
                sock.record.close_reason = sock.record.close_reason or "shutdown"
            if sock.ws.silent:
                sock.ws.transport.abort()
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(asyncio.shield(self._server.wait_closed()), self.close_timeout + 1)
        except TimeoutError:  # a client that never reads can hold a close handshake forever
            for sock in list(self._sockets.values()):
                sock.ws.transport.abort()
            await self._server.wait_closed()
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        self._server = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Base WebSocket URL (``ws://host:port``): the ``feed_url`` setting of a client under test."""
        return f"ws://{self.host}:{self.port}"

    # The plain-HTTP side on the feed port (control API, ``/master.csv``), and Dhan's REST market quote on a
    # port of its own (``{rest_url}/v2/marketfeed/quote``: what ``https://api.dhan.co`` is to Dhan's feed).
    http_url = property(lambda self: f"http://{self.host}:{self.port}")
    master_url = property(lambda self: f"{self.http_url}/master.csv")
    rest_url = property(lambda self: f"http://{self.host}:{self._rest.port}")

    def feed_url(self, token: str | None = None, client_id: str | None = None, **extra: str) -> str:
        """A full Dhan-style connect URL (defaults: the first valid credentials)."""
        if token is None or client_id is None:
            first_token, first_client = self.tokens.first(self.client_id)
            token = first_token if token is None else token
            client_id = first_client if client_id is None else client_id
        query = {"version": "2", "token": token, "clientId": client_id, "authType": "2", **extra}
        return f"{self.url}/?{urlencode(query)}"

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------- records

    def open_sockets(self, client_id: str | None = None) -> list[SocketRecord]:
        """Records of authenticated sockets not being closed, oldest first."""
        return [s.record for s in self.live(client_id)]

    def live(self, client_id: str | None = None) -> list[SimSocket]:
        """Sockets that count against the limits: admitted, not being closed by us, and not closing from
        the client's side either (a client that has had its close frame answered may reopen at once)."""
        return [
            s
            for s in self._sockets.values()
            if s.admitted
            and not s.closing
            and s.ws.protocol.state is State.OPEN
            and (client_id is None or s.record.client_id == client_id)
        ]

    def socket(self, socket_id: int) -> SocketRecord:
        for record in self.history:
            if record.id == socket_id:
                return record
        raise KeyError(f"no socket {socket_id}")

    def view(self) -> dict[int, dict[InstrumentKey, FeedMode]]:
        """What each open socket is subscribed to right now: ``{socket_id: {key: mode}}``."""
        return {s.record.id: dict(s.record.subscriptions) for s in self.live()}

    def view_json(self) -> dict[str, dict[str, str]]:
        return {str(sid): keys_json(subs) for sid, subs in self.view().items()}

    def last_values(self, key: InstrumentKey) -> dict[str, float | int] | None:
        """The latest values sent for ``key`` (f32-rounded like the wire): what a quote store should hold."""
        return self.model.snapshot(key)

    def journal_json(self, since: int = 0) -> list[dict[str, Any]]:
        """Subscription changes with sequence number > ``since`` (ops: subscribe, unsubscribe, close)."""
        return [
            {"seq": seq, "at": at, "socket": sid, "op": op, "mode": mode, "keys": [str(k) for k in keys]}
            for seq, at, sid, op, mode, keys in self.journal
            if seq > since
        ]

    def state(self, *, subscriptions: bool = True, history: bool = True) -> dict[str, Any]:
        """Everything recorded, JSON-able (``GET /control/state``)."""
        return {
            "url": self.url,
            "time": self.clock.timestamp(),
            "clock": self.clock.describe(),
            "config": {
                "rate": self.emitter.rate,
                "stack": self.emitter.stack,
                "corrupt_pct": self.emitter.corrupt_pct,
                "corrupt_mode": self.emitter.corrupt_mode,
                "tick_interval": self.tick_interval,
                "ping_interval": self.ping_interval,
                "ping_timeout": self.ping_timeout,
                "strict_requests": self.strict_requests,
                "market_hours": self.sessions is not None,
                "prev_close": self.prev_close_mode,
                "snapshot_after_hours": self.snapshot_after_hours,
                "liquidity_width": self.emitter.liquidity_width,
                "limits": self.limits.model_dump(),
                "client_ids": self.tokens.client_ids(),
            },
            "trading": sorted(self.sessions.continuous(self.clock.now())) if self.sessions else "always",
            "refusing_for": self.faults.refusing_for,
            "refuse_mode": self.faults.refuse_mode,
            "sockets": {str(s.id): s.to_json(subscriptions=subscriptions) for s in self.open_sockets()},
            "history": [r.to_json(subscriptions=False) for r in self.history] if history else [],
            "max_sockets_per_client": dict(self.stats.max_sockets_per_client),
            "max_instruments_per_socket": self.stats.max_instruments_per_socket,
            "max_instruments_per_message": self.stats.max_instruments_per_message,
            "breaches": [b.to_json() for b in self.breaches],
            "counters": self.stats.to_json(),
            "faults": list(self.faults.log),
            "journal_seq": self.journal_seq,
            "rest_url": self.rest_url,
            "rest": self.quote_api.stats.to_json(),
            "auth": self.auth_api.stats.to_json(),
        }

    async def wait_for(
        self, predicate: Callable[[], object], timeout: float = 5.0, message: str = "condition"
    ) -> None:
        """Poll ``predicate`` until truthy; ``TimeoutError`` naming ``message`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise TimeoutError(f"simulator: timed out after {timeout}s waiting for {message}")
            await asyncio.sleep(0.005)

    def _journal(self, sock: SimSocket, op: str, mode: str, keys: tuple[InstrumentKey, ...]) -> None:
        self.journal_seq += 1
        self.journal.append((self.journal_seq, self.clock.timestamp(), sock.record.id, op, mode, keys))

    def _breach(self, kind: BreachKind, sock: SimSocket, value: int, limit: int) -> None:
        breach = Breach(kind, self.clock.timestamp(), sock.record.client_id, sock.record.id, value, limit)
        self.breaches.append(breach)
        logger.warning("limit breach: %s", breach)

    # ---------------------------------------------------------------------------------- market

    def open_segments(self) -> Array | None:
        """A bool per segment code: which segments trade now (None: all, without market hours). Worked out
        once per second of the clock: sessions change on the minute."""
        if self.sessions is None:
            return None
        second = int(self.clock.timestamp())
        cached = self._open_segments
        if cached is None or cached[0] != second:
            mask = np.zeros(256, dtype=bool)
            for segment in self.sessions.trading_segments(self.clock.now()):
                mask[int(segment)] = True
            cached = self._open_segments = (second, mask)
        return cached[1]

    def set_rate(self, rate: float, stack: int | None = None) -> None:
        """Market packets per second across all sockets (0 pauses streaming) and packets per frame."""
        self.emitter.set_rate(rate, stack)

    def set_price(self, underlying: str, price: float) -> None:
        """Move an underlying (and so its futures and options) to ``price`` now."""
        self.model.set_underlying_price(underlying, price)

    # ---------------------------------------------------------------------------------- connections

    def mark_closing(self, sock: SimSocket, reason: str, code: int | None = None) -> bool:
        """First close decision wins; returns False if the socket was already on its way out."""
        if sock.closing:
            return False
        sock.closing = True
        sock.record.close_reason = reason
        if code is not None:
            sock.record.disconnect_code = code
        return True

    def kick(self, sock: SimSocket, code: int) -> None:
        """Send Disconnect(``code``) and close: how Dhan ends a socket it objects to."""
        if not self.mark_closing(sock, f"disconnect:{code}", code):
            return
        if sock.ws.silent:
            sock.ws.silent = False
        if sock.ws.protocol.state is State.OPEN:
            frame = ws_frame(encode_disconnect(code))
            sock.ws.transport.write(frame)
            sock.record.packets_sent[ResponseCode.DISCONNECT] += 1
            sock.record.frames_sent += 1
            sock.record.bytes_sent += len(frame)
            self.stats.packets_sent[ResponseCode.DISCONNECT] += 1
        self._spawn(sock.ws.close(DISCONNECT_CLOSE_CODE, disconnect_reason(code)), f"kick-{sock.record.id}")

    def _authenticate(self, request: Request) -> tuple[str, str, int | None]:
        """(client id, token, Disconnect reason or None)."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
        self.expire_due_tokens()  # at this instant of the market clock, not at the next sweep
        return self.tokens.check(query)

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, SimConnection)
        assert ws.request is not None
        client_id, token, failure = self._authenticate(ws.request)
        remote = ws.remote_address
        record = SocketRecord(
            self._next_id, client_id, f"{remote[0]}:{remote[1]}" if remote else "?", self.clock.timestamp()
        )
        self._next_id += 1
        sock = SimSocket(record, ws, token, self.limits)
        self._sockets[record.id] = sock
        self.history.append(record)
        self.stats.connections += 1
        try:
            if failure is not None:
                self.stats.auth_failures[failure] += 1
                self.kick(sock, failure)
                record.close_reason = f"auth:{failure}"
                await ws.wait_closed()
                return
            record.authenticated = True
            self._admit(sock)
            sock.keepalive = asyncio.create_task(self._keepalive(sock), name=f"keepalive-{record.id}")
            async for message in ws:
                if not sock.closing:
                    self._on_message(sock, message)
                await asyncio.sleep(0)  # queued requests are handled back to back otherwise: let pings run
        except ConnectionClosed:
            pass
        finally:
            await self._finalize(sock)

    def _admit(self, sock: SimSocket) -> None:
        """Count the socket against its client id; past the limit the *oldest* ones get 805 (another
        program's sockets on the same client id, :meth:`add_foreign`, count and can be the oldest)."""
        cid = sock.record.client_id
        sock.admitted = True
        sock.last_pong = asyncio.get_running_loop().time()
        self._over_limit(cid, newcomer=sock)

    def _over_limit(self, cid: str, newcomer: SimSocket | None = None) -> None:
        """Dhan's rule once a socket of ``cid`` opened: past the limit, the oldest go with 805, whether they
        are ours to see (:class:`SimSocket`) or another program's (foreign, dropped and reconnecting)."""
        peers = [s for s in self.live(cid) if s is not newcomer]
        self.expire_foreign()  # judged at this instant of the market clock, not at the watchdog's next tick
        foreign = self.foreign.get(cid, [])
        count = len(peers) + len(foreign) + (newcomer is not None)
        stats = self.stats
        own = len(peers) + (newcomer is not None)
        stats.max_sockets_per_client[cid] = max(stats.max_sockets_per_client.get(cid, 0), own)
        stats.max_sockets_with_foreign = max(stats.max_sockets_with_foreign, count)
        evict = sockets_to_evict(count - 1, self.limits)
        if not evict:
            return
        if newcomer is not None and own > self.limits.sockets_per_account:
            # The client itself holds more than the limit. (Its socket crowding out another program's is
            # Dhan's rule at work, not a breach: the client cannot see the other program's sockets.)
            self._breach("sockets_per_account", newcomer, own, self.limits.sockets_per_account)
        aged: list[tuple[float, SimSocket | None, int]] = [(s.record.opened_at, s, -1) for s in peers]
        aged += [(opened, None, i) for i, opened in enumerate(foreign)]
        aged.sort(key=lambda entry: entry[0])
        dropped_foreign = []
        for _opened, ours, index in aged[:evict]:
            if ours is not None:
                self.kick(ours, 805)
                if newcomer is None:
                    stats.foreign_805s += 1  # a foreign socket's arrival dropped one of the client's
            else:
                dropped_foreign.append(index)
        for index in sorted(dropped_foreign, reverse=True):
            foreign.pop(index)
            stats.foreign_dropped += 1
            self._foreign_return(cid)

    def add_foreign(
        self, client_id: str, count: int = 1, seconds: float = 3_600.0, reconnect_s: float = 5.0
    ) -> None:
        """Another program on ``client_id`` opens ``count`` sockets for ``seconds`` (market clock) and, when
        Dhan drops one with 805, opens it again after ``reconnect_s`` (real seconds), as a charting tool
        would: the ping-pong a well-behaved client must not feed."""
        until = self.clock.timestamp() + seconds
        self._foreign_until[client_id] = until
        self._foreign_reconnect_s = reconnect_s
        for _ in range(count):
            self.foreign.setdefault(client_id, []).append(self.clock.timestamp())
            self._over_limit(client_id)

    def _foreign_return(self, cid: str) -> None:
        def back() -> None:
            if self.clock.timestamp() < self._foreign_until.get(cid, 0.0):
                self.foreign.setdefault(cid, []).append(self.clock.timestamp())
                self._over_limit(cid)

        asyncio.get_running_loop().call_later(self._foreign_reconnect_s, back)

    def expire_foreign(self) -> None:
        """Foreign programs whose time is up close their sockets."""
        now = self.clock.timestamp()
        for cid, until in list(self._foreign_until.items()):
            if now >= until:
                self.foreign.pop(cid, None)
                del self._foreign_until[cid]

    async def _finalize(self, sock: SimSocket) -> None:
        record = sock.record
        if sock.keepalive is not None:
            sock.keepalive.cancel()
        for handle in sock.timers.values():
            handle.cancel()
        sock.timers.clear()
        if not sock.closing:
            sock.closing = True
            record.close_reason = "client_closed"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sock.ws.wait_closed(), self.close_timeout + 1)
        record.close_code = sock.ws.close_code if sock.ws.close_code is not None else 1006
        record.closed_at = self.clock.timestamp()
        if record.subscriptions:  # (a disconnect request has already dropped and counted them)
            self._journal(sock, "close", "", ())
            record.final_subscriptions = sock.book.clear()
        record.stalled = record.silent = False
        self._sockets.pop(record.id, None)

    async def _keepalive(self, sock: SimSocket) -> None:
        """Ping every ``ping_interval`` (not while silent); the watchdog enforces ``ping_timeout``."""
        loop = asyncio.get_running_loop()

        def on_pong(waiter: asyncio.Future[float]) -> None:
            if not waiter.cancelled() and waiter.exception() is None:
                sock.last_pong = loop.time()
                sock.record.pongs_received += 1

        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while not sock.closing:
                await asyncio.sleep(self.ping_interval)
                if sock.closing or sock.ws.silent:
                    continue
                waiter = await sock.ws.ping()
                sock.record.pings_sent += 1
                waiter.add_done_callback(on_pong)  # type: ignore[attr-defined]

    async def _watchdog_loop(self) -> None:
        """Close sockets whose last pong is older than ``ping_timeout`` (Dhan's 40 s rule)."""
        loop = asyncio.get_running_loop()
        period = max(0.01, min(1.0, self.ping_timeout / 4, self.ping_interval))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            self.expire_due_tokens()
            self.expire_foreign()
            for sock in self.live():
                if sock.ws.silent:
                    sock.last_pong = now  # we sent no pings: nothing to answer
                elif now - sock.last_pong > self.ping_timeout and self.mark_closing(
                    sock, "keepalive_timeout"
                ):
                    self._spawn(
                        sock.ws.close(KEEPALIVE_CLOSE_CODE, "keepalive ping timeout"),
                        f"timeout-{sock.record.id}",
                    )

    # ------------------------------------------------------------------------------------- requests

    def _malformed(self, sock: SimSocket, reason: str) -> None:
        sock.record.malformed += 1
        sock.record.last_error = reason
        self.stats.malformed += 1
        if self.strict_requests:
            self.kick(sock, 814)

    def _on_message(self, sock: SimSocket, message: str | bytes) -> None:
        record = sock.record
        record.messages += 1
        if isinstance(message, bytes):
            self._malformed(sock, "binary frame from client")
            return
        try:
            request = parse_request(message)
        except RequestError as exc:
            self._malformed(sock, str(exc))
            return
        if isinstance(request, DisconnectRequest):
            self.stats.goodbyes += 1
            self.mark_closing(sock, "client_request")
            if record.subscriptions:
                self._journal(sock, "close", "", ())
                record.final_subscriptions = sock.book.clear()
            self._spawn(sock.ws.close(), f"bye-{record.id}")
            return
        n = len(request.keys)
        record.instruments_received += n
        record.max_message_instruments = max(record.max_message_instruments, n)
        self.stats.max_instruments_per_message = max(self.stats.max_instruments_per_message, n)
        if n > self.limits.instruments_per_message:  # refused before the master is consulted
            self._breach("instruments_per_message", sock, n, self.limits.instruments_per_message)
            self.kick(sock, 804)
            return
        if request.subscribe:
            record.subscribe_messages += 1
        else:
            record.unsubscribe_messages += 1
        known = self._resolve(sock, request.keys)
        done = sock.book.apply(request.subscribe, request.mode, known, sent=n)
        if request.subscribe:
            sock.stream.subscribed([(self._slot(k), old) for k, old in done.changed], done.mode, self.model)
            record.max_subscriptions = sock.book.max_size
            self.stats.max_instruments_per_socket = max(self.stats.max_instruments_per_socket, done.size)
            self._journal(sock, "subscribe", done.mode.name, tuple(known))
            if done.breach is not None:
                self._breach(done.breach, sock, done.size, self.limits.instruments_per_socket)
                self.kick(sock, 804)
                return
            new = done.new
            if self.prev_close_mode == "indices":
                new = [k for k in new if k.segment is ExchangeSegment.IDX_I]
            if new and not record.stalled:
                prev_close = self.model.packets(ResponseCode.PREV_CLOSE, self.model.slots_of(new))
                self.emitter.send_packets(sock, prev_close)
            if self.snapshot_after_hours and done.new and not record.stalled:
                self._snapshot_closed(sock, done.new, done.mode)
        else:
            sock.stream.unsubscribed([(self._slot(k), old) for k, old in done.removed])
            record.mode_mismatches += done.mismatches
            self.stats.mode_mismatches += done.mismatches
            self._journal(sock, "unsubscribe", done.mode.name, tuple(k for k, _ in done.removed))

    def _snapshot_closed(self, sock: SimSocket, keys: list[InstrumentKey], mode: FeedMode) -> None:
        """One packet of ``mode`` with the last values for each of ``keys`` whose segment is not trading."""
        open_now = self.open_segments()  # None: always open, the stream prices them
        keys = [k for k in keys if not open_now[int(k.segment)]] if open_now is not None else []
        if keys:
            self._send_current(sock, keys, mode)
            self.stats.snapshots_after_hours += len(keys)

    def _send_current(self, sock: SimSocket, keys: list[InstrumentKey], mode: FeedMode) -> None:
        code = {FeedMode.TICKER: ResponseCode.TICKER, FeedMode.QUOTE: ResponseCode.QUOTE}.get(
            mode, ResponseCode.FULL
        )
        self.emitter.send_packets(sock, self.model.packets(code, self.model.slots_of(keys)))

    def send_everything_now(self) -> int:
        """One packet of its mode for every subscribed instrument on every socket, now (tests: the client
        has seen every current price, not only those the random stream happened to draw). Returns how
        many were sent."""
        sent = 0
        for sock in self.live():
            by_mode: dict[FeedMode, list[InstrumentKey]] = {}
            for key, mode in sock.record.subscriptions.items():
                by_mode.setdefault(mode, []).append(key)
            for mode, keys in by_mode.items():
                self._send_current(sock, keys, mode)
                sent += len(keys)
        return sent

    def _slot(self, key: InstrumentKey) -> int:
        slot = self.model.slot(key)
        if slot is None:  # _resolve registers every key it returns
            raise KeyError(key)
        return slot

    def _resolve(self, sock: SimSocket, keys: Sequence[InstrumentKey]) -> list[InstrumentKey]:
        """The keys the master knows (registered with the price model); unknown ones are counted."""
        known = self._register(keys)
        if len(known) != len(keys):
            count = len(keys) - len(known)
            sock.record.unknown_instruments += count
            self.stats.unknown_instruments += count
        return known

    def _register(self, keys: Sequence[InstrumentKey]) -> list[InstrumentKey]:
        """The keys the master lists, registered with the price model (in order)."""
        model = self.model
        missing = [k for k in keys if model.slot(k) is None]
        unknown: set[InstrumentKey] = set()
        if missing:
            specs = []
            for key, spec in zip(missing, self.universe.lookup_many(missing), strict=True):
                if spec is None:
                    unknown.add(key)
                    continue
                if not model.has_underlying(spec.underlying):
                    price = self.universe.reference_price(spec.underlying)
                    if price is None or not price > 0:
                        price = fallback_price(spec.underlying, index=spec.asset is AssetClass.INDEX)
                    model.add_underlying(spec.underlying, price, spec.asset)
                specs.append(spec)
            model.add_many(specs)
        return [k for k in keys if k not in unknown] if unknown else list(keys)

    # -------------------------------------------------------------------------------------- REST quote

    def rest_quotes(self, keys: Sequence[InstrumentKey]) -> list[QuoteValues | None]:
        """Each key's market now (None where the master does not list it), for the REST market quote."""
        known = self._register(keys)
        values = dict(zip(known, self.model.quote_values(self.model.slots_of(known)), strict=True))
        return [values.get(k) for k in keys]

    def _rest_request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        path = target.split("?", 1)[0]
        self.expire_due_tokens()  # a token is refused the moment its lifetime is over, not a sweep later
        if path in AUTH_PATHS:  # tokens live on the market clock
            return self.auth_api.handle(method, target, headers, self.clock.timestamp())
        # real-time: Dhan's rate limit is per second of wall time, whatever the market clock says
        # The limit is one request a *market* second: on a virtual clock running ``speed`` times faster, a
        # real second holds ``speed`` of them (the client paces on the same clock).
        return self.quote_api.handle(method, path, headers, body, time.monotonic() * self.clock.speed)

    def expire_due_tokens(self) -> list[str]:
        """Tokens whose lifetime ran out on the clock: expired, and their live sockets closed with 807.
        Run by the watchdog's sweep and before every handshake and REST request, so a token is judged at
        the instant it is used."""
        gone = self.tokens.due(self.clock.timestamp())
        if gone:
            dead = set(gone)
            for sock in self.live():
                if sock.token in dead:
                    self.kick(sock, 807)
        return gone

    # -------------------------------------------------------------------------------------- streaming

    async def _stream_loop(self) -> None:
        """Every ``tick_interval``: step the market, then emit the packets the rate owes."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        self._rate_mark = (last, 0)
        window_lag = 0.0
        while True:
            await asyncio.sleep(self.tick_interval)
            now = loop.time()
            elapsed, last = now - last, now
            stats = self.stats
            stats.ticks += 1
            lag = elapsed - self.tick_interval
            stats.max_tick_lag_s = max(stats.max_tick_lag_s, lag)
            window_lag = max(window_lag, lag)
            started = time.perf_counter()
            try:
                self.emitter.emit(self._sockets.values(), min(elapsed, 0.25), self.open_segments())
            except Exception:  # a bug here must not stop the feed; it is logged and counted
                stats.emit_errors += 1
                logger.exception("simulator emit failed")
            stats.busy_s += time.perf_counter() - started
            mark_time, mark_count = self._rate_mark
            if now - mark_time >= 1.0:
                stats.emit_rate_pps = (self.emitter.emitted - mark_count) / (now - mark_time)
                stats.recent_tick_lag_s, window_lag = window_lag, 0.0
                self._rate_mark = (now, self.emitter.emitted)


async def run(
    *,
    master: Path | None = None,
    ready: Callable[[Simulator], None] | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Run a simulator until SIGINT/SIGTERM (or ``stop``): the body of ``tickgate simulate``.

    Without ``master`` a full-size master is generated (seed 0, today) into a temporary directory, so the
    universe and ``/master.csv`` match what ``tickgate instruments generate`` would write.
    """
    import tempfile

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="tickgate-sim-") as tmp:
        if master is None:
            from tickgate.instruments import generate_master

            clock: Clock = options.get("clock") or get_settings().make_clock()
            master = Path(tmp) / "master.csv"
            await asyncio.to_thread(generate_master, master, today=clock.today())
        async with Simulator(master=master, **options) as sim:
            if ready is not None:
                ready(sim)
            await stop.wait()


def announce(sim: Simulator) -> None:
    """The lines a parent process reads (the first one is the contract)."""
    sys.stdout.write(
        f"SIMULATOR {sim.url}\nCONTROL {sim.http_url}/control/state\nMASTER {sim.master_url}\n"
        f"REST {sim.rest_url}\n"
    )
    info = sim.clock.describe()
    if info["virtual"] and "anchor" in info:  # what makes another process read the same virtual time
        sys.stdout.write(
            f"CLOCK TICKGATE_CLOCK_START={info['start']} TICKGATE_CLOCK_SPEED={info['speed']:g}"
            f" TICKGATE_CLOCK_ANCHOR={info['anchor']!r}\n"
        )
    sys.stdout.flush()
