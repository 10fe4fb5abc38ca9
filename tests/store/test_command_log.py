"""``store.commands`` on both databases: a command's first answer is kept, a second record of the same key
changes nothing, an unknown key has no answer."""

from __future__ import annotations

from tickgate.store import Store


async def test_the_first_answer_is_kept(store: Store) -> None:
    assert await store.commands.answer("k1") is None
    await store.commands.record("k1", "watchlist.add", 200, {"entry": {"id": 7}})
    await store.commands.record("k1", "watchlist.add", 409, {"error": "late retry"})
    assert await store.commands.answer("k1") == (200, {"entry": {"id": 7}})
    await store.commands.record("k2", "watchlist.remove", 404, {"error": "no entry"})
    assert await store.commands.answer("k2") == (404, {"error": "no entry"})
