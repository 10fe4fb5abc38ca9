"""A trading week without a person: the real service against the simulator on one virtual clock.

``make week`` runs Monday 26 to Friday 30 January 2026 (``TICKGATE_WEEK_DAYS=5``): Monday is Republic Day
(every exchange shut), Tuesday the 27th is an expiry (NIFTY's weekly and monthly), and every day ends with
each exchange's end of day. The one-day form (``make test``) runs the Tuesday, from before its pre-open to
Wednesday's, where Tier B has to have rolled. Through it all:

* the account's token lives 24 h on the market clock and is renewed each day; once it dies early and only
  the PIN and TOTP can replace it;
* every trading morning the service downloads the day's scrip master from the simulator; one morning the
  download fails and the service runs on the previous day's copy;
* another program holds two sockets of the client id for an hour; Dhan blocks the account (429) for ten
  minutes; one socket is told 804; random sockets drop all along;
* three users add and remove stock option chains all day, at capacity (every add evicts).

At the end it prints a summary and asserts what the simulator saw: no Dhan limit breached, at most two
805s from the other program's arrival, the feed whole again within 10 s (real) of each token change or the
block's end, no stale recycle of a socket whose markets were closed, Tier A cleared at each exchange's end
of day and Tier B rolled after expiry day, no lost acknowledged watchlist row and every change audited,
and no token, PIN or TOTP secret in any log line or any answer of the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import polars as pl
import pyotp
import pytest
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from recycles import recycled_while_shut
from tickgate.api.app import create_app
from tickgate.clock import IST, VirtualClock
from tickgate.config import FeedClientSettings, MasterSettings, Settings
from tickgate.dhan.client import ConnectionState
from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.planner import Tier
from tickgate.service import TickgateService
from tickgate.service.account import account_view, master_day
from tickgate.service.errors import InvalidInput, NotFound
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator

DAYS = int(os.environ.get("TICKGATE_WEEK_DAYS", "1"))
SPEED = float(os.environ.get("TICKGATE_WEEK_SPEED", "1500"))  # market seconds per real second
OUT_DIR = Path(os.environ.get("TICKGATE_WEEK_OUT", Path(__file__).resolve().parent / "out"))
SEED = int(os.environ.get("TICKGATE_WEEK_SEED", "17"))
MONDAY = dt.date(2026, 1, 26)  # Republic Day: NSE, BSE and MCX shut
EXPIRY_TUESDAY = MONDAY + dt.timedelta(days=1)
RESTORE_LIMIT_S = 10.0  # real seconds: the feed whole again after a token change or the block's end
PIN = "860731"
TOTP_SECRET = pyotp.random_base32()
ADMIN = "week-admin-key-0123456789abcdef"
USERS = ("asha", "bilal", "chen")

pytestmark = pytest.mark.timeout(int(900 + DAYS * 300))


def at(day: dt.date, hh: int, mm: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm), IST)


@dataclass
class Plan:
    """When things happen, for the week or its one-day form."""

    start: dt.datetime
    end: dt.datetime
    events: list[tuple[dt.datetime, str]]


def plan(days: int) -> Plan:
    if days == 1:
        tue, wed = EXPIRY_TUESDAY, EXPIRY_TUESDAY + dt.timedelta(days=1)
        return Plan(
            at(tue, 7, 50),
            at(wed, 9, 20),
            [
                (at(tue, 10, 0), "foreign"),
                (at(tue, 11, 30), "804"),
                (at(tue, 12, 30), "block"),
                (at(tue, 14, 0), "token_dies"),
                (at(wed, 7, 0), "master_fails"),
                (at(wed, 9, 10), "check_stale_master"),
                (at(wed, 9, 15), "check_roll"),
            ],
        )
    if days != 5:
        raise ValueError("TICKGATE_WEEK_DAYS is 1 (the one-day form) or 5 (the week)")
    d = [MONDAY + dt.timedelta(days=i) for i in range(5)]
    return Plan(
        at(d[0], 7, 50),
        at(d[4] + dt.timedelta(days=1), 0, 10),
        [
            (at(d[1], 11, 30), "804"),
            (at(d[2], 9, 15), "check_roll"),
            (at(d[2], 14, 0), "token_dies"),
            (at(d[3], 7, 0), "master_fails"),
            (at(d[3], 9, 10), "check_stale_master"),
            (at(d[3], 10, 0), "foreign"),
            (at(d[4], 12, 30), "block"),
        ],
    )


def week_settings(tmp: Path, sim: Simulator) -> Settings:
    # Real-second knobs shortened in proportion: at SPEED, 0.2 s of backoff is minutes of market time.
    feed = FeedClientSettings(
        open_interval_s=0.01,
        backoff_initial_s=0.1,
        backoff_cap_s=0.5,
        backoff_805_s=0.3,
        block_cooloff_s=0.2,
        block_cooloff_max_s=1.0,
        fatal_recheck_s=0.2,
        ping_interval_s=2.0,
        ping_timeout_s=6.0,
        close_timeout_s=0.5,
        startup_barrier_s=0.5,
        stale_after_s=3.0,
    )
    return Settings(
        feed=feed,
        data_dir=tmp,
        db_url=f"sqlite+aiosqlite:///{tmp / 'tickgate.db'}",
        instruments=sim.master_url,  # downloaded every trading morning, through the real download code
        master=MasterSettings(retry_pauses_s=(0.0, 0.05, 0.1)),
        admin_key=SecretStr(ADMIN),
        dhan_client_id=SecretStr(DEFAULT_CLIENT_ID),
        dhan_access_token=SecretStr(DEFAULT_TOKEN),
        dhan_pin=SecretStr(PIN),
        dhan_totp_secret=SecretStr(TOTP_SECRET),
    )


class SecretWatch(logging.Handler):
    """Every log record of the run, at every level, checked for a secret as it is emitted."""

    def __init__(self, secrets: Callable[[], set[str]]) -> None:
        super().__init__(logging.DEBUG)
        self._secrets = secrets
        self.records = 0
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format carries no text to leak
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        for secret in self._secrets():
            if secret in text:
                self.leaks.append(f"{record.name}: {text[:200]}")


@dataclass
class Outage:
    cause: str
    started: float  # real monotonic
    market: dt.datetime
    seconds: float | None = None


@dataclass
class Tally:
    adds: int = 0
    removes: int = 0
    evictions: int = 0
    rejected: int = 0
    drops: int = 0
    acknowledged: dict[int, str] = field(default_factory=dict)  # watchlist id -> group id
    removed: set[int] = field(default_factory=set)
    evicted_groups: set[str] = field(default_factory=set)
    outages: list[Outage] = field(default_factory=list)
    eod_checks: list[str] = field(default_factory=list)
    masters: list[tuple[str, str | None]] = field(default_factory=list)  # (day, master file loaded)
    roll: str | None = None
    stale_master: str | None = None
    failures: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.failures.append(text)


class Week:
    def __init__(
        self, svc: TickgateService, sim: Simulator, clock: VirtualClock, registry: InstrumentRegistry
    ):
        self.svc, self.sim, self.clock = svc, sim, clock
        self.rng = random.Random(SEED)
        self.tally = Tally()
        self.users: dict[str, int] = {}
        self.chains = stock_chains(registry)
        self.lock = asyncio.Lock()  # user actions pause while an event is injected and measured
        self.audit: Counter[str] = Counter()

    # -- the feed whole: every socket the budget allows up, the simulator carrying exactly the plan --------

    def whole(self) -> bool:
        feed = self.svc.feed
        size = feed.pool.budget.size
        states = [s.state for s in feed.pool.status()]
        if states.count(ConnectionState.UP) != size or feed.pool.blocked_for > 0:
            return False
        actual = {sid: keys for sid, keys in feed.planner.actual().items() if keys}
        view = {sid: keys for sid, keys in self.sim.view().items() if keys}
        return sorted(map(len, actual.values())) == sorted(map(len, view.values())) and {
            frozenset(v) for v in actual.values()
        } == {frozenset(v) for v in view.values()}

    async def until_whole(self, cause: str, since: float, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.whole():
                seconds = time.monotonic() - since
                self.tally.outages.append(Outage(cause, since, self.clock.now(), seconds))
                return seconds
            await asyncio.sleep(0.05)
        self.tally.fail(f"after {cause}: the feed not whole within {timeout:.0f} s")
        return timeout

    async def watch_outages(self) -> None:
        """Every time fewer sockets are up than the budget allows (a drop, an 807 when a replaced token
        expires, an 804, a block): how long, in real seconds, until the feed is whole again."""
        feed = self.svc.feed
        while True:
            await asyncio.sleep(0.05)
            if self.up() >= feed.pool.budget.size:
                continue
            since, market = time.monotonic(), self.clock.now()
            deadline = since + 120
            while self.up() < feed.pool.budget.size and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            while not self.whole() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            seconds = time.monotonic() - since
            cause = self.cause_near(market.timestamp())
            self.tally.outages.append(Outage(cause, since, market, seconds))
            if time.monotonic() >= deadline:
                self.tally.fail(f"{market:%a %H:%M} ({cause}): the feed not whole after {seconds:.0f} s")

    def up(self) -> int:
        return sum(1 for s in self.svc.feed.pool.status() if s.state is ConnectionState.UP)

    def cause_near(self, ts: float) -> str:
        """Why sockets closed around market time ``ts``, as the simulator recorded it."""
        window = 0.5 * SPEED  # half a real second of market time before it was noticed
        reasons = Counter(
            str(r.close_reason)
            for r in self.sim.history
            if r.closed_at is not None and ts - window <= r.closed_at <= ts + SPEED
        )
        return ", ".join(f"{k}×{v}" for k, v in sorted(reasons.items())) or "unknown"

    # -- users ---------------------------------------------------------------------------------------------

    async def users_act(self) -> None:
        """Add and remove stock chains while NSE trades; fill to capacity at each open."""
        sessions = self.svc.sessions
        while True:
            await asyncio.sleep(0.02)
            if "NSE" not in sessions.continuous(self.clock.now()):
                continue
            async with self.lock:
                if "NSE" not in sessions.continuous(self.clock.now()):
                    continue  # an event held the lock past the close
                try:
                    await self.act_once()
                except InvalidInput:  # a chain that expired today: the user is told, nothing changes
                    self.tally.rejected += 1
                except Exception as exc:  # a user's failed request is a finding, not a crash of the run
                    self.tally.fail(f"user action failed: {type(exc).__name__}: {exc}")

    async def act_once(self) -> None:
        svc, rng = self.svc, self.rng
        name = rng.choice(USERS)
        uid = self.users[name]
        free = svc.planner.plan_capacity().free
        mine = [i for i, g in self.tally.acknowledged.items() if i not in self.tally.removed and g]
        if free > 300 or rng.random() < 0.75 or not mine:
            today = self.clock.today()
            symbol, expiry = rng.choice([c for c in self.chains if c[1] > today])
            strikes = rng.choice((61, 81, 101))  # big chains: capacity within minutes of the open
            result = await svc.watchlists.add(uid, symbol, expiry=expiry, strikes=strikes)
            self.tally.adds += 1
            self.tally.acknowledged[result.entry.id] = result.entry.group_id
            self.tally.evictions += len(result.evicted)
            self.tally.evicted_groups.update(e.group for e in result.evicted)
            return
        wid = rng.choice(mine)
        entry = await svc.store.watchlists.get(wid)
        if entry is None:  # cleared at the end of day, or never there: nothing to remove
            self.tally.removed.add(wid)
            return
        self.tally.removed.add(wid)
        try:
            await svc.watchlists.remove(entry.user_id, wid)
        except NotFound:  # the end of day cleared it between the read and the remove: audited as cleared
            return
        self.tally.removes += 1

    async def drops(self) -> None:
        """A random socket drops every couple of market hours, day and night."""
        while True:
            await asyncio.sleep(self.clock.real_seconds(self.rng.uniform(3_600, 3 * 3_600)))
            if self.svc.feed.all_up():
                self.sim.faults.drop("random")
                self.tally.drops += 1

    # -- events --------------------------------------------------------------------------------------------

    async def event(self, name: str) -> None:
        sim, svc = self.sim, self.svc
        async with self.lock:
            if name == "foreign":
                sim.add_foreign(DEFAULT_CLIENT_ID, 2, seconds=3_600.0, reconnect_s=0.5)
                await self.until_whole("foreign program (2 sockets)", time.monotonic())
            elif name == "804":
                sim.faults.disconnect("random", 804)
                await self.until_whole("804 on one socket", time.monotonic())
            elif name == "block":
                seconds = 600.0 / SPEED  # ten market minutes
                sim.faults.block(seconds)
                sim.faults.drop("all")  # Dhan's block shows at the next handshake
                await asyncio.sleep(seconds)
                await self.until_whole("429 block ended", time.monotonic())
            elif name == "token_dies":
                tokens = svc.tokens
                assert tokens is not None
                generations = tokens.stats.generations
                since = time.monotonic()
                sim.faults.expire_token(DEFAULT_CLIENT_ID)
                await svc.feed.wait_until(lambda: tokens.stats.generations > generations, 30)
                if tokens.stats.generations == generations:
                    self.tally.fail("a dead token was not replaced through the PIN and TOTP")
                await self.until_whole("token died, TOTP generated", since)
            elif name == "master_fails":
                sim.faults.fail_master(len(svc.settings.master.retry_pauses_s))
            elif name == "check_stale_master":
                day = master_day(svc.master_path)
                view = account_view(svc)
                self.tally.stale_master = f"{svc.master_path.name if svc.master_path else None}"
                if day is None or day >= self.clock.today():
                    self.tally.fail(f"the failed morning's master is {svc.master_path}, not an earlier copy")
                if not view["master"]["age_days"]:
                    self.tally.fail(f"the account view does not show the stale master: {view['master']}")
            elif name == "check_roll":
                self.check_roll()
            else:
                raise AssertionError(name)

    def check_roll(self) -> None:
        groups = [g.group for g in self.svc.planner.groups() if g.tier is Tier.B]
        expired = [g for g in groups if g.endswith(EXPIRY_TUESDAY.isoformat())]
        nifty = sorted(g for g in groups if g.startswith("B:NIFTY:"))
        self.tally.roll = nifty[0] if nifty else None
        if expired:
            self.tally.fail(f"Tier B still holds the expired contracts after expiry day: {expired}")
        if not nifty or nifty[0] <= f"B:NIFTY:{EXPIRY_TUESDAY.isoformat()}":
            self.tally.fail(f"Tier B NIFTY did not roll to the next expiry: {nifty[:2]}")

    # -- end of day ----------------------------------------------------------------------------------------

    async def watch_days(self) -> None:
        """After each exchange's close (its end of day done) its Tier A chains are gone; note each day's
        master and token renewal."""
        day = self.clock.today()
        while True:
            for hh, mm, markets in ((15, 45, ("NSE", "BSE")), (23, 59, ("NSE", "BSE", "MCX"))):
                target = at(day, hh, mm)
                if target <= self.clock.now():
                    continue
                await self.clock.sleep_until(target)
                await asyncio.sleep(0.3)  # the end-of-day job's writes land
                left = [
                    g.group
                    for g in self.svc.planner.groups()
                    if g.tier is Tier.A and exchange_of(g.group) in markets
                ]
                self.tally.eod_checks.append(f"{day} {hh:02d}:{mm:02d} {'/'.join(markets)}: {len(left)} left")
                if left and self.svc.calendar.is_trading_day(markets[-1], day):  # type: ignore[arg-type]
                    self.tally.fail(f"{day}: Tier A of {markets} left after the end of day: {left[:3]}")
            path = self.svc.master_path
            self.tally.masters.append((day.isoformat(), None if path is None else path.name))
            day += dt.timedelta(days=1)


def exchange_of(group: str) -> str:
    from tickgate.service.watchlists import exchange_of_group

    return str(exchange_of_group(group) or "NSE")


def stock_chains(registry: InstrumentRegistry) -> list[tuple[str, dt.date]]:
    rows = (
        registry.frame.filter(pl.col("instrument").cast(pl.Utf8) == "OPTSTK")
        .select(pl.col("symbol").cast(pl.Utf8), pl.col("expiry"))
        .unique()
        .sort(["expiry", "symbol"])
    )
    return list(rows.iter_rows())


@pytest.fixture(scope="module")
def week_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("week-master") / "master.csv"
    generate_master(path, fmt="detailed", seed=0, today=MONDAY)
    return path


async def test_a_week_without_a_person(week_master: Path, tmp_path: Path) -> None:
    schedule = plan(DAYS)
    clock = VirtualClock(schedule.start, SPEED)
    registry = InstrumentRegistry.load(week_master, today=schedule.start.date())
    sim = Simulator(
        universe=RegistryUniverse(registry, schedule.start.date()), master=week_master,
        today=schedule.start.date(), rate=2_000.0, clock=clock, market_hours=True, ping_interval=1.0,
        ping_timeout=8.0, token_lifetime_s=86_400.0, logins={DEFAULT_CLIENT_ID: (PIN, TOTP_SECRET)},
    )  # fmt: skip
    await sim.start()

    def secrets() -> set[str]:
        return {PIN, TOTP_SECRET, *sim.tokens.all_tokens()}

    watch = SecretWatch(secrets)
    root = logging.getLogger()
    old_level = root.level
    quieted = [(h, h.level) for h in root.handlers]
    for handler, level in quieted:  # pytest's capture keeps INFO and up; the watch alone sees DEBUG
        handler.setLevel(max(level, logging.INFO))
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    noisy = [
        logging.getLogger(name)
        for name in ("websockets", "tickgate.dhan.ws", "tickgate.sim", "aiosqlite", "httpcore", "sqlalchemy")
    ]
    noisy_levels = [(logger, logger.level) for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.DEBUG)
    settings = week_settings(tmp_path, sim)
    svc = TickgateService(settings, feed_url=sim.url, rest_url=sim.rest_url, clock=clock, scheduler=True)
    answers: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        await svc.start()
        week = Week(svc, sim, clock, svc.registry)
        for name in USERS:
            user, _key = await svc.store.users.create(name)
            week.users[name] = user.id
        tasks = [
            asyncio.create_task(week.users_act(), name="week-users"),
            asyncio.create_task(week.drops(), name="week-drops"),
            asyncio.create_task(week.watch_days(), name="week-days"),
            asyncio.create_task(week.watch_outages(), name="week-outages"),
        ]
        app = create_app(svc)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://week") as http:
            for when, name in schedule.events:
                await clock.sleep_until(when)
                await week.event(name)
                answers.append(await outputs(http))
            await clock.sleep_until(schedule.end)
            answers.append(await outputs(http))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await svc.store.writer.flush(timeout=60)
        elapsed = time.monotonic() - started
        check_rows_and_audit(week, tmp_path / "tickgate.db")
        check_recycles(week)
        summary = summarise(week, sim, svc, elapsed)
    finally:
        for task in tasks:
            task.cancel()
        await svc.stop()
        await sim.close()
        root.removeHandler(watch)
        root.setLevel(old_level)
        for handler, level in quieted:
            handler.setLevel(level)
        for logger, level in noisy_levels:  # else later tests' threads log at DEBUG into closed captures
            logger.setLevel(level)
    for text in answers:
        for secret in secrets():
            if secret in text:
                week.tally.fail("a secret in an API answer")
    state = sim.state(subscriptions=False, history=False)
    foreign_805s = state["counters"]["foreign_805s"]
    assert state["breaches"] == [], state["breaches"][:5]
    assert foreign_805s <= 2 * (1 if DAYS else 0), f"{foreign_805s} foreign 805s in one episode"
    assert watch.leaks == [], watch.leaks[:3]
    assert week.tally.failures == [], "\n".join(week.tally.failures[:20])
    slow = [o for o in week.tally.outages if o.seconds is not None and o.seconds > RESTORE_LIMIT_S]
    assert slow == [], slow
    tokens = svc.tokens
    assert tokens is not None
    assert tokens.stats.renewals + tokens.stats.generations >= DAYS, "a day without a new token"
    assert tokens.stats.generations >= 1, "the PIN and TOTP never generated a token"
    assert state["counters"]["master_failed"] >= 1
    assert week.tally.evictions > 0, "the users never reached capacity"
    assert summary


async def outputs(http: httpx.AsyncClient) -> str:
    """Every operator surface's answer now (what must never carry a secret)."""
    admin = {"X-API-Key": ADMIN}
    parts = [
        (await http.get("/api/v2/health")).text,
        (await http.get("/api/v2/ws/status", headers=admin)).text,
        (await http.get("/api/v2/admin/stats", headers=admin)).text,
        (await http.get("/metrics", headers=admin)).text,
    ]
    return "\n".join(parts)


