"""The tickgate service: registry, planner, feed, store, chains and end of day, wired on one event loop.

Start-up is recovery: the database's watchlists and the Tier B configuration are the desired state; the
planner places them as the sockets come up; the subscriptions table is rewritten from the planner. So a
restart, a reconnect and a rebalance all end in the same place — desired == actual.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tickgate.accounts import DEFAULT_NAME, Account, load_accounts
from tickgate.analytics.engine import AnalyticsEngine
from tickgate.bus.publisher import TickPublisher
from tickgate.chains.atm import AtmEngine, ChainWindow
from tickgate.chains.tierb import TierBPlan, TierBUniverse
from tickgate.chains.tracker import ChainTracker, Recentre
from tickgate.clock import IST, Clock
from tickgate.config import FeedLimits, Settings, is_dhan_url
from tickgate.dhan.client import Credentials, CredentialsProvider, DownReason
from tickgate.dhan.protocol import InstrumentKey
from tickgate.dhan.tokens import TokenManager
from tickgate.feed import FeedManager, QuoteStore
from tickgate.feed.backfill import PRIORITY_TIER_B, PRIORITY_USER, Backfiller
from tickgate.feed.manager import FeedAccount
from tickgate.feed.quotes import SOURCE_SAVED
from tickgate.instruments import InstrumentRegistry
from tickgate.orchestrator import Orchestrator, PlanChange
from tickgate.planner import Planner, Tier
from tickgate.schedule.calendar import EXCHANGES, Exchange, TradingCalendar
from tickgate.schedule.eod import SESSIONS, EodScheduler, missed_sessions, session_close
from tickgate.schedule.sessions import SEGMENT_MARKET, Market, MarketSessions
from tickgate.service.account import master_day
from tickgate.service.errors import InvalidInput, NotConfigured, NotReady
from tickgate.service.pins import Pins
from tickgate.service.runtime import RuntimePolicy
from tickgate.service.watchlists import WatchlistManager, exchange_of_group
from tickgate.store import Store
from tickgate.store.planner_view import PlannerSubscriptions
from tickgate.store.types import AtmEntry, WatchlistState

log = logging.getLogger(__name__)

TIER_B_ACTOR = "tier-b"
RECENTRE_CHECK_S = 1.0  # how often live LTPs are compared with the chains' ATMs (hysteresis does the rest)


def resolve_master(settings: Settings, today: dt.date, *, feed_url: str | None = None) -> Path:
    """Which scrip master to load: a configured file; else today's cached download; else today's download
    from a configured URL, or from Dhan's when the feed is Dhan's own (retried; if every attempt fails, the
    newest cached copy, with an error that says how old it is; never a generated master, whose security
    ids do not exist there); else (offline, the simulator) a generated full-size master, cached per day
    so restarts load the same."""
    from tickgate.instruments import cached_master_path, generate_master

    source = settings.instruments
    if source and not source.startswith(("http://", "https://")):
        return Path(source).expanduser()
    cached = cached_master_path(settings.data_dir, today)
    if cached.exists():
        return cached
    if source or is_dhan_url(feed_url or settings.feed_url):
        return download_master(settings, source or settings.master.url, today)
    generated = settings.data_dir / "masters" / f"generated-{today.isoformat()}.csv"
    if not generated.exists():
        generated.parent.mkdir(parents=True, exist_ok=True)
        tmp = generated.with_suffix(".part")
        generate_master(tmp, fmt="detailed", seed=0, today=today)
        tmp.replace(generated)
    return generated


def download_master(settings: Settings, url: str, today: dt.date) -> Path:
    """Today's master from ``url``, tried ``len(master.retry_pauses_s)`` times; then the newest cached copy
    (logged as an error with its age); with none, :class:`MasterFetchError` saying what to set."""
    from tickgate.instruments import fetch_master
    from tickgate.instruments.fetch import MasterFetchError

    pauses = settings.master.retry_pauses_s
    for attempt, pause in enumerate(pauses, 1):
        time.sleep(pause)
        try:
            # A progress bar when a person watches the start (a terminal); none in logs and services.
            got = fetch_master(url, settings.data_dir, today=today, progress=sys.stderr.isatty())
        except MasterFetchError as exc:
            log.warning("scrip master download %d of %d failed: %s", attempt, len(pauses), exc)
            if attempt == len(pauses):
                raise MasterFetchError(
                    f"{exc}. Against a real feed tickgate never uses a generated master: set"
                    " TICKGATE_INSTRUMENTS to a master file, or retry when the download works"
                ) from exc
            continue
        if got.stale and attempt < len(pauses):
            log.warning("scrip master download %d of %d failed: %s", attempt, len(pauses), got.error)
            continue
        if got.stale:
            log.error(
                "the scrip master could not be downloaded (%s): using the copy of %d day(s) ago, %s",
                got.error,
                (today - (master_day(got.path) or today)).days,
                got.path.name,
            )
        return got.path
    raise AssertionError("unreachable: the last attempt returns or raises")


def credentials_from_settings(settings: Settings) -> CredentialsProvider:
    """Dhan credentials from the environment, re-read at every connect (a rolled-over token is picked up
    by restarting with the new env — or by a custom provider)."""

    def provide() -> Credentials:
        cid, token = settings.dhan_client_id, settings.dhan_access_token
        if cid is None or token is None:
            raise NotReady("DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN are not set")
        return Credentials(cid.get_secret_value(), token.get_secret_value())

    return provide


@dataclass
class AccountLink:
    """One Dhan account as the service runs it: its configuration, its limits (its own reserved sockets),
    its token manager (None: credentials injected, or no REST side to renew on) and the credentials every
    connect of its sockets asks for."""

    account: Account
    limits: FeedLimits
    tokens: TokenManager | None
    credentials: CredentialsProvider

    @property
    def name(self) -> str:
        return self.account.name


def _static(client_id: str, token: SecretStr | None) -> CredentialsProvider:
    def provide() -> Credentials:
        if token is None:
            raise NotReady(f"no access token for client id {client_id}")
        return Credentials(client_id, token.get_secret_value())

    return provide


class TickgateService:
    """Owns every part; the API layer calls into it. ``start()``/``stop()`` bracket its life."""

    replica = False  # an API replica's service (tickgate.replica) holds no socket and no plan of its own

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
        accounts: Sequence[Account] | None = None,
    ) -> None:
        self.settings = settings
        # The one clock: sessions, EOD, expiries, LRU and cooldown times, caches (see tickgate.clock).
        self.clock = clock or settings.make_clock()
        self._feed_url = feed_url
        self._rest_url = rest_url
        # Each account's Dhan token is renewed (or generated) and kept on disk by a token manager, when
        # there is a REST side to ask; an injected provider is one account, used as given.
        self.links = self._make_links(credentials, accounts)
        self._credentials = self.links[0].credentials  # the REST backfill's (one client id's rate limit)
        self.backfill: Backfiller | None = None
        self.publisher: TickPublisher | None = None  # with a broker (settings.bus_url): the replicas' quotes
        self._registry = registry
        self._store = store
        self.calendar = calendar or TradingCalendar.load()
        self.sessions = MarketSessions(self.calendar)
        self._use_scheduler = scheduler
        self.runtime = RuntimePolicy()
        self.planner = Planner(settings.limits, accounts=[link.limits.feed_sockets for link in self.links])
        self.orchestrator = Orchestrator(self.planner)  # the one path for every change of plan
        self._subscriptions_view = PlannerSubscriptions(self.planner, self.clock)
        self.quotes = QuoteStore(clock=self.clock)
        # Each served chain's analytics, computed once per change and at most at the push rate.
        self.analytics = AnalyticsEngine(
            self.quotes,
            self.clock,
            rate=settings.analytics.rate,
            min_interval_s=settings.analytics.min_interval_s,
            future_of=self._future_of,
        )
        self.watchlists = WatchlistManager(self)
        self.tier_b_universe = TierBUniverse.load(settings=settings.chains)
        self.tier_b: TierBPlan | None = None
        self.eod: EodScheduler | None = None
        self.started_at: dt.datetime | None = None  # market time (the clock's) of the last start
        self._started_mono = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._feed: FeedManager | None = None
        self.master_path: Path | None = None  # the scrip master loaded (its name carries its day)
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
    def feed_or_none(self) -> FeedManager | None:
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
        await self._load_chains()
        if self._store is None:
            self._store = await Store.from_settings(self.settings, clock=self.clock)
        self._feed = FeedManager(
            self.settings,
            self.planner,
            [FeedAccount(link.name, link.credentials, link.limits) for link in self.links],
            store=self.quotes,
            url=self._feed_url,
            trading=self.trading_markets,
            orchestrator=self.orchestrator,
            market_seconds=self.clock.monotonic,
        )
        caught_up_to = await self._catch_up_eod()
        placed = {(e.underlying, e.expiry): e.atm for e in await self.store.atm.all()}
        self.apply_tier_b(
            self.tier_b_universe.resolve(
                self.registry, self.today(), engine=self.atm, placed=lambda s, d: placed.get((s, d))
            )
        )
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
        for i, link in enumerate(self.links):
            if link.tokens is not None:  # a new token brings sockets parked on a fatal 807 back at once
                pool = self.feed.pools[i]
                link.tokens.on_change(lambda _new, pool=pool: pool.clear_fatal())  # type: ignore[misc]
                pool.on_fatal = partial(self._token_refused, link)
                link.tokens.start()
        if self.settings.bus_url is not None:  # a gateway: its replicas follow its quotes
            self.publisher = TickPublisher(
                self.quotes, self.settings.bus_url, prefix=self.settings.bus_prefix
            )
            await self.publisher.start()
            self.feed.on_applied = self.publisher.frames
        await self.feed.start()
        if self.backfill is not None:
            self.backfill.start()
            self._backfill_keys(list(self.planner.desired(include_suspended=True)))
            self.backfill.mark_startup()
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

    async def _load_chains(self) -> None:
        """The registry (today's master, unless one was handed in), and the ATM engine and chain tracker
        over it and the live quotes."""
        if self._registry is None:
            path = await asyncio.to_thread(
                resolve_master, self.settings, self.today(), feed_url=self._feed_url
            )
            self._registry = await asyncio.to_thread(InstrumentRegistry.load, path, clock=self.clock)
            self.master_path = path
        self._atm = AtmEngine(self.registry, self.settings.chains, quotes=self.quotes.get)
        self._tracker = ChainTracker(self._atm, self.settings.chains)

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
        for link in self.links:
            if link.tokens is not None:
                await link.tokens.stop()
        if self._feed is not None:
            await self._feed.stop()
        if self.publisher is not None:
            await self.publisher.stop()
            self.publisher = None
        await self.pins.flush()
        if self._store is not None:
            await self._save_shut_sessions_quotes()
            self.snapshot_subscriptions()
            await self._store.close()
        self.runtime.uninstall()

    def _token_refused(self, link: AccountLink, reason: DownReason, fingerprint: str) -> None:
        """Dhan refused the token in use (807 expired, 808 invalid): get a new one now. (A socket still on
        a token already replaced needs nothing: it reconnects with the new one.)"""
        tokens = link.tokens
        if (
            tokens is not None
            and reason.code in (807, 808)
            and tokens.credentials().fingerprint == fingerprint
        ):
            log.warning("Dhan refused account %s's token (%s): refreshing it now", link.name, reason.code)
            tokens.renew_now()

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

    def remember_atm(self, window: ChainWindow, group: str | None = None) -> None:
        """Where a chain's window sits: per underlying and expiry (the ATM cache, for Tier B and a chain's
        next add) and, for a users' chain, on its own watchlist row (what its restart rebuilds)."""
        if group is not None and not group.startswith(f"{Tier.B}:"):
            self.store.writer.submit_window(group, window.atm_strike)
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

    def _future_of(self, window: ChainWindow) -> InstrumentKey | None:
        """The future of the window's underlying and expiry, when one is listed: the chain's forward."""
        if self._registry is None:
            return None
        expiry = window.expiry.date
        for future in self._registry.futures(window.symbol, expiry, exchange=window.exchange):
            if future.expiry == expiry:
                return future.key
        return None

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
                    cause,
                    Planner.add_group,
                    group.group,
                    Tier.B,
                    group.keys,
                    group.mode,
                    TIER_B_ACTOR,
                    now,
                    family=group.entry,  # an index's chains across expiries: spread over the accounts
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
            # Which rows went (evicted ones too, which no planner event names): the audit shows every change.
            details={**summary, "rows": [row.group_id for row in rows]},
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

    async def _save_shut_sessions_quotes(self) -> None:
        """At a stop after a session's close (the same day): its last quotes again, as they are now. The
        save at the close can miss a trade that was still in flight then, and a restart would show the
        price before it."""
        now = self.clock.now()
        for session, exchanges in SESSIONS.items():
            close = session_close(self.calendar, session, now.astimezone(IST).date())
            if close is not None and close <= now:
                await self._save_last_quotes(exchanges, close.astimezone(IST).date())

    async def _restore_last_quotes(self) -> None:
        """At start: the last saved quotes price the store (``saved``) until the feed or backfill does."""
        try:
            saved = await self.store.last_quotes.load(self.today())
        except Exception:
            self.loop_failures["last_quotes"] += 1
            log.exception("reading the saved last quotes failed; starting without them")
            return
        self.quotes.fill(saved, time.monotonic_ns(), source=SOURCE_SAVED)

    @property
    def tokens(self) -> TokenManager | None:
        """The first account's token manager (the one-account case's only one)."""
        return self.links[0].tokens

    def set_token(self, token: str, client_id: str | None = None) -> dict[str, Any]:
        """An operator's new Dhan token: used from now on, kept on disk, and every socket parked on a fatal
        807 tries again at once (no restart). With several accounts, ``client_id`` says whose."""
        link = self.links[0]
        if client_id is not None and len(self.links) > 1:
            found = [x for x in self.links if x.account.client_id == client_id]
            if not found:
                raise InvalidInput(f"no account with client id {client_id}")
            link = found[0]
        elif len(self.links) > 1:
            raise InvalidInput("several accounts: say whose token this is (client_id)")
        tokens = link.tokens
        if tokens is None:
            raise NotConfigured("no token manager: the credentials are injected, or there is no REST side")
        try:
            tokens.set_token(token, client_id)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        self.store.writer.submit_log(
            "TOKEN_SET", actor="admin", owner=link.name, reason=tokens.credentials().fingerprint
        )
        return tokens.status()

    def _rest_side(self) -> str | None:
        """The REST side beside the feed: Dhan's beside Dhan's feed, or the one given (the simulator's);
        None for a feed that is not Dhan's with no REST side given (no backfill, no token renewal)."""
        rest = self._rest_url or self.settings.rest_url
        feed = self._feed_url or self.settings.feed_url
        if self._rest_url is None and is_dhan_url(rest) and not is_dhan_url(feed):
            log.info("no REST side for the feed at %s: backfill and token renewal off", feed)
            return None
        return rest

    def _make_backfiller(self) -> Backfiller | None:
        if not self.settings.feed.backfill:
            return None
        rest = self._rest_side()
        return (
            None
            if rest is None
            else Backfiller(
                rest, self._credentials, self.quotes, self.settings.limits, speed=self.clock.speed
            )
        )

    def _make_links(
        self, credentials: CredentialsProvider | None, accounts: Sequence[Account] | None
    ) -> list[AccountLink]:
        """The accounts this service pools, each with its token manager and credentials."""
        limits = self.settings.limits
        if credentials is not None:
            return [AccountLink(Account(DEFAULT_NAME, ""), limits, None, credentials)]
        chosen = list(accounts) if accounts is not None else load_accounts(self.settings)
        if not chosen:  # nothing configured: the environment is read at each connect (NotReady until set)
            return [
                AccountLink(Account(DEFAULT_NAME, ""), limits, None, credentials_from_settings(self.settings))
            ]
        links = []
        for account in chosen:
            tokens = self._make_tokens(account)
            provider = (
                tokens.credentials if tokens is not None else _static(account.client_id, account.access_token)
            )
            links.append(AccountLink(account, account.limits(limits), tokens, provider))
        return links

    def _make_tokens(self, account: Account) -> TokenManager | None:
        s = self.settings
        rest = self._rest_side()
        if account.access_token is None or rest is None:
            return None
        return TokenManager(
            account.client_id,
            account.access_token.get_secret_value(),
            clock=self.clock,
            data_dir=s.data_dir,
            token_file=account.token_file,
            rest_url=rest,
            auth_url=s.auth_url if is_dhan_url(rest) else rest,
            renew_margin_s=s.token_renew_margin_s,
            pin=account.pin.get_secret_value() if account.pin else None,
            totp_secret=account.totp_secret.get_secret_value() if account.totp_secret else None,
        )

    def _backfill_new(self, change: PlanChange) -> None:
        """Newly subscribed legs get a REST snapshot: users' chains first, then Tier B."""
        if self.backfill is None:
            return
        keys = [k for a in change.result.actions if a.op == "subscribe" for k in a.keys]
        if keys:
            self._backfill_keys(keys)

    def _backfill_keys(self, keys: list[InstrumentKey]) -> None:
        assert self.backfill is not None
        self.backfill.want(self.planner.wanted_by_tier_a(keys), PRIORITY_USER)
        self.backfill.want(keys, PRIORITY_TIER_B)

    async def pre_open(self, day: dt.date) -> None:
        """Before the open: refresh the master and roll Tier B to today's contracts (expired ones out)."""
        if not any(self.calendar.is_trading_day(ex, day) for ex in EXCHANGES):
            return
        if self.backfill is not None:  # a new day: every leg gets a fresh snapshot
            self.backfill.queue.new_day()
        if self._feed is not None:  # and every socket may carry the full limit again after an 804
            self._feed.reset_ceilings()
        try:
            path = await asyncio.to_thread(resolve_master, self.settings, day, feed_url=self._feed_url)
            registry = await asyncio.to_thread(InstrumentRegistry.load, path, clock=self.clock)
        except Exception as exc:  # keep yesterday's registry rather than stop
            log.error("master refresh failed, keeping the loaded one: %s", exc)
        else:
            self._registry = registry
            self.master_path = path
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
        self.remember_atm(change.new, change.group)
        return 1

    def _recentred(self, moved: int) -> None:
        self.recentres += moved
