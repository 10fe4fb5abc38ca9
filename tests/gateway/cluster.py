"""The split mode's processes for the multi-process tests: gateways and API replicas as real
``python -m tickgate`` processes on the real PostgreSQL and NATS, against the simulator."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import httpx

from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator

PG = os.environ.get("TICKGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
NATS = "nats://127.0.0.1:4222"
TIER_B = """
[defaults]
mode = "quote"
strikes = 21

[[options]]
symbol = "NIFTY"
exchange = "NSE"
expiries = "next 2 weekly"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_env(sim: Simulator, master: Path, tmp_path: Path, schema: str, ttl: float) -> dict[str, str]:
    """The environment every process of one test's cluster shares (its own schema and subjects)."""
    tier_b = tmp_path / "tier_b.toml"
    tier_b.write_text(TIER_B)
    return {
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
        "TICKGATE_GATEWAY_LEASE_TTL_S": str(ttl),
        "TICKGATE_FEED__STARTUP_BARRIER_S": "0.3",
        "TICKGATE_FEED__OPEN_INTERVAL_S": "0.01",
        "TICKGATE_FEED__BACKOFF_INITIAL_S": "0.1",
    }


class Proc:
    """One ``python -m tickgate <args>`` process and the lines it printed."""

    def __init__(self, name: str, env: dict[str, str], *args: str) -> None:
        self.name = name
        self.env = env
        self.args = args
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickgate",
            *self.args,
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


class Gateway(Proc):
    def __init__(self, name: str, env: dict[str, str]) -> None:
        super().__init__(name, env, "gateway", "--log-level", "warning")


class Replica(Proc):
    """A ``tickgate api`` process on a port of its own."""

    def __init__(self, name: str, env: dict[str, str], **settings: str) -> None:
        self.port = free_port()
        extra = {f"TICKGATE_{k.upper()}": v for k, v in settings.items()}
        super().__init__(name, {**env, **extra}, "api", "--port", str(self.port), "--log-level", "warning")
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until it answers HTTP (it has its registry, its database and the broker)."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient() as client:
            while asyncio.get_running_loop().time() < deadline:
                try:
                    if (await client.get(f"{self.url}/metrics")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc is not None and self.proc.returncode is not None:
                    break
                await asyncio.sleep(0.2)
        raise AssertionError(f"replica {self.name} not ready: {self.lines[-10:]}")


async def add_user(env: dict[str, str], name: str, *, admin: bool = False) -> str:
    """A user in the cluster's database, by the CLI; its API key."""
    args = ["users", "add", name, *(["--admin"] if admin else [])]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tickgate", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    return out.decode().strip().splitlines()[-1]
