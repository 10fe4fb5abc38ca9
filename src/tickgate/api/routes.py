"""The REST endpoints (prefix ``/api/v2``): thin translations between HTTP and :class:`TickgateService`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any, Literal, NoReturn

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from tickgate import __version__
from tickgate.api.auth import Admin, Principal, Service, User
from tickgate.api.errors import CONFLICT, ERROR_RESPONSES, FORBIDDEN, NOT_CONFIGURED, NOT_FOUND, invalid
from tickgate.api.logs import redact
from tickgate.api.models import (
    AccountOut,
    AuditEntryOut,
    AuditResponse,
    CapacityOut,
    ChainSubscribe,
    CleanupResponse,
    ConnectionOut,
    EodRunOut,
    EvictedOut,
    ExpiriesResponse,
    ExpiryOut,
    FeedStatsOut,
    GroupOut,
    HealthResponse,
    InstrumentOut,
    OptionChainResponse,
    PlannerSnapshotOut,
    QuoteOut,
    QuotesResponse,
    RebalanceResponse,
    SearchResponse,
    StatsResponse,
    SubscriptionsResponse,
    TierBGroupOut,
    TierBReloadResponse,
    TokenIn,
    TokenOut,
    WatchlistAdd,
    WatchlistAddResponse,
    WatchlistEntryOut,
    WatchlistRemoveResponse,
    WatchlistResponse,
    WsStatusResponse,
)
from tickgate.api.render import (
    CachedChain,
    ChainCache,
    chain_json,
    finish_chain,
    quote_dict,
    request_key,
)
from tickgate.dhan.client import ConnectionState
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.feed.quotes import QuoteSnapshot
from tickgate.instruments.model import Instrument
from tickgate.planner import EventKind, GroupInfo, Planner
from tickgate.planner.types import CapacityPlan
from tickgate.schedule.eod import SESSIONS
from tickgate.service import AddResult, TickgateService
from tickgate.service.account import accounts_view
from tickgate.service.errors import NotFound, NotReady
from tickgate.service.watchlists import WatchlistView, group_id_for
from tickgate.store.types import WatchlistEntry

MAX_SECURITY_ID = 2**32 - 1
MAX_QUOTE_KEYS = 1000
STREAM_CHAIN_PREFIX = "chain:"

router = APIRouter(responses=ERROR_RESPONSES)

Symbol = Annotated[str, Path(min_length=1, max_length=64, description="Underlying symbol, e.g. NIFTY.")]
Exchange = Annotated[
    str | None, Query(max_length=16, description="NSE, BSE or MCX when the symbol trades on several.")
]
Mode = Literal["ticker", "quote", "full"]
SegmentName = Literal[
    "IDX_I", "NSE_EQ", "NSE_FNO", "NSE_CURRENCY", "BSE_EQ", "MCX_COMM", "BSE_CURRENCY", "BSE_FNO"
]
_SEGMENT_RE = "|".join(s.name for s in ExchangeSegment)
KEYS_PATTERN = rf"^\s*({_SEGMENT_RE}):\d{{1,9}}\s*(,\s*({_SEGMENT_RE}):\d{{1,9}}\s*)*$"


# -- converters -------------------------------------------------------------------------------------------


def instrument_out(i: Instrument) -> InstrumentOut:
    return InstrumentOut(
        key=str(i.key),
        segment=i.key.segment.name,
        security_id=i.key.security_id,
        exchange=i.exchange,
        instrument=i.instrument,
        symbol=i.symbol,
        trading_symbol=i.trading_symbol,
        display_name=i.display_name,
        lot_size=i.lot_size,
        tick_size=i.tick_size,
        expiry=i.expiry,
        strike=i.strike,
        option_type=i.option_type,
        underlying_symbol=i.underlying_symbol,
    )


def quote_out(q: QuoteSnapshot) -> QuoteOut:
    return QuoteOut.model_validate(quote_dict(q))


def capacity_out(cap: CapacityPlan) -> CapacityOut:
    return CapacityOut(
        total=cap.total,
        live=cap.live,
        tier_b=cap.tier_b,
        tier_a=cap.tier_a,
        free=cap.free,
        placed=cap.placed,
        live_free=cap.live_free,
        suspended_keys=cap.suspended_keys,
        live_connections=cap.live_connections,
    )


def entry_out(entry: WatchlistEntry, view: WatchlistView | None = None) -> WatchlistEntryOut:
    return WatchlistEntryOut(
        id=entry.id,
        symbol=entry.symbol,
        exchange=entry.exchange,
        expiry=entry.expiry,
        strikes=entry.strikes,
        mode=entry.mode.name.lower(),
        group_id=entry.group_id,
        created=entry.created,
        last_used=entry.last_used,
        state=str(entry.state),
        state_reason=entry.state_reason,
        size=view.size if view else 0,
        placed=view.placed if view else False,
        suspended=view.suspended if view else False,
        pinned=view.pinned if view else False,
        atm_strike=view.window.atm_strike if view and view.window else None,
        stream_id=f"{STREAM_CHAIN_PREFIX}{entry.id}",
    )


def group_out(g: GroupInfo) -> GroupOut:
    return GroupOut(
        group=g.group,
        tier=str(g.tier),
        owner=g.owner,
        mode=g.mode.name.lower(),
        size=g.size,
        pinned=g.pinned,
        suspended=g.suspended,
        created=epoch(g.created),
        last_used=epoch(g.last_used),
    )


def add_out(result: AddResult) -> WatchlistAddResponse:
    return WatchlistAddResponse(
        status="added" if result.status == "added" else "touched",
        message=result.message or ("Already watching " + result.entry.symbol),
        entry=entry_out(result.entry, result.view),
        keys=[str(k) for k in result.keys],
        evicted=[
            EvictedOut(group=e.group, user_id=e.user_id, symbol=e.symbol, expiry=e.expiry, size=e.size)
            for e in result.evicted
        ],
        suspended=result.suspended,
        atm_strike=result.window.atm_strike if result.window else None,
    )


def epoch(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def parse_segment(segment: str | None) -> ExchangeSegment | None:
    if segment is None:
        return None
    try:
        return ExchangeSegment.from_name(segment.strip().upper())
    except ValueError as exc:
        raise invalid(str(exc), valid=[s.name for s in ExchangeSegment]) from None


def parse_key(text: str) -> InstrumentKey:
    try:
        key = InstrumentKey.parse(text.strip())
    except ValueError as exc:
        raise invalid(str(exc)) from None
    if key.security_id > MAX_SECURITY_ID:
        raise invalid(f"security id out of range in {text!r}")
    return key


def feed_mode(mode: str) -> FeedMode:
    return FeedMode[mode.upper()]


# -- instruments ------------------------------------------------------------------------------------------


@router.get("/instruments/search", response_model=SearchResponse, tags=["instruments"])
async def search_instruments(
    svc: Service,
    _user: User,
    q: Annotated[str, Query(min_length=1, max_length=64, description="Symbol, name or trading symbol.")],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> SearchResponse:
    results = svc.registry.search(q, limit)
    return SearchResponse(query=q, count=len(results), results=[instrument_out(i) for i in results])


@router.get(
    "/instruments/{symbol}/expiries",
    response_model=ExpiriesResponse,
    responses=NOT_FOUND,
    tags=["instruments"],
)
async def instrument_expiries(
    svc: Service, _user: User, symbol: Symbol, exchange: Exchange = None
) -> ExpiriesResponse:
    underlying = svc.registry.underlying(symbol, exchange)
    if underlying is None:
        raise_not_found(f"unknown symbol {symbol!r}: not in the instrument master")
    expiries = svc.registry.option_expiries(underlying.symbol, svc.today(), exchange=underlying.exchange)
    return ExpiriesResponse(
        symbol=underlying.symbol,
        exchange=underlying.exchange,
        expiries=[ExpiryOut(date=e.date, kind=str(e.kind)) for e in expiries],
    )


@router.get(
    "/instruments/{security_id}", response_model=InstrumentOut, responses=NOT_FOUND, tags=["instruments"]
)
async def instrument_by_id(
    svc: Service,
    _user: User,
    security_id: Annotated[int, Path(ge=0, le=MAX_SECURITY_ID)],
    segment: Annotated[
        SegmentName | None,
        Query(description="Feed segment (NSE_EQ, NSE_FNO…): ids repeat across them."),
    ] = None,
) -> InstrumentOut:
    found = svc.registry.by_security_id(security_id, parse_segment(segment))
    if found is None:
        raise_not_found(
            f"no instrument with security id {security_id}" + (f" in {segment}" if segment else "")
        )
    return instrument_out(found)


def raise_not_found(message: str, **details: Any) -> NoReturn:
    raise NotFound(message, **details)


# -- option chains ----------------------------------------------------------------------------------------


@router.get(
    "/option-chain/{symbol}",
    response_model=OptionChainResponse,
    responses=NOT_FOUND,
    tags=["option chain"],
)
async def option_chain(
    *,
    svc: Service,
    user: User,
    request: Request,
    symbol: Symbol,
    expiry: Annotated[dt.date | None, Query(description="Default: the nearest listed expiry.")] = None,
    strikes: Annotated[int | None, Query(ge=1, le=1001, description="Strikes around the ATM.")] = None,
    ltp: Annotated[float | None, Query(gt=0, lt=1e9, description="Centre here if no live price.")] = None,
    exchange: Exchange = None,
    analytics: Annotated[
        bool, Query(description="Add each leg's IV and Greeks and the chain's ATM IV, PCR, max pain, …")
    ] = False,
) -> Response:
    """The chain around the ATM with every leg's live quote (and, with ``analytics=true``, the analytics
    the server computes once per change for every reader). Rendered once per ``api.chain_cache_s`` per
    distinct request and shared by every caller (only ``watchlist_id`` is the caller's own); repeats are
    answered by :mod:`tickgate.api.fastpath`."""
    cache: ChainCache = request.app.state.chains
    shape = request_key(request.scope)  # the exact request: what the fast path looks up
    chain = cache.get(shape)
    if chain is None:
        sym, exch, exp, _keys, window = svc.watchlists.build(
            symbol, expiry, strikes, exchange=exchange, ltp=ltp
        )
        if (
            window is None or exp is None
        ):  # strikes >= 1 always yields a window; keep mypy and reality aligned
            raise invalid("no option chain for this request")
        extra = (svc.analytics.of(window), svc.analytics.rate) if analytics else None
        body = chain_json(window, request.app.state.renderer, extra)
        chain = CachedChain(cache.clock.monotonic(), body, sym, exch, exp)
        cache.put(shape, chain)
    group = watched_group(svc, user.user_id, chain)
    watchlist_id = None if group is None else await svc.watchlists.entry_id(group)
    return Response(chain_for_caller(svc, chain, group, watchlist_id), media_type="application/json")


def watched_group(svc: TickgateService, user_id: int, chain: CachedChain) -> str | None:
    """The planner group of this chain on the caller's watchlist, None when they do not watch it."""
    group = group_id_for(user_id, chain.exchange, chain.symbol, chain.expiry)
    return group if svc.planner.has_group(group) else None


def chain_for_caller(
    svc: TickgateService, chain: CachedChain, group: str | None, watchlist_id: int | None
) -> bytes:
    """A shared rendered chain finished for one caller (the route's and the fast path's one answer):
    their ``watchlist_id``, and looking at a watched chain counts as a use of it (LRU)."""
    if group is not None and watchlist_id is not None:
        svc.watchlists.touch(group, watchlist_id)
    return finish_chain(chain.body, watchlist_id)


@router.post(
    "/option-chain/{symbol}/subscribe",
    response_model=WatchlistAddResponse,
    responses={**NOT_FOUND, **CONFLICT},
    tags=["option chain"],
)
async def subscribe_chain(
    svc: Service, user: User, symbol: Symbol, body: ChainSubscribe | None = None
) -> WatchlistAddResponse:
    return await add_entry(svc, user, symbol, body or ChainSubscribe())


# -- watchlist --------------------------------------------------------------------------------------------


@router.post(
    "/watchlist", response_model=WatchlistAddResponse, responses={**NOT_FOUND, **CONFLICT}, tags=["watchlist"]
)
async def watchlist_add(svc: Service, user: User, body: WatchlistAdd) -> WatchlistAddResponse:
    return await add_entry(svc, user, body.symbol, body)


async def add_entry(
    svc: TickgateService, user: Principal, symbol: str, body: ChainSubscribe | WatchlistAdd
) -> WatchlistAddResponse:
    """One add path for ``POST /watchlist``, ``POST /option-chain/{symbol}/subscribe`` and the add's fast
    path (:mod:`tickgate.api.fastpath`)."""
    result = await svc.watchlists.add(
        user.user_id,
        symbol,
        expiry=body.expiry,
        strikes=body.strikes,
        mode=feed_mode(body.mode),
        exchange=body.exchange,
        ltp=body.ltp,
    )
    return add_out(result)


@router.delete(
    "/watchlist/{watchlist_id}",
    response_model=WatchlistRemoveResponse,
    responses=NOT_FOUND,
    tags=["watchlist"],
)
async def watchlist_remove(
    svc: Service, user: User, watchlist_id: Annotated[int, Path(ge=1, le=2**62)]
) -> WatchlistRemoveResponse:
    removed = await svc.watchlists.remove(user.user_id, watchlist_id)
    return WatchlistRemoveResponse(removed=entry_out(removed))


@router.get("/watchlist", response_model=WatchlistResponse, tags=["watchlist"])
async def watchlist_list(svc: Service, user: User) -> WatchlistResponse:
    views = await svc.watchlists.list(user.user_id)
    return WatchlistResponse(
        entries=[entry_out(v.entry, v) for v in views], capacity=capacity_out(svc.planner.plan_capacity())
    )


# -- status -----------------------------------------------------------------------------------------------


@router.get("/subscriptions", response_model=SubscriptionsResponse, tags=["status"])
async def subscriptions(svc: Service, _user: User) -> SubscriptionsResponse:
    planner = svc.planner
    totals = planner.totals()
    return SubscriptionsResponse(
        capacity=capacity_out(planner.plan_capacity()),
        desired=totals.desired,
        placed=totals.placed,
        by_tier={str(t): n for t, n in totals.by_tier.items()},
        by_connection={str(c): n for c, n in totals.by_connection.items()},
        by_account={
            link.name: sum(totals.by_connection.get(c, 0) for c in planner.account_connections(i))
            for i, link in enumerate(svc.links)
        },
        account_connections={
            link.name: list(planner.account_connections(i)) for i, link in enumerate(svc.links)
        },
        groups=[group_out(g) for g in planner.groups()],
        suspended=list(planner.suspended()),
    )


@router.get("/ws/status", response_model=WsStatusResponse, tags=["status"])
async def ws_status(svc: Service, _user: User) -> WsStatusResponse:
    feed = svc.feed
    return WsStatusResponse(
        connections=[ConnectionOut.model_validate(row) for row in feed.connection_status()],
        alert=feed.alert,
        warning=feed.warning,
        backlog=feed.backlog,
        account=(views := [AccountOut.model_validate(v) for v in accounts_view(svc)])[0],
        accounts=views,
    )


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Alive but not ready"}},
    tags=["status"],
)
async def health(svc: Service) -> Any:
    try:
        instruments = len(svc.registry)
    except NotReady:
        instruments = -1
    try:
        database = await svc.store.ping()
    except Exception:  # not open yet, or unreachable
        database = False
    try:
        states = [row["state"] for row in svc.feed.connection_status()]
        alert, warning = svc.feed.alert, svc.feed.warning
        # Ready while an account streams: one account's fatal state degrades the service, not stops it.
        serving = any(svc.feed.account_alert(a) is None for a in range(len(svc.feed.pools)))
    except NotReady:
        states, alert, warning, serving = [], None, None, False
    up = sum(1 for s in states if s == str(ConnectionState.UP))
    registry_loaded = instruments >= 0
    sole_alert = alert is not None and len(svc.links) == 1
    ready = (
        registry_loaded and database and up > 0 and serving and not sole_alert and svc.started_at is not None
    )
    status: Literal["ok", "degraded", "starting"]
    if svc.started_at is None:
        status = "starting"
    elif ready and up == len(states):
        status = "ok"
    else:
        status = "degraded"
    body = HealthResponse(
        status=status,
        live=True,
        ready=ready,
        registry_loaded=registry_loaded,
        instruments=max(instruments, 0),
        database=database,
        feed_up=up,
        feed_connections=len(states),
        alert=alert,
        warning=warning,
        uptime_s=svc.uptime_s(),
        account=(views := [AccountOut.model_validate(v) for v in accounts_view(svc)])[0],
        accounts=views,
    )
    if not ready:
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    return body


