"""Users and API keys: keys are shown once and only their hash is stored."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from tickgate.store import DuplicateError, NotFoundError, Store, hash_key
from tickgate.store import schema as tbl

from .conftest import Db


async def _all_stored_text(store: Store) -> str:
    """Every value of every table, as text: what someone with a copy of the database could read."""
    parts: list[str] = []
    async with store._engines.read.connect() as conn:
        for table in tbl.metadata.sorted_tables:
            for row in (await conn.execute(sa.select(table))).all():
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


async def test_create_user_returns_a_working_key_once(store: Store) -> None:
    user, key = await store.users.create("alice", admin=True)
    assert user.name == "alice"
    assert user.is_admin
    assert user.id > 0
    assert key.startswith("tg_")
    assert len(key) >= 40
    assert await store.users.authenticate(key) == user
    assert await store.users.authenticate(key + "x") is None
    assert await store.users.authenticate("") is None
    bob, bob_key = await store.users.create("bob")
    assert not bob.is_admin
    assert bob_key != key
    assert await store.users.authenticate(bob_key) == bob
    assert await store.users.all() == [user, bob]
    assert await store.users.by_name("bob") == bob
    assert await store.users.get(999) is None


async def test_only_the_hash_of_a_key_is_stored(db: Db, store: Store) -> None:
    _, key = await store.users.create("carol")
    _, key2 = await store.users.create_key((await store.users.by_name("carol")).id)  # type: ignore[union-attr]
    await store.writer.flush()
    text = await _all_stored_text(store)
    for k in (key, key2):
        assert k not in text
        assert k[len("tg_") :] not in text
        assert hashlib.sha256(k.encode()).hexdigest() in text
        assert hash_key(k) in text
    if db.path is not None:  # the raw file and its WAL, byte for byte
        raw = b"".join(p.read_bytes() for p in db.path.parent.iterdir() if p.name.startswith(db.path.name))
        assert key.encode() not in raw
        assert key2.encode() not in raw
        assert hash_key(key).encode() in raw


async def test_duplicate_user_name_is_refused(store: Store) -> None:
    await store.users.create("dave")
    with pytest.raises(DuplicateError):
        await store.users.create(" dave ")
    with pytest.raises(ValueError, match=r"1\.\.64"):
        await store.users.create("  ")
    assert len(await store.users.all()) == 1


async def test_revoked_keys_stop_working(store: Store) -> None:
    user, key1 = await store.users.create("erin")
    api2, key2 = await store.users.create_key(user.id)
    keys = await store.users.keys(user.id)
    assert [k.prefix for k in keys] == [key1[:11], key2[:11]]
    assert all(k.revoked is None for k in keys)
    assert await store.users.revoke_key(api2.id, user_id=user.id + 1) is False  # someone else's
    assert await store.users.revoke_key(api2.id, user_id=user.id) is True
    assert await store.users.revoke_key(api2.id) is False  # already revoked
    assert await store.users.authenticate(key2) is None
    assert await store.users.authenticate(key1) == user
    assert await store.users.revoke_keys(user.id) == 1
    assert await store.users.authenticate(key1) is None
    assert all(k.revoked is not None for k in await store.users.keys(user.id))


async def test_given_keys_can_be_registered_once(store: Store) -> None:
    user, _ = await store.users.create("ops", admin=True)
    given = "configured-admin-key-0123456789"
    api, returned = await store.users.create_key(user.id, given)
    assert returned == given
    assert api.prefix == given[:11]
    assert await store.users.authenticate(given) == user
    with pytest.raises(DuplicateError):
        await store.users.create_key(user.id, given)
    with pytest.raises(ValueError, match="16"):
        await store.users.create_key(user.id, "short")
    with pytest.raises(NotFoundError):
        await store.users.create_key(12345)
