"""ATM cache upserts (through the writer, latest window per chain wins), pruning, and the meta table."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tickgate.store import AtmEntry, Store

T0 = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)


def _atm(u: str, exp: date, atm: float, ltp: float | None = None, at: datetime = T0) -> AtmEntry:
    return AtmEntry(u, exp, atm, tuple(atm + 100 * i for i in range(-2, 3)), ltp, at)


async def _put(store: Store, *entries: AtmEntry) -> None:
    for e in entries:
        store.writer.submit_atm(e)
    await store.writer.flush()


async def test_upsert_get_list_expire(store: Store) -> None:
    e1 = _atm("NIFTY", date(2026, 12, 1), 26000.0, 26012.5)
    await _put(store, e1)
    assert await store.atm.get("NIFTY", date(2026, 12, 1)) == e1
    moved = _atm("NIFTY", date(2026, 12, 1), 26100.0, 26090.0, T0 + timedelta(minutes=3))
    await _put(store, moved)
    assert await store.atm.get("NIFTY", date(2026, 12, 1)) == moved
    old = _atm("BANKNIFTY", date(2026, 11, 24), 59000.0)
    await _put(store, old, _atm("BANKNIFTY", date(2026, 12, 30), 59500.5))
    assert [(e.underlying, e.expiry) for e in await store.atm.all()] == [
        ("BANKNIFTY", date(2026, 11, 24)),
        ("BANKNIFTY", date(2026, 12, 30)),
        ("NIFTY", date(2026, 12, 1)),
    ]
    assert await store.atm.prune(date(2026, 11, 25)) == 1
    assert await store.atm.get("BANKNIFTY", date(2026, 11, 24)) is None
    assert await store.atm.get("NIFTY", date(2027, 1, 1)) is None


async def test_writer_atm_updates_coalesce_per_chain(store: Store) -> None:
    for i in range(50):
        store.writer.submit_atm(_atm("NIFTY", date(2026, 12, 1), 26000.0 + 50 * i))
        store.writer.submit_atm(_atm("SENSEX", date(2026, 12, 3), 85000.0 + 100 * i))
    await store.writer.flush()
    assert (await store.atm.get("NIFTY", date(2026, 12, 1))).atm == 26000.0 + 50 * 49  # type: ignore[union-attr]
    assert (await store.atm.get("SENSEX", date(2026, 12, 3))).atm == 85000.0 + 100 * 49  # type: ignore[union-attr]
    assert store.writer.stats()["atm_written"] < 100


async def test_meta_round_trip(store: Store) -> None:
    assert await store.meta.get("eod:NSE") is None
    await store.meta.set("eod:NSE", {"last_run": "2026-11-25T10:00:00Z", "groups": 12})
    await store.meta.set("eod:NSE", {"last_run": "2026-11-26T10:00:00Z", "groups": 3})
    assert await store.meta.get("eod:NSE") == {"last_run": "2026-11-26T10:00:00Z", "groups": 3}
