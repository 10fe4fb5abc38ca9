"""The chaos suite's moving parts: the real service process, its HTTP API, and the comparison of what the
simulator's sockets carry with what tickgate planned.

The service is started exactly as an operator would (``python -m tickgate serve`` configured by environment
variables); only timing knobs are shortened so that reconnects, dead-socket detection and the 805 back-off
fit in a test run (the defaults are minutes, which would hide nothing but make the run long).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]

from tickgate.config import Settings
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator

ADMIN_KEY = "chaos-admin-key-0123456789abcdef"
PROBE_DIR = Path(__file__).resolve().parent / "probe"

# Shortened so every fault's whole cycle (detect, back off, reconnect, resume) happens within a short run.
FEED_TIMING_ENV = {
    "TICKGATE_FEED__BACKOFF_INITIAL_S": "1",
    "TICKGATE_FEED__BACKOFF_CAP_S": "8",
    "TICKGATE_FEED__BACKOFF_805_S": "8",
    "TICKGATE_FEED__PING_INTERVAL_S": "3",
    "TICKGATE_FEED__PING_TIMEOUT_S": "6",
    "TICKGATE_FEED__STALE_AFTER_S": "8",
    "TICKGATE_FEED__FATAL_RECHECK_S": "5",
    # Another program's sockets (the foreign fault): 805s within 30 s give sockets up, probed back after
    # 10 s without one (a real account: 10 min and an hour).
    "TICKGATE_FEED__BUDGET_WINDOW_S": "30",
    "TICKGATE_FEED__BUDGET_REGROW_AFTER_S": "10",
    "TICKGATE_FEED__BUDGET_REGROW_MAX_S": "40",
}

# The suite's one clock (tests/pinned.py): the simulator's records, the service's audit rows and these
# checkpoints all read it, so their times compare. Resource samples stay on the host's clock.
CLOCK = Settings().make_clock()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def epoch(text: str) -> float:
    """An API timestamp (ISO 8601, UTC) as epoch seconds."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


@dataclass
class Sample:
    """Resources of one service process at one moment."""

    at: float
    incarnation: int
    rss_mb: float
    fds: int
    threads: int
    tasks: int | None


class ServiceProcess:
    """``python -m tickgate serve`` in a subprocess that can be SIGKILLed and started again on the same
    database; each start is one *incarnation* (resource growth is judged per incarnation)."""

    def __init__(self, *, master: Path, feed_url: str, data_dir: Path, port: int) -> None:
        self.master = master
        self.feed_url = feed_url
        self.data_dir = data_dir
        self.port = port
        self.db_path = data_dir / "tickgate.db"
        self.db_url = f"sqlite+aiosqlite:///{self.db_path}"
        self.log_path = data_dir / "service.log"
        self.probe_path = data_dir / "probe.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.base_url = f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DHAN_CLIENT_ID": DEFAULT_CLIENT_ID,
            "DHAN_ACCESS_TOKEN": DEFAULT_TOKEN,
            "TICKGATE_FEED_URL": self.feed_url,
            "TICKGATE_INSTRUMENTS": str(self.master),
            "TICKGATE_DATA_DIR": str(self.data_dir),
            "TICKGATE_DB_URL": self.db_url,
            "TICKGATE_ADMIN_KEY": ADMIN_KEY,
            "TICKGATE_PORT": str(self.port),
            "TICKGATE_CHAOS_PROBE": str(self.probe_path),
            **FEED_TIMING_ENV,
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBE_DIR), env.get("PYTHONPATH")]))
        return env

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "service already running"
        self.incarnation += 1
        self.probe_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== incarnation {self.incarnation} at {time.time():.3f} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tickgate", "serve", "--log-level", "warning"],
                env=self.env(),
                cwd=self.data_dir,  # no stray .env from the checkout
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll ``/health`` until ready (registry, database, a socket up, no alert); the epoch it was."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(
                        f"service exited with {self.proc and self.proc.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/api/v2/health")).status_code == 200:
                        return CLOCK.timestamp()
                await asyncio.sleep(0.2)
        raise TimeoutError(f"service not ready after {timeout}s; see {self.log_path}")

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, queued audit rows and in-flight requests die with it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 30)

    async def terminate(self, timeout: float = 45.0) -> int:
        """SIGTERM: the graceful path (uvicorn lifespan → service.stop()); its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)
            raise

    def sample(self) -> Sample | None:
        if not self.alive():
            return None
        try:
            p = psutil.Process(self.pid)
            rss, fds, threads = p.memory_info().rss / 2**20, p.num_fds(), p.num_threads()
        except psutil.Error:
            return None
        tasks = None
        with contextlib.suppress(OSError, ValueError):
            probe = json.loads(self.probe_path.read_text())
            if time.time() - probe["at"] < 5:
                tasks = int(probe["tasks"])
        return Sample(time.time(), self.incarnation, rss, fds, threads, tasks)


# ------------------------------------------------------------------------------------------- comparison

PlanKey = tuple[str, int, str]  # (segment name, security id, mode name)


def read_plan(db_path: Path) -> tuple[dict[int, set[PlanKey]], int, int]:
    """The ``subscriptions`` table tickgate keeps as the materialised view of its plan:
    (placed keys per connection, Tier B keys, Tier B keys not placed)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "SELECT segment, security_id, connection, mode, state, tier FROM subscriptions"
        ).fetchall()
    finally:
        con.close()
    placed: dict[int, set[PlanKey]] = {}
    tier_b = tier_b_unplaced = 0
    for segment, sid, conn, mode, state, tier in rows:
        if state == "placed" and conn is not None:
            placed.setdefault(int(conn), set()).add((str(segment), int(sid), str(mode)))
        if tier == "B":
            tier_b += 1
            tier_b_unplaced += state != "placed"
    return placed, tier_b, tier_b_unplaced


