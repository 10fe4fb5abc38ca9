"""Two `tickgate gateway` processes on the real PostgreSQL and NATS against the simulator (issue 20): one
takes the lease and streams; the standby waits without a socket; kill -9 of the active one, and the
standby takes over and restores the plan at the simulator within 10 s. The simulator counts sockets per
client id, checked every few milliseconds: never more than 5, never both gateways at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

import pinned
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator
from waiting import until

PG = os.environ.get("TICKGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
NATS = "nats://127.0.0.1:4222"
TTL = 2.0
TIER_B = """
[defaults]
mode = "quote"
strikes = 21

[[options]]
symbol = "NIFTY"
exchange = "NSE"
expiries = "next 2 weekly"
"""


class Gateway:
    """One `tickgate gateway` process and the lines it printed."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickgate",
            "gateway",
            "--log-level",
            "warning",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    def said(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                await self.kill()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"tgtest_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    dsn = make_url(PG).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await conn.close()


async def test_kill_9_of_the_active_gateway_and_the_standby_takes_over(
    master: Path, registry: InstrumentRegistry, tmp_path: Path, schema: str
) -> None:
    sim = Simulator(
        universe=RegistryUniverse(registry, pinned.TODAY), master=master, today=pinned.TODAY, rate=1_000.0
    )
    await sim.start()
    tier_b = tmp_path / "tier_b.toml"
    tier_b.write_text(TIER_B)
    base = {
        **os.environ,
        "TICKGATE_FEED_URL": sim.url,
        "DHAN_CLIENT_ID": DEFAULT_CLIENT_ID,
        "DHAN_ACCESS_TOKEN": DEFAULT_TOKEN,
        "TICKGATE_DB_URL": PG,
        "TICKGATE_STORE__PG_SCHEMA": schema,
        "TICKGATE_BUS_URL": NATS,
        "TICKGATE_BUS_PREFIX": f"t{uuid.uuid4().hex[:8]}.",
        "TICKGATE_INSTRUMENTS": str(master),
        "TICKGATE_TIER_B": str(tier_b),
        "TICKGATE_GATEWAY_LEASE_TTL_S": str(TTL),
        "TICKGATE_FEED__STARTUP_BARRIER_S": "0.3",
        "TICKGATE_FEED__OPEN_INTERVAL_S": "0.01",
        "TICKGATE_FEED__BACKOFF_INITIAL_S": "0.1",
    }
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
async def test_the_split_mode_refuses_what_it_cannot_run_on(env: dict[str, str], says: str) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("TICKGATE_DB_URL", "TICKGATE_BUS_URL")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tickgate",
        "gateway",
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert says in out.decode()
