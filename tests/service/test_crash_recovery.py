"""kill -9 in the middle of watchlist adds: no acknowledged row is lost, no phantom subscription remains,
and after restart the database, the planner and the simulator's sockets agree."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from tickgate.planner import Tier
from tickgate.sim import Simulator

from .conftest import ServiceFactory, service_settings
from .test_service import converged

pytestmark = pytest.mark.timeout(240)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kill_after", [3, 7])
async def test_sigkill_mid_adds_then_restart(
    make_service: ServiceFactory, simulator: Simulator, master: Path, tmp_path: Path, kill_after: int
) -> None:
    settings = service_settings(tmp_path)
    assert settings.db_url is not None
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.service.crash_worker",
        str(master),
        settings.db_url,
        simulator.url,
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert worker.stdout is not None
    acknowledged: dict[int, str] = {}
    started = False
    while len(acknowledged) < kill_after:
        line = (await asyncio.wait_for(worker.stdout.readline(), 60)).decode()
        assert line, "worker died before it was killed"
        if line.startswith("STARTED"):
            started = True
        elif line.startswith("ADDED"):
            _, wid, group = line.split()
            acknowledged[int(wid)] = group
    assert started
    await asyncio.sleep(random.uniform(0, 0.05))  # somewhere inside the next add
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    # the killed process's sockets are gone at the server: nothing it subscribed is still carried
    await simulator.wait_for(lambda: not simulator.open_sockets(), 10, "the killed sockets to close")

    svc = await make_service(settings=settings)
    rows = {w.id: w for w in await svc.store.watchlists.active()}
    for wid, group in acknowledged.items():
        assert wid in rows, f"acknowledged watchlist row {wid} ({group}) was lost"
    tier_a = {g.group for g in svc.planner.groups() if g.tier is Tier.A}
    assert tier_a == {w.group_id for w in rows.values()}  # database == planner (a half-done add is completed)
    await converged(svc, simulator)  # planner == simulator sockets
    assert simulator.breaches == []
