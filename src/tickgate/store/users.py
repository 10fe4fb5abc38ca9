"""Users and their API keys. Keys are stored as hashes; the plaintext is returned once, at creation."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.gate import Repository
from tickgate.store.types import ApiKey, DuplicateError, NotFoundError, User

KEY_PREFIX = "tg_"
_PREFIX_LEN = 11  # "tg_" + 8 characters: enough to tell keys apart in a list, useless to an attacker


def hash_key(key: str) -> str:
    """SHA-256 hex of an API key. Keys are 256-bit random tokens, so a fast unsalted hash is enough: there
    is nothing to brute-force (a slow KDF is for low-entropy passwords)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class Users(Repository):
    """``store.users``: accounts and keys (awaited writes: a key works as soon as it is returned)."""

    async def create(self, name: str, *, admin: bool = False) -> tuple[User, str]:
        """A user and its first API key. The plaintext key is returned here, once; only its hash is stored."""
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError("user name must be 1..64 characters")
        key = new_api_key()
        at = self._now()

        def tx(conn: Connection) -> User:
            try:
                res = conn.execute(sa.insert(tbl.users).values(name=name, is_admin=admin, created=at))
            except IntegrityError:
                raise DuplicateError(f"user {name!r} exists") from None
            uid = primary_key(res)
            conn.execute(sa.insert(tbl.api_keys).values(**_key_values(uid, key, at)))
            return User(uid, name, admin, at)

        return await self._gate.write(tx), key

    async def create_key(self, user_id: int, key: str | None = None) -> tuple[ApiKey, str]:
        """Another key for ``user_id`` (random unless ``key`` is given, e.g. a configured admin key)."""
        if key is not None and len(key) < 16:
            raise ValueError("an API key must be at least 16 characters")
        key = key or new_api_key()
        at = self._now()

        def tx(conn: Connection) -> ApiKey:
            require_user(conn, user_id)
            try:
                res = conn.execute(sa.insert(tbl.api_keys).values(**_key_values(user_id, key, at)))
            except IntegrityError as e:
                raise DuplicateError("this API key is already registered") from e
            return ApiKey(primary_key(res), user_id, key[:_PREFIX_LEN], at, None)

        return await self._gate.write(tx), key

    async def authenticate(self, key: str) -> User | None:
        """The user holding the (unrevoked) ``key``, else None. Looked up by hash: no plaintext compare."""
        if not key:
            return None
        stmt = (
            sa.select(tbl.users)
            .join(tbl.api_keys, tbl.api_keys.c.user_id == tbl.users.c.id)
            .where(tbl.api_keys.c.key_hash == hash_key(key), tbl.api_keys.c.revoked.is_(None))
        )
        rows = await self._gate.fetch(stmt)
        return conv.to_user(rows[0]) if rows else None

    async def revoke_key(self, key_id: int, *, user_id: int | None = None) -> bool:
        """Revoke one key (of ``user_id`` when given); False when there is no such live key."""
        return await self._revoke([tbl.api_keys.c.id == key_id], user_id) > 0

    async def revoke_keys(self, user_id: int) -> int:
        """Revoke every live key of ``user_id``; how many."""
        return await self._revoke([], user_id)

    async def _revoke(self, cond: list[sa.ColumnElement[bool]], user_id: int | None) -> int:
        at = self._now()
        cond = [*cond, tbl.api_keys.c.revoked.is_(None)]
        if user_id is not None:
            cond.append(tbl.api_keys.c.user_id == user_id)

        def tx(conn: Connection) -> int:
            return conn.execute(sa.update(tbl.api_keys).where(*cond).values(revoked=at)).rowcount

        return await self._gate.write(tx)

    async def keys(self, user_id: int) -> list[ApiKey]:
        rows = await self._gate.fetch(
            sa.select(tbl.api_keys).where(tbl.api_keys.c.user_id == user_id).order_by(tbl.api_keys.c.id)
        )
        return [conv.to_api_key(r) for r in rows]

    async def get(self, user_id: int) -> User | None:
        rows = await self._gate.fetch(sa.select(tbl.users).where(tbl.users.c.id == user_id))
        return conv.to_user(rows[0]) if rows else None

    async def by_name(self, name: str) -> User | None:
        rows = await self._gate.fetch(sa.select(tbl.users).where(tbl.users.c.name == name.strip()))
        return conv.to_user(rows[0]) if rows else None

    async def all(self) -> list[User]:
        return [
            conv.to_user(r) for r in await self._gate.fetch(sa.select(tbl.users).order_by(tbl.users.c.id))
        ]


def require_user(conn: Connection, user_id: int) -> None:
    if conn.execute(sa.select(tbl.users.c.id).where(tbl.users.c.id == user_id)).first() is None:
        raise NotFoundError(f"no user {user_id}")


def primary_key(res: sa.CursorResult[Any]) -> int:
    pk = res.inserted_primary_key
    if pk is None:
        raise RuntimeError("INSERT returned no primary key")
    return int(pk[0])


def _key_values(user_id: int, key: str, at: datetime) -> dict[str, Any]:
    return {"user_id": user_id, "key_hash": hash_key(key), "prefix": key[:_PREFIX_LEN], "created": at}
