"""Two `tickgate gateway` processes on the real PostgreSQL and NATS against the simulator (issue 20): one
takes the lease and streams; the standby waits without a socket; kill -9 of the active one, and the
standby takes over and restores the plan at the simulator within 10 s; the active one cut off from
PostgreSQL closes its sockets before the standby opens its own. The simulator counts sockets per
client id, checked every few milliseconds: never more than 5, never both gateways at once."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from proxies import Proxy
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import DEFAULT_CLIENT_ID
from waiting import until

from .cluster import NATS, PG, Gateway, split_env, start_simulator

TTL = 2.0


async def test_kill_9_of_the_active_gateway_and_the_standby_takes_over(
    master: Path, registry: InstrumentRegistry, tmp_path: Path, schema: str
) -> None:
    sim = await start_simulator(registry, master, 1_000.0)
    base = split_env(sim, master, tmp_path, schema, TTL)
    a = Gateway("a", {**base, "TICKGATE_DATA_DIR": str(tmp_path / "a")})
    b = Gateway("b", {**base, "TICKGATE_DATA_DIR": str(tmp_path / "b")})
    peak = 0
    watching = True

    async def watch() -> None:  # every few milliseconds, not only at the end
        nonlocal peak
        while watching:
            peak = max(peak, len(sim.open_sockets(DEFAULT_CLIENT_ID)))
            await asyncio.sleep(0.003)

    watcher = asyncio.create_task(watch())

    def sockets() -> int:
        return len(sim.open_sockets(DEFAULT_CLIENT_ID))

    def carried() -> set[object]:
        return {k for s in sim.live() for k in s.book.subscriptions}

    try:
        await a.start()
        await until(lambda: a.said("GATEWAY ACTIVE"), 60, f"gateway a active: {a.lines[-5:]}")
        await b.start()
        await until(lambda: b.said("GATEWAY WAITING"), 60, f"gateway b waiting: {b.lines[-5:]}")
        await until(
            lambda: len(sim.open_sockets(DEFAULT_CLIENT_ID)) == 5 and len(carried()) > 0, 20, "a streams"
        )
        await asyncio.sleep(2 * TTL)  # a renews; b must not take over
        assert not b.said("GATEWAY ACTIVE"), "the standby took a lease that was being renewed"
        plan = carried()
        assert len(plan) >= 40

        killed = time.monotonic()
        await a.kill()
        await until(lambda: b.said("GATEWAY ACTIVE"), 10, f"standby active: {b.lines[-5:]}")
        await until(
            lambda: carried() == plan and len(sim.open_sockets(DEFAULT_CLIENT_ID)) == 5, 10, "plan restored"
        )
        failover = time.monotonic() - killed
        assert failover <= 10, failover
        print(f"failover: gateway killed → plan restored at the simulator in {failover:.2f} s")
    finally:
        watching = False
        await watcher
        await b.terminate()
        await a.kill()
        await sim.close()
    assert peak <= 5, f"the client id held {peak} sockets at once"
    assert all(n <= 5 for n in sim.stats.max_sockets_per_client.values())
    assert not sim.breaches, sim.breaches[:3]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"TICKGATE_DB_URL": "sqlite:///x.db", "TICKGATE_BUS_URL": NATS}, "needs PostgreSQL"),
        ({"TICKGATE_DB_URL": PG}, "needs a broker"),
    ],
)
@pytest.mark.parametrize("role", ["gateway", "api"])
async def test_the_split_mode_refuses_what_it_cannot_run_on(
    env: dict[str, str], says: str, role: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("TICKGATE_DB_URL", "TICKGATE_BUS_URL")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickgate",
        role,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert f"tickgate {role} {says}" in out.decode()


async def test_a_gateway_cut_off_from_postgresql_closes_its_sockets_before_the_standby_opens_its_own(
    master: Path, registry: InstrumentRegistry, tmp_path: Path, schema: str
) -> None:
    """The active gateway reaches PostgreSQL through a relay the test partitions (nothing passes, nothing
    is closed): it cannot renew, steps down at 0.6 of the ttl and closes its sockets; the standby takes
    the lease once the row has expired, and opens its own. The simulator never sees more than 5."""
    sim = await start_simulator(registry, master, 1_000.0)
    base = split_env(sim, master, tmp_path, schema, TTL)
    relay = Proxy(5432)
    await relay.start()
    a_db = base["TICKGATE_DB_URL"].replace("@127.0.0.1:5432", f"@127.0.0.1:{relay.port}")
    a = Gateway("a", {**base, "TICKGATE_DATA_DIR": str(tmp_path / "a"), "TICKGATE_DB_URL": a_db})
    b = Gateway("b", {**base, "TICKGATE_DATA_DIR": str(tmp_path / "b")})
    peak = 0
    watching = True

    async def watch() -> None:
        nonlocal peak
        while watching:
            peak = max(peak, len(sim.open_sockets(DEFAULT_CLIENT_ID)))
            await asyncio.sleep(0.003)

    watcher = asyncio.create_task(watch())
    try:
        await a.start()
        await until(lambda: a.said("GATEWAY ACTIVE"), 60, f"gateway a active: {a.lines[-5:]}")
        await until(lambda: len(sim.open_sockets(DEFAULT_CLIENT_ID)) == 5, 20, "a streams")
        await b.start()
        await until(lambda: b.said("GATEWAY WAITING"), 60, f"gateway b waiting: {b.lines[-5:]}")
        cut = time.monotonic()
        relay.partitioned = True
        await until(lambda: b.said("GATEWAY ACTIVE"), 15, f"standby active: {b.lines[-5:]}")
        took_over = time.monotonic() - cut
        assert took_over >= TTL * 0.9, f"the standby took a lease that had not expired ({took_over:.2f} s)"
        await until(lambda: len(sim.open_sockets(DEFAULT_CLIENT_ID)) == 5, 15, "b streams")
        print(f"partition: the standby streams {time.monotonic() - cut:.2f} s after the cut")
    finally:
        watching = False
        await watcher
        relay.partitioned = False
        await relay.cut()
        await b.terminate()
        await a.kill()
        await sim.close()
    assert peak <= 5, f"the client id held {peak} sockets at once: both gateways were connected"
    assert not sim.breaches, sim.breaches[:3]
