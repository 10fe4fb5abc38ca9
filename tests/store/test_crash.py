"""Crash safety: a watchlist row whose id was printed (committed) survives SIGKILL at any moment, including
during start-up and migration; the database opens cleanly afterwards."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from tickgate.dhan.protocol import FeedMode
from tickgate.store import Store, head_revision
from tickgate.store import schema as tbl

from .conftest import Db

WORKER = Path(__file__).with_name("crash_worker.py")


def _run_and_kill(
    db: Db, tag: str, *, after_lines: int | None, after_s: float, note: str = ""
) -> list[tuple[int, str]]:
    """Start the worker, SIGKILL it after ``after_lines`` committed rows (or ``after_s`` seconds), and
    return every row it reported as committed."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), db.url, db.settings.pg_schema or "", tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    errors: list[str] = []
    enough = threading.Event()

    def pump_out() -> None:
        assert proc.stdout is not None
        n = 0
        for line in proc.stdout:
            lines.append(line)
            n += line[:1].isdigit()
            if after_lines is not None and n >= after_lines:
                enough.set()
        enough.set()

    def pump_err() -> None:  # drained as it comes, so a chatty worker can never block on a full pipe
        assert proc.stderr is not None
        errors.extend(proc.stderr)

    pumps = [threading.Thread(target=f, daemon=True) for f in (pump_out, pump_err)]
    for t in pumps:
        t.start()
    if after_lines is None:
        time.sleep(after_s)
    else:
        enough.wait(60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    for t in pumps:
        t.join(30)
    err = "".join(errors)
    where = f"worker {tag} (kill after {after_lines} rows / {after_s:.2f}s, got {len(lines)} lines; {note})"
    if after_lines is not None:
        assert proc.returncode == -signal.SIGKILL, (
            f"{where} ended by itself ({proc.returncode}): {err[-3000:]}"
        )
    assert "Traceback" not in err, f"{where}: {err[-3000:]}"
    out = []
    for line in lines:
        if line[:1].isdigit():
            wid, gid = line.split()
            out.append((int(wid), gid))
    return out


async def test_committed_watchlist_rows_survive_sigkill(db: Db) -> None:
    seed = int(os.environ.get("TICKGATE_CRASH_SEED", int.from_bytes(os.urandom(4))))
    rng = random.Random(seed)
    seed_note = f"TICKGATE_CRASH_SEED={seed}"
    committed: list[tuple[int, str]] = []
    # First: a kill at a random moment, probably during interpreter start-up or the first migration.
    committed += _run_and_kill(db, "it0", after_lines=None, after_s=rng.uniform(0.05, 1.5), note=seed_note)
    # Then kills in the middle of a stream of adds (and of the writer's batches).
    for k in (1, 2):
        committed += _run_and_kill(db, f"it{k}", after_lines=rng.randint(1, 120), after_s=0, note=seed_note)
    assert len(committed) > 0, seed_note

    store = await Store.open(db.url, settings=db.settings)
    try:
        assert await store.schema_revision() == head_revision()
        rows = {w.id: w.group_id for w in await store.watchlists.rows()}
        missing = [(wid, gid) for wid, gid in committed if rows.get(wid) != gid]
        assert missing == [], f"committed rows lost after SIGKILL ({seed_note}): {missing[:5]}"
        if db.kind == "sqlite":
            async with store._engines.read.connect() as conn:
                assert (await conn.exec_driver_sql("PRAGMA integrity_check")).scalar() == "ok"
        # The reopened store is fully usable (no stale lock, no half-applied migration).
        user = await store.users.by_name("crash")
        assert user is not None
        await store.watchlists.put(user.id, "AFTER", exchange="NSE", group_id="after", mode=FeedMode.QUOTE)
        async with store._engines.read.connect() as conn:
            n = (await conn.execute(sa.select(sa.func.count()).select_from(tbl.watchlist))).scalar_one()
        assert n >= len(committed) + 1
    finally:
        await store.close()
