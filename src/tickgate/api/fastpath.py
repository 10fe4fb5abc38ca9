"""Fast paths of the two hottest endpoints, as one ASGI middleware in front of FastAPI.

**Repeated ``GET /api/v2/option-chain/{symbol}``.** A trading front end polls a handful of chains from many
screens. The route renders a chain once per ``api.chain_cache_s`` and files it under the request's exact
path and query; an identical request from a caller whose API key is already authenticated is answered
here from that entry while it is fresh, without FastAPI's routing, validation and dependency resolution
(most of the cost of a cached answer). The caller-specific part (``watchlist_id``, and the
chain view counting as a use of the caller's watched chain) is the route's own function,
:func:`~tickgate.api.routes.chain_for_caller`.

**``POST /api/v2/watchlist``.** FastAPI's routing, dependency solving and response-model handling took more
of the event loop than an add at capacity itself (docs/decisions/0002-measured-tradeoffs.md). For an
authenticated caller with a JSON body that validates, the add runs here: the same body model, the same
:func:`~tickgate.api.routes.add_entry`, the same response model and error rendering
(:func:`~tickgate.api.errors.known_error`).

Anything else — first sight of a key, an expired one, a body that does not validate (replayed to the route
so that its 400 is the route's), a stale chain — goes down the normal route, which validates,
authenticates and refills the caches.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickgate.api.auth import Authenticator, Principal
from tickgate.api.errors import KNOWN_ERRORS, known_error
from tickgate.api.metrics import ROUTE_LABEL
from tickgate.api.models import WatchlistAdd
from tickgate.api.render import ChainCache, request_key
from tickgate.api.routes import add_entry, chain_for_caller, watched_group
from tickgate.service import TickgateService

PREFIX = "/api/v2"
CHAIN_PATH = PREFIX + "/option-chain/"
WATCHLIST_PATH = PREFIX + "/watchlist"
CHAIN_ROUTE = CHAIN_PATH + "{symbol}"  # the route templates the access log and the metrics name them by
WATCHLIST_ROUTE = WATCHLIST_PATH
_KEY_HEADER = b"x-api-key"
_CONTENT_TYPE = b"content-type"
_JSON = [(b"content-type", b"application/json")]
_MAX_BODY = 64 * 1024  # an add is a few dozen bytes; anything bigger takes the route


class FastPaths:
    def __init__(
        self, app: ASGIApp, service: TickgateService, auth: Authenticator, cache: ChainCache
    ) -> None:
        self.app = app
        self.service = service
        self.auth = auth
        self.cache = cache
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if method == "GET" and path.startswith(CHAIN_PATH) and "/" not in path[len(CHAIN_PATH) :]:
                await self._chain(scope, receive, send)
                return
            if method == "POST" and path == WATCHLIST_PATH:
                await self._watchlist_add(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> Principal | None:
        key = next((v for k, v in scope["headers"] if k == _KEY_HEADER), None)
        return None if key is None else self.auth.peek(key.decode("latin-1"))

    async def _chain(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = self._principal(scope)
        chain = None if principal is None else self.cache.get(request_key(scope))
        if principal is None or chain is None:
            await self.app(scope, receive, send)
            return
        svc = self.service
        group = watched_group(svc, principal.user_id, chain)
        watchlist_id = None if group is None else svc.watchlists.cached_entry_id(group)
        if group is not None and watchlist_id is None:  # not looked up yet: the route reads the database
            await self.app(scope, receive, send)
            return
        _label(scope, CHAIN_ROUTE, principal)
        await self._answer(send, 200, chain_for_caller(svc, chain, group, watchlist_id))

    async def _watchlist_add(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = self._principal(scope)
        content_type = next((v for k, v in scope["headers"] if k == _CONTENT_TYPE), b"")
        if principal is None or content_type.split(b";")[0].strip().lower() != b"application/json":
            await self.app(scope, receive, send)
            return
        body, read = await _read_body(receive)
        try:
            add = None if body is None else WatchlistAdd.model_validate_json(body)
        except ValidationError:
            add = None
        if add is None:  # too big, the client gone, or invalid: the route reads it again and answers
            await self.app(scope, _replay(read, receive), send)
            return
        _label(scope, WATCHLIST_ROUTE, principal)
        try:
            answer = await add_entry(self.service, principal, add.symbol, add)
        except KNOWN_ERRORS as exc:
            error = known_error(exc)
            await self._answer(send, error.status_code, bytes(error.body))
            return
        await self._answer(send, 200, answer.model_dump_json().encode())

    async def _answer(self, send: Send, status: int, body: bytes) -> None:
        self.served += 1
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _label(scope: Scope, route: str, principal: Principal) -> None:
    """What the access log and the latency metric name the request by, as the route would set them."""
    scope[ROUTE_LABEL] = route
    scope.setdefault("state", {})["user"] = principal.name


async def _read_body(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The request body (None past ``_MAX_BODY`` or on a disconnect) and the messages read so far."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if size > _MAX_BODY:
            return None, messages
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages), messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands out ``messages`` again (a body read here, for the route to read)."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
