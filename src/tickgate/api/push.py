"""Live push: ``WS /api/v2/stream`` — quote-store updates, coalesced per instrument, at a bounded rate.

Protocol (JSON text frames from the client; JSON text or, with ``?format=msgpack``, msgpack binary frames
from the server):

- authenticate with ``?key=API_KEY`` or the ``X-API-Key`` header;
- send ``{"subscribe": ["NSE_EQ:2885", "chain:12"]}`` / ``{"unsubscribe": [...]}``: instrument keys or
  watchlist chains (``chain:<watchlist id>``, the ``stream_id`` of a watchlist entry; a chain follows its
  window as the ATM moves);
- receive ``{"type": "subscribed", "keys": n, "items": [...], "rejected": [{"item", "reason"}]}`` after each
  request, then ``{"type": "quotes", "quotes": [...], "coalesced": n}`` messages: each instrument at most
  once per message with its latest state, at most ``api.push_max_hz`` messages a second (``?max_hz=`` asks
  for fewer).

Each client *pulls* from the quote store (:class:`QuoteWatch`) when it is ready to send, so a slow client
simply gets fewer, newer updates and holds no queue. A client that stays unwritable for
``api.push_send_timeout_s``, or sends an oversized or malformed message, is closed with the reason.
Push subscriptions only read the quote store: what flows from Dhan is decided by watchlists and Tier B.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgpack
import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from tickgate.api.auth import Authenticator, Principal
from tickgate.api.render import QuoteRenderer
from tickgate.dhan.protocol import InstrumentKey
from tickgate.feed.quotes import QuoteWatch
from tickgate.service import TickgateService

log = structlog.get_logger("tickgate.api.push")

CHAIN_PREFIX = "chain:"
ANALYTICS_PREFIX = "analytics:"  # a watchlist chain's analytics, pushed when recomputed
CHAIN_REFRESH_S = 1.0

# Close codes (RFC 6455 + application range).
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
CLOSE_UNAUTHORIZED = 4401

router = APIRouter()


class ClientError(Exception):
    """The client broke the protocol: it is closed with this reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class PushHub:
    """The push channel's shared clock, counts and limits (read by ``/metrics`` and ``/admin/stats``).

    Every client sends on the same ticks (``api.push_max_hz``), so a quote that changed is rendered once
    per tick for all of them (:class:`QuoteRenderer` keeps one rendering per quote per tick) instead of once
    per client at a hundred scattered moments.

    Half an interval after each tick comes its *late* half, for what is not a quote: a chain's analytics
    (kilobytes a message, and a recomputation now and then) go out there, once every client's quotes of
    the tick are on their way, instead of in front of the quotes of the clients the loop serves after
    them. Whatever arrives from the feed meanwhile waits for the next tick in any case."""

    def __init__(self, max_hz: float = 100.0, renderer: QuoteRenderer | None = None) -> None:
        self.interval = 1.0 / max_hz
        self.renderer = renderer
        self.clients = 0
        self.connections = 0
        self.messages_sent = 0
        self.quotes_sent = 0
        self.coalesced = 0
        self.analytics_sent = 0  # analytics messages (one per chain recomputation per client taking it)
        self.dropped: Counter[str] = Counter()
        self._tick: asyncio.Future[None] | None = None
        self._late: asyncio.Future[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def next_tick(self) -> None:
        """Return at the next tick of the shared clock (started by the first client, stopped by the last)."""
        if self._tick is None or self._tick.done():
            self._tick = asyncio.get_running_loop().create_future()
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._run())
        await asyncio.shield(self._tick)

    async def late_half(self) -> None:
        """Return at the late half of the current tick (see the class docstring); called after
        :meth:`next_tick`, whose ticker also runs the late halves."""
        if self._late is None or self._late.done():
            self._late = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._late)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.clients > 0:
            await asyncio.sleep(self.interval)
            if self.renderer is not None:
                self.renderer.next_generation()
            tick, self._tick = self._tick, None
            if tick is not None and not tick.done():
                tick.set_result(None)
            # a timer of its own: the ticks keep their cadence however long a tick's sends take
            loop.call_later(self.interval / 2, self._end_late_wait)

    def _end_late_wait(self) -> None:
        late, self._late = self._late, None
        if late is not None and not late.done():
            late.set_result(None)