# -- quotes -----------------------------------------------------------------------------------------------


@router.get("/quotes", response_model=QuotesResponse, tags=["quotes"])
async def quotes(
    svc: Service,
    _user: User,
    keys: Annotated[
        str,
        Query(
            min_length=1,
            max_length=8 * MAX_QUOTE_KEYS,
            pattern=KEYS_PATTERN,
            description="Comma-separated keys, e.g. NSE_EQ:2885,IDX_I:13",
        ),
    ],
) -> QuotesResponse:
    parsed = [parse_key(k) for k in keys.split(",") if k.strip()]
    if not parsed:
        raise invalid("keys: at least one instrument key is needed")
    if len(parsed) > MAX_QUOTE_KEYS:
        raise invalid(f"keys: at most {MAX_QUOTE_KEYS} per request", given=len(parsed))
    out, missing = [], []
    for key in dict.fromkeys(parsed):
        q = svc.quotes.get(key)
        if q is None:
            missing.append(str(key))
        else:
            out.append(quote_out(q))
    return QuotesResponse(quotes=out, missing=missing)


# -- admin ------------------------------------------------------------------------------------------------

ADMIN = {**FORBIDDEN}


@router.post("/admin/cleanup", response_model=CleanupResponse, responses=ADMIN, tags=["admin"])
async def admin_cleanup(
    svc: Service,
    _admin: Admin,
    session: Annotated[
        Literal["NSE_BSE", "MCX"] | None, Query(description="One session; default: all of them.")
    ] = None,
) -> CleanupResponse:
    assert session is None or session in SESSIONS
    runs = await svc.eod_now(session)
    return CleanupResponse(runs=[EodRunOut.model_validate(r) for r in runs])


