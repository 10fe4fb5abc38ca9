"""API keys: header ``X-API-Key`` (or ``?key=`` on the push WebSocket, where browsers cannot set headers).

Per-user keys live in the store as hashes only; ``settings.admin_key`` is accepted as an admin key as given
(compared in constant time). A short in-process cache keeps authentication off the database for hot
endpoints; it is keyed by a digest of the key, never the key itself."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from tickgate.api.errors import forbidden, unauthorized
from tickgate.service import TickgateService

ADMIN_USER = "admin"
CACHE_TTL_S = 5.0
CACHE_MAX = 4096

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your tickgate API key.")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    name: str
    is_admin: bool


class Authenticator:
    def __init__(self, service: TickgateService) -> None:
        self.service = service
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    def _is_admin_key(self, key: str) -> bool:
        admin = self.service.settings.admin_key
        if admin is None:
            return False
        return hmac.compare_digest(key.encode(), admin.get_secret_value().encode())

    async def authenticate(self, key: str | None) -> Principal | None:
        if not key or len(key) > 512:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal: Principal | None
        if self._is_admin_key(key):
            store = self.service.store
            user = await store.users.by_name(ADMIN_USER)
            if user is None:
                user, _unused_key = await store.users.create(ADMIN_USER, admin=True)
            principal = Principal(user.id, user.name, True)
        else:
            found = await self.service.store.users.authenticate(key)
            principal = None if found is None else Principal(found.id, found.name, found.is_admin)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL_S, principal)
        return principal

    def peek(self, key: str) -> Principal | None:
        """The principal of a key authenticated within the cache's lifetime, without any I/O; None when
        the key is unknown, refused or not cached (callers then take the normal, awaiting path)."""
        hit = self._cache.get(hashlib.sha256(key.encode()).digest())
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1]

    def forget(self) -> None:
        self._cache.clear()


async def service_of(request: Request) -> TickgateService:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a hop there and
    back (and a wait for the event loop) on every request."""
    service: TickgateService = request.app.state.service
    return service


async def require_user(
    request: Request, key: Annotated[str | None, Security(api_key_header)] = None
) -> Principal:
    auth: Authenticator = request.app.state.auth
    principal = await auth.authenticate(key)
    if principal is None:
        raise unauthorized()
    request.state.user = principal.name
    return principal


async def require_admin(principal: Annotated[Principal, Depends(require_user)]) -> Principal:
    if not principal.is_admin:
        raise forbidden()
    return principal


User = Annotated[Principal, Depends(require_user)]
Admin = Annotated[Principal, Depends(require_admin)]
Service = Annotated[TickgateService, Depends(service_of)]