class PushClient:
    def __init__(  # noqa: PLR0917
        self,
        ws: WebSocket,
        service: TickgateService,
        hub: PushHub,
        principal: Principal,
        binary: bool,
        renderer: QuoteRenderer,
        max_hz: float | None = None,
    ) -> None:
        self.ws = ws
        self.renderer = renderer
        self.service = service
        self.hub = hub
        self.principal = principal
        self.binary = binary
        self.settings = service.settings.api
        self.max_hz = min(max_hz or self.settings.push_max_hz, self.settings.push_max_hz)
        self.keys: set[InstrumentKey] = set()
        self.chains: dict[int, str] = {}  # watchlist id -> group id
        self.analytics: dict[int, str] = {}  # watchlist id -> group id, for chains whose analytics it takes
        self._analytics_sent: dict[int, int] = {}  # watchlist id -> version last sent
        self.watch: QuoteWatch = service.quotes.watch(())
        self._coalesced_seen = 0

    # -- sending -------------------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        if self.binary:
            await self.send_raw(msgpack.packb(message, use_bin_type=True))
        else:
            await self.send_raw(json.dumps(message, separators=(",", ":")).encode())

    async def send_raw(self, body: bytes | str) -> None:
        """Send an encoded message (msgpack bytes, or JSON, as UTF-8 bytes or text, sent as a text frame)."""
        timeout = self.settings.push_send_timeout_s
        try:
            async with asyncio.timeout(timeout):  # a timer, not a task per send as wait_for would make
                if isinstance(body, str):
                    await self.ws.send_text(body)
                elif self.binary:
                    await self.ws.send_bytes(body)
                else:
                    await self.ws.send_text(body.decode())
        except TimeoutError:
            raise ClientError(CLOSE_POLICY, f"client unwritable for {timeout:g}s: dropped") from None
        self.hub.messages_sent += 1

    def watched(self) -> list[InstrumentKey]:
        keys = set(self.keys)
        planner = self.service.planner
        for group in self.chains.values():
            if planner.has_group(group):
                keys.update(planner.group_keys(group))
        return sorted(keys)

    def refresh(self) -> None:
        keys = self.watched()
        if keys != self.watch.keys:
            self.watch.set_keys(keys)

    async def pump(self) -> None:
        """Send what changed on the hub's ticks, at most ``max_hz`` times a second; pull-based, so nothing
        queues: a client that is slow to take a message simply gets fewer, fuller ones."""
        interval = 1.0 / self.max_hz
        analytics_interval = 1.0 / min(self.settings.push_analytics_hz, self.max_hz)
        last_refresh = last_sent = 0.0
        # Each client's analytics on its own phase: a hundred clients of one chain then send theirs spread
        # over the interval's ticks, not all in the tick after a recomputation (which would delay the quotes
        # of whoever the loop serves after them).
        last_analytics = time.monotonic() - random.uniform(0.0, analytics_interval)
        while True:
            await self.hub.next_tick()
            started = time.monotonic()
            if started - last_sent < interval * 0.9:
                continue  # a client that asked for fewer updates than the hub's rate
            if self.chains and started - last_refresh >= CHAIN_REFRESH_S:
                self.refresh()
                last_refresh = started
            taken = self.watch.take_slots()
            if taken:
                coalesced = self.watch.coalesced - self._coalesced_seen
                self._coalesced_seen = self.watch.coalesced
                self.hub.coalesced += coalesced
                await self.send_raw(self.renderer.quotes_message(taken, coalesced, binary=self.binary))
                self.hub.quotes_sent += len(taken)
                last_sent = started
            if self.analytics and started - last_analytics >= analytics_interval:
                last_analytics = started
                await self.hub.late_half()  # after every client's quotes of this tick
                await self._send_analytics()

    async def _send_analytics(self) -> None:
        """Each analytics chain's latest, when it was recomputed since the last send: computed once per
        change by the service's engine and rendered once per recomputation, whatever the clients."""
        svc = self.service
        for wid, group in list(self.analytics.items()):
            window = svc.tracker.window(group)
            if window is None:
                continue
            computed = svc.analytics.of(window)
            if self._analytics_sent.get(wid) == computed.version:
                continue
            self._analytics_sent[wid] = computed.version
            text = self.renderer.analytics_text(wid, computed, svc.analytics.rate)
            if self.binary:
                await self.send(json.loads(text))
            else:
                await self.send_raw(text)
            self.hub.analytics_sent += 1

    # -- receiving -----------------------------------------------------------------------------------------

    def parse(self, raw: str | bytes) -> dict[str, list[str]]:
        if len(raw) > self.settings.max_ws_message_bytes:
            raise ClientError(
                CLOSE_TOO_BIG, f"message of {len(raw)} bytes exceeds {self.settings.max_ws_message_bytes}"
            )
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[… nested too deep
            raise ClientError(CLOSE_POLICY, "malformed message: not JSON") from None
        if not isinstance(message, dict) or not message or set(message) - {"subscribe", "unsubscribe"}:
            raise ClientError(
                CLOSE_POLICY, 'malformed message: expected {"subscribe": [...]} or {"unsubscribe": [...]}'
            )
        out: dict[str, list[str]] = {}
        for op, items in message.items():
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ClientError(CLOSE_POLICY, f"malformed message: {op} must be a list of strings")
            out[op] = items
        return out

    async def handle(self, request: dict[str, list[str]]) -> None:
        rejected: list[dict[str, str]] = []
        accepted: list[str] = []
        for op, items in request.items():
            for item in items:
                try:
                    await self._apply(op, item.strip())
                    accepted.append(item)
                except ValueError as exc:
                    rejected.append({"item": item[:100], "reason": str(exc)[:200]})
        self.refresh()
        await self.send(
            {
                "type": "subscribed",
                "keys": len(self.watch.keys),
                "items": sorted(
                    [str(k) for k in self.keys]
                    + [f"{CHAIN_PREFIX}{c}" for c in self.chains]
                    + [f"{ANALYTICS_PREFIX}{c}" for c in self.analytics]
                ),
                "accepted": accepted,
                "rejected": rejected,
            }
        )

    async def _watchlist_group(self, op: str, item: str, prefix: str) -> tuple[int, str | None]:
        """``<prefix><watchlist id>``: the id, and (to subscribe) the caller's subscribed chain's group."""
        ident = item[len(prefix) :]
        if not ident.isdigit() or len(ident) > 18:
            raise ValueError(f"{prefix[:-1]} id must be {prefix}<watchlist id>, got {item!r}")
        wid = int(ident)
        if op == "unsubscribe":
            return wid, None
        entry = await self.service.store.watchlists.get(wid)
        if entry is None or entry.user_id != self.principal.user_id:
            raise ValueError(f"no watchlist entry {wid} for this user")
        if not self.service.planner.has_group(entry.group_id):
            raise ValueError(f"watchlist entry {wid} is not subscribed ({entry.state})")
        return wid, entry.group_id

    async def _apply(self, op: str, item: str) -> None:
        if item.startswith(ANALYTICS_PREFIX):
            wid, group = await self._watchlist_group(op, item, ANALYTICS_PREFIX)
            if group is None:
                self.analytics.pop(wid, None)
                self._analytics_sent.pop(wid, None)
            else:
                self.analytics[wid] = group
            return
        if item.startswith(CHAIN_PREFIX):
            wid, group = await self._watchlist_group(op, item, CHAIN_PREFIX)
            if group is None:
                self.chains.pop(wid, None)
                return
            self.chains[wid] = group
        else:
            key = InstrumentKey.parse(item)  # ValueError names the problem
            if op == "unsubscribe":
                self.keys.discard(key)
                return
            self.keys.add(key)
        if len(self.watched()) > self.settings.push_max_keys:
            if item.startswith(CHAIN_PREFIX):
                self.chains.pop(int(item[len(CHAIN_PREFIX) :]), None)
            else:
                self.keys.discard(InstrumentKey.parse(item))
            raise ValueError(f"at most {self.settings.push_max_keys} instruments per client")

    async def receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(int(message.get("code") or 1000))
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            await self.handle(self.parse(raw))


@router.websocket("/stream")
async def stream(
    ws: WebSocket, key: str | None = None, format: str = "json", max_hz: float | None = None
) -> None:
    service: TickgateService = ws.app.state.service
    hub: PushHub = ws.app.state.push
    auth: Authenticator = ws.app.state.auth
    await ws.accept()
    hub.connections += 1
    try:
        principal = await auth.authenticate(key or ws.headers.get("x-api-key"))
    except Exception:  # service not ready
        principal = None
        await _close(ws, CLOSE_TRY_LATER, "service not ready")
        return
    if principal is None:
        hub.dropped["unauthorized"] += 1
        await _close(ws, CLOSE_UNAUTHORIZED, "missing or unknown API key")
        return
    if format not in {"json", "msgpack"}:
        await _close(ws, CLOSE_POLICY, "format must be json or msgpack")
        return
    if hub.clients >= service.settings.api.push_max_clients:
        hub.dropped["too_many_clients"] += 1
        await _close(ws, CLOSE_TRY_LATER, "too many push clients: try again later")
        return
    if max_hz is not None and not 0 < max_hz <= 1000:
        await _close(ws, CLOSE_POLICY, "max_hz must be in (0, 1000]")
        return
    renderer: QuoteRenderer = ws.app.state.renderer
    client = PushClient(ws, service, hub, principal, format == "msgpack", renderer, max_hz)
    hub.clients += 1
    log.info("push client connected", user=principal.name, format=format)
    outcome: list[BaseException] = []

    async def run(part: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
        try:
            await part()
        except (ClientError, WebSocketDisconnect) as exc:
            outcome.append(exc)
        except Exception as exc:
            outcome.append(exc)
            log.error("push client failed", error=type(exc).__name__)
        scope.cancel()  # either side ending ends the session

    reason = "closed"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, client.pump, tg.cancel_scope)
            tg.start_soon(run, client.receive_loop, tg.cancel_scope)
        exc = outcome[0] if outcome else None
        if isinstance(exc, ClientError):
            reason = exc.reason
            hub.dropped["too_big" if exc.code == CLOSE_TOO_BIG else "policy"] += 1
            await _close(ws, exc.code, exc.reason)
        elif isinstance(exc, WebSocketDisconnect):
            reason = "client disconnected"
        elif exc is not None:
            reason = f"error: {type(exc).__name__}"
            await _close(ws, 1011, "internal error")
    finally:
        hub.clients -= 1
        log.info("push client closed", user=principal.name, reason=reason, sent=client.watch.delivered)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state is WebSocketState.CONNECTED and ws.client_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=reason)