def check_rows_and_audit(week: Week, db: Path) -> None:
    """Every acknowledged watchlist row is in the database unless its user removed it or its exchange's end
    of day cleared it (audited); every add, remove, eviction and clear is in the audit log."""
    tally = week.tally
    with sqlite3.connect(db) as conn:
        rows = {r[0]: r[1] for r in conn.execute("SELECT id, group_id FROM watchlist")}
        audit: Counter[str] = Counter()
        groups_by_action: dict[str, set[str]] = {}
        cleared: set[str] = set()
        for action, group, details in conn.execute("SELECT action, group_id, details FROM subscription_log"):
            audit[action] += 1
            groups_by_action.setdefault(action, set()).add(group)
            if (
                action == "EOD_CLEANUP" and group is None and details
            ):  # the job's summary: every row it deleted
                cleared.update(json.loads(details).get("rows", []))
    for wid, group in tally.acknowledged.items():
        if wid in tally.removed or group in cleared:
            continue
        if wid not in rows:
            tally.fail(f"acknowledged watchlist row {wid} ({group}) lost")
    ghosts = set(rows) - set(tally.acknowledged)
    if ghosts:
        tally.fail(f"watchlist rows nobody acknowledged: {sorted(ghosts)[:5]}")
    added = groups_by_action.get("WATCHLIST_ADD", set()) | groups_by_action.get("ADD", set())
    missing = {g for g in tally.acknowledged.values()} - added
    if missing:
        tally.fail(f"{len(missing)} acknowledged adds not audited: {sorted(missing)[:3]}")
    unevicted = tally.evicted_groups - groups_by_action.get("EVICT", set())
    if unevicted:
        tally.fail(f"{len(unevicted)} evictions not audited: {sorted(unevicted)[:3]}")
    if audit["WATCHLIST_REMOVE"] < tally.removes:
        tally.fail(f"{tally.removes} removes but {audit['WATCHLIST_REMOVE']} audited")
    week.audit = audit