@router.post("/admin/rebalance", response_model=RebalanceResponse, responses=ADMIN, tags=["admin"])
async def admin_rebalance(svc: Service, _admin: Admin) -> RebalanceResponse:
    result = svc.orchestrator.apply("admin rebalance", Planner.rebalance)
    moves = sum(1 for e in result.events if e.kind is EventKind.MOVE)
    return RebalanceResponse(
        moves=moves,
        actions=len(result.actions),
        by_connection={str(c): n for c, n in svc.planner.totals().by_connection.items()},
    )


@router.get("/admin/planner", response_model=PlannerSnapshotOut, responses=ADMIN, tags=["admin"])
async def admin_planner(svc: Service, _admin: Admin) -> PlannerSnapshotOut:
    """The planner's desired state as it is now: every group per tier in LRU order (oldest use first), its
    keys, mode, pin, suspension and times. For an operator comparing the plan with the sockets and the
    database; large (every subscribed key)."""
    return PlannerSnapshotOut.model_validate(svc.planner.snapshot())


@router.put(
    "/admin/groups/{group_id}/pin", response_model=GroupOut, responses={**ADMIN, **NOT_FOUND}, tags=["admin"]
)
async def admin_pin(svc: Service, _admin: Admin, group_id: str) -> GroupOut:
    """Pin a Tier A chain: it is never evicted to make room for another user's chain (only Tier B, which
    outranks every user, may still take its place). Kept across restarts; gone with the chain."""
    return group_out(await svc.pins.set(group_id, True, svc.store.meta))