def desired_keys(db_path: Path) -> dict[PlanKey, str]:
    """Every key of the plan, placed or waiting, with its mode (the ``subscriptions`` table) → its owners
    (for a report when two plans differ)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT segment, security_id, mode, owners FROM subscriptions").fetchall()
    finally:
        con.close()
    return {(str(segment), int(sid), str(mode)): str(owners) for segment, sid, mode, owners in rows}


def sim_sockets(sim: Simulator) -> dict[int, frozenset[PlanKey]]:
    return {
        sid: frozenset((k.segment.name, k.security_id, m.name) for k, m in subs.items())
        for sid, subs in sim.view().items()
    }


@dataclass
class Observation:
    """One comparison of the simulator's sockets with tickgate's plan (API for counts, database for keys)."""

    at: float
    consistent: bool
    why: str
    up: int
    sockets: int
    placed: int
    desired: int
    suspended_groups: list[str]
    tier_a_groups: set[str]
    tier_b_groups: dict[str, bool]  # group -> suspended
    tier_b_keys: int
    tier_b_unplaced: int
    fatal_alert: str | None


async def observe(sim: Simulator, admin: httpx.AsyncClient, db_path: Path) -> Observation:
    """Compare, key for key, each open simulator socket with one tickgate connection's placed keys.

    The simulator's view is read before and after the service's (HTTP and the database), and only an
    unchanged view counts: a message in flight is not an inconsistency."""
    before = sim_sockets(sim)
    subs = (await admin.get("/api/v2/subscriptions")).raise_for_status().json()
    ws = (await admin.get("/api/v2/ws/status")).raise_for_status().json()
    placed, tier_b_keys, tier_b_unplaced = await asyncio.to_thread(read_plan, db_path)
    after = sim_sockets(sim)
    up = sum(1 for c in ws["connections"] if c["state"] == "up")
    groups = subs["groups"]
    obs = Observation(
        at=CLOCK.timestamp(),
        consistent=False,
        why="",
        up=up,
        sockets=len(after),
        placed=int(subs["placed"]),
        desired=int(subs["desired"]),
        suspended_groups=list(subs["suspended"]),
        tier_a_groups={g["group"] for g in groups if g["tier"] == "A"},
        tier_b_groups={g["group"]: bool(g["suspended"]) for g in groups if g["tier"] == "B"},
        tier_b_keys=tier_b_keys,
        tier_b_unplaced=tier_b_unplaced,
        fatal_alert=ws.get("alert"),
    )
    sim_sets = {keys for keys in after.values() if keys}
    db_sets = {frozenset(keys) for keys in placed.values() if keys}
    api_counts = sorted(n for n in subs["by_connection"].values() if n)
    if before != after:
        obs.why = "simulator view changed while observing"
    elif len(after) != up:
        obs.why = f"{len(after)} simulator sockets, {up} tickgate connections up"
    elif sorted(len(s) for s in sim_sets) != api_counts:
        obs.why = f"per-socket counts: simulator {sorted(len(s) for s in sim_sets)}, planner {api_counts}"
    elif sim_sets != db_sets:
        obs.why = "per-socket keys differ between the simulator and the subscriptions table"
    elif sum(len(s) for s in db_sets) != obs.placed:
        obs.why = "subscriptions table lags the planner"
    elif up and obs.desired and not obs.placed:
        obs.why = "start-up: sockets open, plan not placed yet"
    elif up == len(ws["connections"]) and (obs.suspended_groups or obs.placed != obs.desired):
        obs.why = f"all connections up but {len(obs.suspended_groups)} groups still suspended"
    else:
        obs.consistent = True
    return obs


# ------------------------------------------------------------------------------------------- bookkeeping


@dataclass
class Recovery:
    kind: str
    seconds: float
    settle_polls: int


@dataclass
class Tally:
    """Everything the summary table reports; failures are collected, then asserted at the end."""

    faults: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    recoveries: list[Recovery] = field(default_factory=list)
    restarts: Counter[str] = field(default_factory=Counter)
    ready_s: list[float] = field(default_factory=list)
    evictions: int = 0
    suspended_seen: set[str] = field(default_factory=set)
    resumed_seen: set[str] = field(default_factory=set)
    lost_rows: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    corrupt_frames: dict[int, int] = field(default_factory=dict)  # incarnation -> service's counter
    unaudited: list[str] = field(default_factory=list)
    restart_key_sets: list[int] = field(default_factory=list)  # keys compared, one entry per graceful restart
    audit_lost_to_kill: int = 0
    journal_changes: int = 0
    not_yet: Counter[str] = field(default_factory=Counter)  # why observations were not consistent
    tier_b_short: int = 0  # checkpoints where live sockets could not hold Tier B (it waited, Tier A first)

    def fail(self, message: str) -> None:
        if len(self.failures) < 200:
            self.failures.append(message)
