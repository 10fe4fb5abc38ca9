"""The split mode's processes for the multi-process tests: gateways and API replicas as real
``python -m tickgate`` processes on the real PostgreSQL and NATS, against the simulator."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

import pinned
from proxies import Proxy
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator

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


async def start_simulator(registry: InstrumentRegistry, master: Path, rate: float) -> Simulator:
    sim = Simulator(
        universe=RegistryUniverse(registry, pinned.TODAY), master=master, today=pinned.TODAY, rate=rate
    )
    await sim.start()
    return sim


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


class Host:
    """A host of its own for a process: a network namespace joined to this one by a veth pair. The
    machine's PostgreSQL and NATS listen on 127.0.0.1 only, so the host reaches them through relays this
    test runs on the veth's near address (:class:`Proxy`); it shares nothing else with the others. The
    broker relay is also where a test cuts the host off from the broker."""

    def __init__(self, name: str) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = f"tg{name}{tag}"[:15]
        self.near_if, self.far_if = f"tgn{tag}"[:15], f"tgf{tag}"[:15]
        a, b = random.randrange(100, 250), random.randrange(0, 64) * 4
        self.near, self.far = f"10.{a}.{b // 256}.{b % 256 + 1}", f"10.{a}.{b // 256}.{b % 256 + 2}"
        self.broker = Proxy(4222, host=self.near)
        self.database = Proxy(5432, host=self.near)

    @staticmethod
    @functools.cache
    def available() -> bool:
        """Whether this machine lets a test make network namespaces (root, iproute2, the capability: tried
        once); else the processes run on this host (the tests say which)."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return False
        probe = f"tgprobe{os.getpid()}"[:15]
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
        return made.returncode == 0

    async def create(self) -> None:
        for cmd in (
            f"ip netns add {self.ns}",
            f"ip link add {self.near_if} type veth peer name {self.far_if}",
            f"ip link set {self.far_if} netns {self.ns}",
            f"ip addr add {self.near}/30 dev {self.near_if}",
            f"ip link set {self.near_if} up",
            f"ip netns exec {self.ns} ip addr add {self.far}/30 dev {self.far_if}",
            f"ip netns exec {self.ns} ip link set {self.far_if} up",
            f"ip netns exec {self.ns} ip link set lo up",
        ):
            proc = await asyncio.create_subprocess_exec(*cmd.split(), stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            assert proc.returncode == 0, f"{cmd}: {err.decode()}"
        await self.broker.start(4222)
        await self.database.start(5432)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the broker and the database reached through this host's relays."""
        db = env["TICKGATE_DB_URL"].replace("@127.0.0.1:", f"@{self.near}:")
        return {**env, "TICKGATE_DB_URL": db, "TICKGATE_BUS_URL": f"nats://{self.near}:4222"}

    async def destroy(self) -> None:
        await self.broker.cut()
        await self.database.cut()
        for cmd in (f"ip netns del {self.ns}", f"ip link del {self.near_if}"):
            proc = await asyncio.create_subprocess_exec(
                *cmd.split(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            await proc.wait()


class Proc:
    """One ``python -m tickgate <args>`` process and the lines it printed."""

    def __init__(self, name: str, env: dict[str, str], *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.name = name
        self.env = env
        self.args = args
        self.prefix = prefix  # e.g. ``ip netns exec <ns>``: run on another host
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.prefix,
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
    """A ``tickgate api`` process on a port of its own, on a host of its own when given one."""

    def __init__(self, name: str, env: dict[str, str], host: Host | None = None, **settings: str) -> None:
        self.port = free_port()
        self.host = host
        self.address = "127.0.0.1" if host is None else host.far
        extra = {f"TICKGATE_{k.upper()}": v for k, v in settings.items()}
        env = {**env, **extra} if host is None else host.env({**env, **extra})
        args = ("api", "--host", self.address, "--port", str(self.port), "--log-level", "warning")
        prefix = () if host is None else ("ip", "netns", "exec", host.ns)
        super().__init__(name, env, *args, prefix=prefix)
        self.url = f"http://{self.address}:{self.port}"

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