@router.delete(
    "/admin/groups/{group_id}/pin", response_model=GroupOut, responses={**ADMIN, **NOT_FOUND}, tags=["admin"]
)
async def admin_unpin(svc: Service, _admin: Admin, group_id: str) -> GroupOut:
    """Unpin a chain: it is evicted in least-recently-used order again."""
    return group_out(await svc.pins.set(group_id, False, svc.store.meta))


@router.post(
    "/admin/token",
    response_model=TokenOut,
    responses={**ADMIN, **NOT_CONFIGURED},
    tags=["admin"],
)
async def admin_token(svc: Service, _admin: Admin, body: TokenIn) -> TokenOut:
    """Set the Dhan access token at runtime: used for every connect and REST request from now on, kept in
    the data directory (0600) for the next start, and every socket in the fatal state (807) reconnects at
    once. The answer carries the token's fingerprint and expiry, never the token."""
    return TokenOut(token=svc.set_token(body.token.get_secret_value(), body.client_id))


@router.get("/admin/stats", response_model=StatsResponse, responses=ADMIN, tags=["admin"])
async def admin_stats(svc: Service, _admin: Admin, request: Request) -> StatsResponse:
    m = svc.feed.metrics
    writer = {k: (redact(v) if isinstance(v, str) else v) for k, v in svc.store.writer.stats().items()}
    return StatsResponse(
        version=__version__,
        uptime_s=svc.uptime_s(),
        today=svc.today(),
        instruments=len(svc.registry),
        capacity=capacity_out(svc.planner.plan_capacity()),
        feed=FeedStatsOut(
            frames=m.frames,
            batches=m.batches,
            packets_by_code={str(k): v for k, v in m.packets_by_code.items()},
            corrupt_frames=m.corrupt_frames,
            unknown_segment=m.unknown_segment,
            dropped_frames=m.dropped_frames,
            undelivered_actions=m.undelivered_actions,
            requests_sent=m.requests_sent,
            decode_lag_last_s=m.decode_lag_last_s,
            decode_lag_max_s=m.decode_lag_max_s,
            server_disconnects={str(k): v for k, v in m.server_disconnects.items()},
            stale_recycles=m.stale_recycles,
            quote_packets=svc.quotes.packets,
            instruments_in_store=len(svc.quotes),
        ),
        store_writer={
            k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
            for k, v in writer.items()
        },
        backfill=None
        if svc.backfill is None
        else {
            **{k: redact(v) if isinstance(v, str) else v for k, v in svc.backfill.stats.to_json().items()},
            "pending": svc.backfill.pending,
        },
        token=svc.tokens.status() if svc.tokens is not None else None,
        push_clients=request.app.state.push.clients,
        recentres=svc.recentres,
        eod_runs=len(svc.eod_runs),
        tier_b_total=svc.tier_b.total if svc.tier_b else 0,
        gc=dataclasses.asdict(svc.runtime.stats),
        wal_checkpoints={
            k: redact(v) if isinstance(v, str) else v
            for k, v in dataclasses.asdict(svc.store.checkpoints).items()
        },
    )