def check_recycles(week: Week) -> None:
    """No socket recycled as stale while every market it carried was closed (the simulator's sessions)."""
    for finding in recycled_while_shut(week.svc.feed, week.clock, week.sim.sessions):
        week.tally.fail(finding)


def summarise(week: Week, sim: Simulator, svc: TickgateService, elapsed: float) -> str:
    t = week.tally
    state = sim.state(subscriptions=False, history=False)
    counters = state["counters"]
    tokens = svc.tokens
    assert tokens is not None
    table = Table(title=f"tickgate week: {DAYS} day(s) at {SPEED:.0f}× in {elapsed:.0f} s real")
    table.add_column("measure")
    table.add_column("value", justify="right")
    restores = [o.seconds for o in t.outages if o.seconds is not None]
    rows = [
        ("Dhan limit breaches", str(len(state["breaches"]))),
        ("805s from the other program's arrival", str(counters["foreign_805s"])),
        ("other program's sockets dropped by tickgate", str(counters["foreign_dropped"])),
        ("sockets given up / probed back", f"{svc.feed.pool.budget.shrinks} / {svc.feed.pool.budget.grows}"),
        ("429 episodes", str(svc.feed.pool.blocks)),
        ("token renewals / TOTP generations", f"{tokens.stats.renewals} / {tokens.stats.generations}"),
        ("goodbyes (code 12) at the simulator", str(counters["goodbyes"])),
        ("masters served / refused", f"{counters['master_served']} / {counters['master_failed']}"),
        ("masters loaded per day", ", ".join(f"{d}: {m}" for d, m in t.masters)),
        ("random drops", str(t.drops)),
        ("outages / worst restore (real s)", f"{len(restores)} / {max(restores):.2f}" if restores else "0"),
        *(
            (f"restore: {o.market:%a %H:%M} {o.cause}"[:60], f"{o.seconds:.2f} s")
            for o in t.outages
            if o.seconds is not None and (o.seconds > 1.0 or "807" in o.cause or "block" in o.cause)
        ),
        ("master on the failed morning", str(t.stale_master)),
        ("stale recycles (all while trading)", str(svc.feed.metrics.stale_recycles)),
        (
            "user adds / removes / evictions / refused",
            f"{t.adds} / {t.removes} / {t.evictions} / {t.rejected}",
        ),
        ("Tier B NIFTY after expiry day", str(t.roll)),
        ("end-of-day checks", "; ".join(t.eod_checks)),
        (
            "audit rows by action",
            ", ".join(f"{k} {v}" for k, v in sorted(getattr(week, "audit", {}).items())),
        ),
        ("findings", str(len(t.failures))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    if os.environ.get("TICKGATE_WEEK_DEBUG"):
        for entry in state["faults"]:
            print("FAULT", dt.datetime.fromtimestamp(entry["at"], IST).strftime("%a %H:%M:%S"), entry)
        for r in sim.history:
            if r.close_reason and "807" in str(r.close_reason):
                opened = dt.datetime.fromtimestamp(r.opened_at, IST).strftime("%a %H:%M:%S")
                closed = dt.datetime.fromtimestamp(r.closed_at or 0, IST).strftime("%a %H:%M:%S")
                print("807", r.id, opened, closed, r.close_reason)
        print("TOKENS", tokens.status())
    console = Console(record=True, width=140)
    console.print(table)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    text = console.export_text()
    (OUT_DIR / f"week-{DAYS}d.txt").write_text(text)
    return text
