"""The fast path of the hottest endpoint: repeated ``GET /api/v2/option-chain/{symbol}`` requests.

A trading front end polls a handful of chains from many screens. The route renders a chain once per
``api.chain_cache_s`` and files it under the request's exact path and query; this ASGI middleware answers an
identical request from that entry while it is fresh, for a caller whose API key is already authenticated,
without FastAPI's routing, validation and dependency resolution (about three quarters of the cost of a
cached answer). Anything else — first sight of a request, an unknown or expired key, a stale entry — goes
down the normal route, which validates, authenticates and refills the cache. The caller-specific part
(``watchlist_id``, and the chain view counting as a use of the caller's watched chain) is applied here as
the route applies it.
"""

from __future__ import annotations

from types import SimpleNamespace

from starlette.types import ASGIApp, Receive, Scope, Send

from tickgate.api.auth import Authenticator
from tickgate.api.render import ChainCache, finish_chain
from tickgate.service import TickgateService
from tickgate.service.watchlists import group_id_for

CHAIN_PATH = "/api/v2/option-chain/"
ROUTE = SimpleNamespace(path=CHAIN_PATH + "{symbol}")  # what the access log and metrics label it as
_KEY_HEADER = b"x-api-key"
_JSON = [(b"content-type", b"application/json")]


def request_key(scope: Scope) -> tuple[str, bytes]:
    """The cache key of a chain request: its exact path and query string."""
    return str(scope["path"]), bytes(scope.get("query_string", b""))


class ChainFastPath:
    def __init__(
        self, app: ASGIApp, service: TickgateService, auth: Authenticator, cache: ChainCache
    ) -> None:
        self.app = app
        self.service = service
        self.auth = auth
        self.cache = cache
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(CHAIN_PATH)
            or "/" in scope["path"][len(CHAIN_PATH) :]
        ):
            await self.app(scope, receive, send)
            return
        key = next((v for k, v in scope["headers"] if k == _KEY_HEADER), None)
        principal = None if key is None else self.auth.peek(key.decode("latin-1"))
        chain = None if principal is None else self.cache.get(request_key(scope))
        if principal is None or chain is None:
            await self.app(scope, receive, send)
            return
        svc = self.service
        group = group_id_for(principal.user_id, chain.exchange, chain.symbol, chain.expiry)
        watchlist_id = None
        if svc.planner.has_group(group):
            watchlist_id = svc.watchlists.cached_entry_id(group)
            if watchlist_id is None:  # not looked up yet: the route reads it from the database
                await self.app(scope, receive, send)
                return
            svc.watchlists.touch(group, watchlist_id)
        body = finish_chain(chain.body, watchlist_id)
        scope["route"] = ROUTE
        scope.setdefault("state", {})["user"] = principal.name
        self.served += 1
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