@router.get("/admin/audit", response_model=AuditResponse, responses=ADMIN, tags=["admin"])
async def admin_audit(
    *,
    svc: Service,
    _admin: Admin,
    since: Annotated[dt.datetime | None, Query(description="Only entries at or after (ISO 8601).")] = None,
    until: Annotated[dt.datetime | None, Query(description="Only entries before (ISO 8601).")] = None,
    action: Annotated[
        str | None, Query(max_length=200, description="Action(s), comma-separated, e.g. EVICT,WATCHLIST_ADD.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=0, le=2**62, description="`next_cursor` of the previous page.")
    ] = None,
) -> AuditResponse:
    def aware(t: dt.datetime | None) -> dt.datetime | None:
        return None if t is None else (t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC))

    actions = [a.strip() for a in action.split(",") if a.strip()] if action else None
    page = await svc.store.audit.page(
        since=aware(since), until=aware(until), action=actions, limit=limit, before=cursor
    )
    return AuditResponse(
        entries=[
            AuditEntryOut(
                id=e.id,
                at=e.at,
                actor=e.actor,
                action=e.action,
                group_id=e.group_id,
                owner=e.owner,
                tier=None if e.tier is None else str(e.tier),
                connection=e.connection,
                target=e.target,
                count=e.count,
                mode=None if e.mode is None else e.mode.name.lower(),
                reason=e.reason,
                details=e.details,
            )
            for e in page.entries
        ],
        next_cursor=page.next_cursor,
    )


@router.post("/admin/tier-b/reload", response_model=TierBReloadResponse, responses=ADMIN, tags=["admin"])
async def admin_tier_b_reload(svc: Service, _admin: Admin) -> TierBReloadResponse:
    try:
        plan = await svc.reload_tier_b()
    except (OSError, ValueError, KeyError) as exc:
        raise invalid(f"Tier B file could not be loaded: {exc}") from None
    return TierBReloadResponse(
        total=plan.total,
        groups=[TierBGroupOut(group=g.group, size=g.size, mode=g.mode.name.lower()) for g in plan.groups],
        source=str(plan.source),
    )
