"""The tickgate service: registry, planner, feed, store, chains and end of day, wired on one event loop.

Start-up is recovery: the database's watchlists and the Tier B configuration are the desired state; the
planner places them as the sockets come up; the subscriptions table is rewritten from the planner. So a
restart, a reconnect and a rebalance all end in the same place — desired == actual.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tickgate.chains.atm import AtmEngine, ChainWindow
from tickgate.chains.tierb import TierBPlan, TierBUniverse
from tickgate.chains.tracker import ChainTracker, Recentre
from tickgate.clock import IST, Clock
from tickgate.config import Settings, is_dhan_url
from tickgate.dhan.client import Credentials, CredentialsProvider
from tickgate.dhan.protocol import InstrumentKey
from tickgate.feed import FeedManager, QuoteStore
from tickgate.feed.backfill import PRIORITY_TIER_B, PRIORITY_USER, Backfiller
from tickgate.feed.quotes import SOURCE_SAVED
from tickgate.instruments import InstrumentRegistry
from tickgate.orchestrator import Orchestrator, PlanChange
from tickgate.planner import Planner, Tier
from tickgate.schedule.calendar import EXCHANGES, Exchange, TradingCalendar
from tickgate.schedule.eod import SESSIONS, EodScheduler, missed_sessions
from tickgate.schedule.sessions import SEGMENT_MARKET, Market, MarketSessions
from tickgate.service.errors import NotReady
from tickgate.service.pins import Pins
from tickgate.service.runtime import RuntimePolicy
from tickgate.service.watchlists import WatchlistManager, exchange_of_group
from tickgate.store import Store
from tickgate.store.planner_view import PlannerSubscriptions
from tickgate.store.types import AtmEntry, WatchlistState

log = logging.getLogger(__name__)

TIER_B_ACTOR = "tier-b"
RECENTRE_CHECK_S = 1.0  # how often live LTPs are compared with the chains' ATMs (hysteresis does the rest)


def resolve_master(settings: Settings, today: dt.date) -> Path:
    """Which scrip master to load: the configured path/URL, else today's cached download, else a generated
    full-size one (cached per day in the data directory, so restarts load the same instruments)."""
    from tickgate.instruments import cached_master_path, fetch_master, generate_master

    source = settings.instruments
    if source:
        if source.startswith(("http://", "https://")):
            return fetch_master(source, settings.data_dir, today=today, progress=False).path
        return Path(source).expanduser()
    cached = cached_master_path(settings.data_dir, today)
    if cached.exists():
        return cached
    generated = settings.data_dir / "masters" / f"generated-{today.isoformat()}.csv"
    if not generated.exists():
        generated.parent.mkdir(parents=True, exist_ok=True)
        tmp = generated.with_suffix(".part")
        generate_master(tmp, fmt="detailed", seed=0, today=today)
        tmp.replace(generated)
    return generated


def credentials_from_settings(settings: Settings) -> CredentialsProvider:
    """Dhan credentials from the environment, re-read at every connect (a rolled-over token is picked up
    by restarting with the new env — or by a custom provider)."""

    def provide() -> Credentials:
        cid, token = settings.dhan_client_id, settings.dhan_access_token
        if cid is None or token is None:
            raise NotReady("DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN are not set")
        return Credentials(cid.get_secret_value(), token.get_secret_value())

    return provide


class TickgateService:
    """Owns every part; the API layer calls into it. ``start()``/``stop()`` bracket its life."""

    def __init__(
        self,
        settings: Settings,
        *,
        credentials: CredentialsProvider | None = None,
        feed_url: str | None = None,
        rest_url: str | None = None,
        registry: InstrumentRegistry | None = None,
        store: Store | None = None,
        calendar: TradingCalendar | None = None,
        scheduler: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        # The one clock: sessions, EOD, expiries, LRU and cooldown times, caches (see tickgate.clock).
        self.clock = clock or settings.make_clock()
        self._credentials = credentials or credentials_from_settings(settings)
        self._feed_url = feed_url
        self._rest_url = rest_url
        self.backfill: Backfiller | None = None
        self._registry = registry
        self._store = store
        self.calendar = calendar or TradingCalendar.load()
        self.sessions = MarketSessions(self.calendar)
        self._use_scheduler = scheduler
        self.runtime = RuntimePolicy()
        self.planner = Planner(settings.limits)
        self.orchestrator = Orchestrator(self.planner)  # the one path for every change of plan
        self._subscriptions_view = PlannerSubscriptions(self.planner, self.clock)
        self.quotes = QuoteStore(clock=self.clock)
        self.watchlists = WatchlistManager(self)
        self.tier_b_universe = TierBUniverse.load(settings=settings.chains)
        self.tier_b: TierBPlan | None = None
        self.eod: EodScheduler | None = None
        self.started_at: dt.datetime | None = None  # market time (the clock's) of the last start
        self._started_mono = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._feed: FeedManager | None = None
        self._atm: AtmEngine | None = None
        self._tracker: ChainTracker | None = None
        self.eod_runs: list[dict[str, Any]] = []
        self.recentres = 0
        self.loop_failures: Counter[str] = Counter()  # background loops' exceptions (logged, counted)
        self.pins = Pins(self.orchestrator, self.planner, self.loop_failures)
        for name, subscriber in (
            ("audit", self._audit_events),
            ("subscriptions", self._follow_subscriptions),
            ("gone", self._forget_gone),
            ("evictions", self._mark_evicted),
            ("backfill", self._backfill_new),
        ):
            self.orchestrator.subscribe(name, subscriber)

    # -- parts that exist once started ---------------------------------------------------------------------

    @property
    def registry(self) -> InstrumentRegistry:
        if self._registry is None:
            raise NotReady("instrument registry not loaded yet")
        return self._registry

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotReady("database not open yet")
        return self._store

    @property
    def feed(self) -> FeedManager:
        if self._feed is None:
            raise NotReady("feed not started yet")
        return self._feed

    @property
    def atm(self) -> AtmEngine:
        if self._atm is None:
            raise NotReady("instrument registry not loaded yet")
        return self._atm

    @property
    def tracker(self) -> ChainTracker:
        if self._tracker is None:
            raise NotReady("instrument registry not loaded yet")
        return self._tracker

    def today(self) -> dt.date:
        return self.clock.today()

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        started = time.perf_counter()
        self.settings.check_clock_for(self._feed_url or self.settings.feed_url, self.clock)
        if self._registry is None:
            path = await asyncio.to_thread(resolve_master, self.settings, self.today())
            self._registry = await asyncio.to_thread(InstrumentRegistry.load, path, clock=self.clock)
        self._atm = AtmEngine(self.registry, self.settings.chains, quotes=self.quotes.get)
        self._tracker = ChainTracker(self._atm, self.settings.chains)
        if self._store is None:
            self._store = await Store.from_settings(self.settings, clock=self.clock)
        self._feed = FeedManager(
            self.settings,
            self.planner,
            self._credentials,
            store=self.quotes,
            url=self._feed_url,
            trading=self.trading_markets,
            orchestrator=self.orchestrator,
        )
        caught_up_to = await self._catch_up_eod()
        self.apply_tier_b(self.tier_b_universe.resolve(self.registry, self.today(), engine=self.atm))
        restored = await self.watchlists.restore()
        await self.pins.restore(self.store.meta)
        self.store.writer.submit_log(
            "STARTUP",
            actor="tickgate",
            count=self.planner.totals().desired,
            reason=f"restored {restored} watchlist chains; Tier B {self.tier_b.total if self.tier_b else 0}",
        )
        await self._restore_last_quotes()
        self.backfill = self._make_backfiller()
        await self.feed.start()
        if self.backfill is not None:
            self.backfill.start()
            self._backfill_keys(list(self.planner.desired(include_suspended=True)))
        if self._use_scheduler:
            self.eod = EodScheduler(self.calendar, self.run_eod, self.pre_open, clock=self.clock)
            self.eod.start(since=caught_up_to)
        self._tasks = [asyncio.create_task(self._recentre_loop(), name="tickgate-recentre")]
        self.snapshot_subscriptions()
        # Everything built so far (registry indexes, plan, keys) lives for the whole process: keep it, and
        # whatever survives later full collections, out of the cyclic GC's walks (see RuntimePolicy).
        self.runtime.install()
        self.started_at = self.clock.utcnow()
        self._started_mono = time.monotonic()
        log.info("tickgate started in %.2fs", time.perf_counter() - started)

    def uptime_s(self) -> float | None:
        """Real seconds since start (process health, not market time), ``None`` while stopped."""
        return None if self.started_at is None else round(time.monotonic() - self._started_mono, 3)

    async def stop(self) -> None:
        """Stop everything; what the writer queued is written first. Safe to call twice."""
        if self.started_at is None:
            return
        self.started_at = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.eod is not None:
            self.eod.shutdown()
        if self.backfill is not None:
            await self.backfill.stop()
        if self._feed is not None:
            await self._feed.stop()
        await self.pins.flush()
        if self._store is not None:
            self.snapshot_subscriptions()
            await self._store.close()
        self.runtime.uninstall()

    # -- plumbing ------------------------------------------------------------------------------------------

    # The orchestrator's subscribers: what every change of plan updates, whoever asked for it.

    def _audit_events(self, change: PlanChange) -> None:
        if change.events and self._store is not None:
            self._store.writer.submit_events(list(change.events), actor="planner")

    def _follow_subscriptions(self, change: PlanChange) -> None:
        # Connections going down or up move keys with no user action: the subscriptions table follows
        # every change, not only users' (the writer coalesces: at most one write a second).
        if change.events or change.result.actions:
            self.snapshot_subscriptions()

    def _forget_gone(self, change: PlanChange) -> None:
        """Groups that left the plan (removed, evicted, cleared at EOD) are no longer tracked for
        recentring, and their watchlist row ids are no longer cached."""
        gone = change.gone(self.planner)
        if gone and self._tracker is not None:
            for group in gone:
                self._tracker.untrack(group)
        self.watchlists.forget(gone)
        self.pins.forget(gone)

    def _mark_evicted(self, change: PlanChange) -> None:
        """Users' chains evicted by any change (an add, a recentre, the Tier B roll, a restart) are marked
        in the database, so their owners are told and a restart does not resurrect them. Queued through the
        writer with the decision's time: a chain re-added meanwhile (created later) stays active."""
        evicted = [ref.group for ref in change.evicted_tier_a(self.planner)]
        if evicted and self._store is not None:
            self._store.writer.submit_watchlist_state(
                evicted,
                WatchlistState.EVICTED,
                reason=f"capacity limit: {change.cause}",
                at=self._store.now(),
            )

    def snapshot_subscriptions(self) -> None:
        """Queue a rewrite of the subscriptions table (coalesced by the writer: latest wins)."""
        if self._store is None:
            return
        self._store.writer.submit_subscriptions(self._subscriptions_view)

    def remember_atm(self, window: ChainWindow) -> None:
        self.store.writer.submit_atm(
            AtmEntry(
                underlying=window.symbol,
                expiry=window.expiry.date,
                atm=window.atm_strike,
                window=window.strikes,
                ltp=window.ltp,
                computed_at=self.clock.utcnow(),
            )
        )

    def trading_markets(self) -> frozenset[Market]:
        """The markets in continuous session now, on the service's clock (the watchdog judges by them)."""
        return self.sessions.continuous(self.clock.now())

    def ltp_of(self, key: Any) -> float | None:
        quote = self.quotes.get(key)
        return None if quote is None else quote.ltp

    # -- Tier B ----------------------------------------------------------------------------------------------

    def apply_tier_b(self, plan: TierBPlan) -> None:
        """Make the planner's Tier B match ``plan``: new groups added, gone ones removed, changed ones
        replaced (only the diff travels). Used at start, on reload and by the pre-open roll."""
        now = self.clock.timestamp()
        wanted = {g.group: g for g in plan.groups}
        for info in self.planner.groups():
            if info.tier is Tier.B and info.group not in wanted:
                cause = f"Tier B group {info.group} rolled off"
                self.orchestrator.apply(cause, Planner.remove_group, info.group, now)
        for group in plan.groups:
            cause = f"Tier B group {group.group}"
            if self.planner.has_group(group.group):
                result = self.orchestrator.apply(cause, Planner.replace_keys, group.group, group.keys, now)
            else:
                result = self.orchestrator.apply(
                    cause, Planner.add_group, group.group, Tier.B, group.keys, group.mode, TIER_B_ACTOR, now
                )
                if not result.accepted:
                    log.error("Tier B group %s rejected: %s", group.group, result.reason)
            if group.window is not None and result.accepted:
                self.tracker.track(group.group, group.window, now)
        self.tier_b = plan

    async def reload_tier_b(self, path: Path | None = None) -> TierBPlan:
        self.tier_b_universe = TierBUniverse.load(path, settings=self.settings.chains)
        plan = self.tier_b_universe.resolve(self.registry, self.today(), self.ltp_of, engine=self.atm)
        self.apply_tier_b(plan)
        self.store.writer.submit_log("TIER_B_RELOAD", actor="admin", count=plan.total, reason=plan.source)
        return plan

    # -- end of day ------------------------------------------------------------------------------------------

    async def _catch_up_eod(self) -> dt.datetime:
        """Run the cleanups missed while down, up to now; return that "now": the scheduler covers every
        close after it, so a close that passes while the service is still starting (a second of real time
        is minutes on a fast virtual clock) is neither missed nor run twice."""
        now = self.clock.now()
        last: dict[str, dt.datetime | None] = {}
        for session in SESSIONS:
            value = await self.store.meta.get(f"eod:{session}")
            last[session] = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
        for session, close in missed_sessions(self.calendar, now, last).items():
            await self.run_eod(session, SESSIONS[session], close, catch_up=True)
        return now

    async def run_eod(
        self,
        session: str,
        exchanges: tuple[Exchange, ...],
        close: dt.datetime | None = None,
        *,
        catch_up: bool = False,
    ) -> dict[str, Any]:
        """Clear Tier A of the session's exchanges (planner and database); Tier B is untouched.
        Idempotent per close: a second call for the same close does nothing."""
        close = close or self.clock.now()
        key = f"eod:{session}"
        previous = await self.store.meta.get(key)
        if isinstance(previous, str) and dt.datetime.fromisoformat(previous) >= close:
            return {"session": session, "skipped": True}
        wanted = set(exchanges)
        groups = 0
        if self._feed is not None:
            now = self.clock.timestamp()
            result = self.orchestrator.apply(
                f"end of day {session}",
                Planner.clear_tier,
                Tier.A,
                reason="EOD",
                now=now,
                only=lambda info: exchange_of_group(info.group) in wanted,
            )
            groups = sum(1 for e in result.events if e.kind.value == "eod")
        rows = await self.store.watchlists.clear(exchanges)
        if self._feed is not None:
            # A watchlist add that committed its row before the delete above but reached the planner after
            # ``clear_tier`` (it was awaiting its commit meanwhile) would stay subscribed with no row left:
            # clear those groups too, so the database and the plan agree after every cleanup.
            now = self.clock.timestamp()
            for row in rows:
                if self.planner.has_group(row.group_id) and self.planner.group(row.group_id).tier is Tier.A:
                    self.orchestrator.apply(f"end of day {session}", Planner.remove_group, row.group_id, now)
                    groups += 1
        saved = 0
        if not catch_up:  # the quotes in hand are this close's (a catch-up at start has none yet)
            saved = await self._save_last_quotes(exchanges, close.astimezone(IST).date())
        await self.store.meta.set(key, close.isoformat())
        summary = {
            "session": session,
            "exchanges": list(exchanges),
            "close": close.isoformat(),
            "groups_cleared": groups,
            "watchlist_rows_deleted": len(rows),
            "last_quotes_saved": saved,
            "catch_up": catch_up,
        }
        self.store.writer.submit_log(
            "EOD_CLEANUP",
            actor="scheduler" if not catch_up else "startup-catch-up",
            count=len(rows),
            reason=f"{session} session closed at {close.isoformat()}",
            details=summary,
        )
        self.eod_runs.append(summary)
        # A session just closed, its Tier A with it: the quietest moment of the day for a full walk of every
        # object, frozen ones too (a one-off pause; MCX may still be trading after the NSE close).
        self.runtime.collect_all()
        return summary

    async def eod_now(self, session: str | None = None) -> list[dict[str, Any]]:
        """``tickgate eod --now`` / ``POST /admin/cleanup``: clear now, whatever the clock says."""
        sessions = [session] if session else list(SESSIONS)
        now = self.clock.now()
        return [await self.run_eod(s, SESSIONS[s], now) for s in sessions]

    async def _save_last_quotes(self, exchanges: tuple[Exchange, ...], day: dt.date) -> int:
        """The closing session's last quotes into the database, for a restart after hours. Currency
        derivatives close at 17:00: they are saved with MCX's session, after their own close."""
        markets: set[str] = set(exchanges) | ({"CDS"} if "MCX" in exchanges else set())
        segments = {seg for seg, market in SEGMENT_MARKET.items() if market in markets}
        try:
            return await self.store.last_quotes.save(self.quotes.priced(segments), day)
        except Exception:  # the cleanup itself is done; a restart tonight shows blanks: logged, counted
            self.loop_failures["last_quotes"] += 1
            log.exception("saving the last quotes of %s failed", ", ".join(exchanges))
            return 0

    async def _restore_last_quotes(self) -> None:
        """At start: the last saved quotes price the store (``saved``) until the feed or backfill does."""
        try:
            saved = await self.store.last_quotes.load(self.today())
        except Exception:
            self.loop_failures["last_quotes"] += 1
            log.exception("reading the saved last quotes failed; starting without them")
            return
        self.quotes.fill(saved, time.monotonic_ns(), source=SOURCE_SAVED)

    def _make_backfiller(self) -> Backfiller | None:
        """The REST backfill, when there is a REST side to ask: Dhan's beside Dhan's feed, or the one given
        (the simulator's). A feed that is not Dhan's with no REST side given runs without (logged)."""
        if not self.settings.feed.backfill:
            return None
        rest = self._rest_url or self.settings.rest_url
        feed = self._feed_url or self.settings.feed_url
        if self._rest_url is None and is_dhan_url(rest) and not is_dhan_url(feed):
            log.info("no REST market quote for the feed at %s: backfill off", feed)
            return None
        return Backfiller(rest, self._credentials, self.quotes, self.settings.limits)

    def _backfill_new(self, change: PlanChange) -> None:
        """Newly subscribed legs get a REST snapshot: users' chains first, then Tier B."""
        if self.backfill is None:
            return
        keys = [k for a in change.result.actions if a.op == "subscribe" for k in a.keys]
        if keys:
            self._backfill_keys(keys)

    def _backfill_keys(self, keys: list[InstrumentKey]) -> None:
        assert self.backfill is not None
        states = self.planner.key_states(keys)
        users = [k for k, s in states.items() if any(not g.startswith("B:") for g in s.owners)]
        self.backfill.want(users, PRIORITY_USER)
        self.backfill.want(keys, PRIORITY_TIER_B)

    async def pre_open(self, day: dt.date) -> None:
        """Before the open: refresh the master and roll Tier B to today's contracts (expired ones out)."""
        if not any(self.calendar.is_trading_day(ex, day) for ex in EXCHANGES):
            return
        if self.backfill is not None:  # a new day: every leg gets a fresh snapshot
            self.backfill.queue.new_day()
        try:
            path = await asyncio.to_thread(resolve_master, self.settings, day)
            registry = await asyncio.to_thread(InstrumentRegistry.load, path, clock=self.clock)
        except Exception as exc:  # keep yesterday's registry rather than stop
            log.error("master refresh failed, keeping the loaded one: %s", exc)
        else:
            self._registry = registry
            self._atm = AtmEngine(registry, self.settings.chains, quotes=self.quotes.get)
            self._tracker = ChainTracker(self._atm, self.settings.chains)
        self.apply_tier_b(self.tier_b_universe.resolve(self.registry, day, self.ltp_of, engine=self.atm))
        pruned = await self.store.atm.prune(day)  # windows of expired contracts: never read again
        log.info("pre-open %s: Tier B rolled, %d expired ATM cache rows pruned", day, pruned)

    # -- ATM recentring ----------------------------------------------------------------------------------

    async def _recentre_loop(self) -> None:
        interval = RECENTRE_CHECK_S
        while True:
            await asyncio.sleep(interval)
            try:
                now = self.clock.timestamp()
                moved = 0
                for change in self.tracker.moves(self.ltp_of, now):
                    moved += self._recentre(change, now)
                    # One chain at a time: a request arriving meanwhile waits for one move, not for a
                    # second's worth of them (docs/decisions/0002-measured-tradeoffs.md).
                    await asyncio.sleep(0)
                self._recentred(moved)
            except Exception:
                self.loop_failures["recentre"] += 1
                log.exception("recentring failed; trying again in %.0f s", interval)

    def recentre_once(self, now: float) -> int:
        """Move every chain whose ATM has moved, at once (the loop above does the same a chain at a time)."""
        moved = sum(self._recentre(change, now) for change in self.tracker.check(self.ltp_of, now))
        self._recentred(moved)
        return moved

    def _recentre(self, change: Recentre, now: float) -> int:
        if not self.planner.has_group(change.group):
            self.tracker.untrack(change.group)
            return 0
        cause = f"recentre of {change.group}"
        result = self.orchestrator.apply(cause, Planner.replace_keys, change.group, change.new.keys(), now)
        if not result.accepted:
            self.tracker.revert(change)
            return 0
        self.remember_atm(change.new)
        return 1

    def _recentred(self, moved: int) -> None:
        self.recentres += moved
