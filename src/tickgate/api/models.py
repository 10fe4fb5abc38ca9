"""Request and response bodies of the REST API: every body in the OpenAPI schema is one of these."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

JSONScalar = str | int | float | bool | None


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. `capacity_exceeded`.")
    message: str = Field(description="What went wrong, for a human.")
    details: dict[str, Any] = Field(default_factory=dict, description="Structured context (free-form).")


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- instruments ----------------------------------------------------------------------------------------


class InstrumentOut(BaseModel):
    key: str = Field(description="Feed key `SEGMENT:SECURITY_ID`.")
    segment: str
    security_id: int
    exchange: str
    instrument: str
    symbol: str
    trading_symbol: str
    display_name: str
    lot_size: int
    tick_size: float
    expiry: dt.date | None = None
    strike: float | None = None
    option_type: str | None = None
    underlying_symbol: str | None = None


class SearchResponse(BaseModel):
    query: str
    count: int
    results: list[InstrumentOut]


class ExpiryOut(BaseModel):
    date: dt.date
    kind: str


class ExpiriesResponse(BaseModel):
    symbol: str
    exchange: str
    expiries: list[ExpiryOut]


# -- quotes ---------------------------------------------------------------------------------------------


class QuoteOut(BaseModel):
    key: str
    ltp: float | None = None
    ltt: int | None = None
    ltq: int | None = None
    atp: float | None = None
    volume: int | None = None
    oi: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    prev_close: float | None = None
    change: float | None = None
    change_pct: float | None = None
    bid: float | None = None
    ask: float | None = None
    bids: list[list[float]] = Field(default_factory=list, description="Depth `[price, qty, orders]`.")
    asks: list[list[float]] = Field(default_factory=list)
    total_buy_qty: int | None = None
    total_sell_qty: int | None = None
    updates: int = Field(0, description="Packets folded into this quote so far (0: no data yet).")
    source: Literal["feed", "rest", "saved", "stale", "none"] = Field(
        "none",
        description="Where the price came from: the live feed, a REST snapshot (before the first trade),"
        " the last close saved at end of day, or nowhere yet; stale: an API replica's copy of a live price"
        " whose stream it lost (never served as live).",
    )
    quoted_at: float | None = Field(
        None, description="When the price was received (epoch seconds, market clock): its age."
    )


class QuotesResponse(BaseModel):
    quotes: list[QuoteOut]
    missing: list[str] = Field(default_factory=list, description="Keys the quote store has never seen.")


# -- option chain ---------------------------------------------------------------------------------------


class LegAnalyticsOut(BaseModel):
    """A leg's Black-76 analytics (``?analytics=true``); null fields carry a ``reason``."""

    iv: float | None = Field(description="Implied volatility, a fraction a year (0.14 = 14 %).")
    delta: float | None = Field(description="Per unit of the forward (Black-76, discounted).")
    gamma: float | None
    theta: float | None = Field(description="Per calendar day.")
    vega: float | None = Field(description="Per volatility point (+0.01 of IV).")
    oi_change: float | None = Field(description="OI against the previous day's.")
    reason: str = Field(
        description="OK, or why the fields are null: NO_PRICE, CROSSED, BELOW_INTRINSIC, EXPIRED,"
        " NO_UNDERLYING, ABOVE_MAX, NO_TIME_VALUE, NO_CONVERGENCE."
    )


class LegOut(BaseModel):
    security_id: int
    key: str
    quote: QuoteOut | None = None
    analytics: LegAnalyticsOut | None = None


class ChainRowOut(BaseModel):
    strike: float
    atm: bool = False
    ce: LegOut | None = None
    pe: LegOut | None = None


class ChainAnalyticsOut(BaseModel):
    """The chain's analytics (docs/decisions/0006-option-analytics.md); null where not computable."""

    spot: float | None
    forward: float | None
    forward_source: str = Field(description="future (the same expiry's), parity (nearest the money) or none.")
    years_to_expiry: float = Field(description="Calendar time to the expiry's close, ACT/365.")
    rate: float
    atm_strike: float | None = Field(description="The strike nearest the forward.")
    atm_iv: float | None
    pcr_oi: float | None = Field(description="Put OI over call OI.")
    pcr_volume: float | None
    max_pain: float | None
    max_pain_strikes: int = Field(description="Strikes with known OI that max pain was computed over.")
    risk_reversal_25d: float | None = Field(description="IV of the 25-delta call minus the 25-delta put.")
    oi_change_calls: float | None
    oi_change_puts: float | None
    computed_at_version: int = Field(description="Bumps at each recomputation (once per change at most).")


class OptionChainResponse(BaseModel):
    symbol: str
    exchange: str
    expiry: dt.date
    expiry_kind: str
    atm_strike: float
    ltp: float
    ltp_source: str
    step: float
    strikes: int
    listed: int
    truncated_below: int
    truncated_above: int
    underlying: LegOut
    rows: list[ChainRowOut]
    analytics: ChainAnalyticsOut | None = Field(None, description="With ``?analytics=true``.")
    watchlist_id: int | None = Field(None, description="The caller's watchlist entry for this chain, if any.")


# -- watchlists -----------------------------------------------------------------------------------------


class WatchlistAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=64, description="Underlying symbol, e.g. RELIANCE.")
    expiry: dt.date | None = Field(None, description="Option expiry; default: the nearest listed.")
    strikes: int | None = Field(
        None, ge=0, le=1001, description="Strikes around the ATM; default by kind; 0: the underlying alone."
    )
    mode: Literal["ticker", "quote", "full"] = "quote"
    exchange: str | None = Field(
        None, max_length=16, description="NSE, BSE, MCX… when a symbol is in several."
    )
    ltp: float | None = Field(
        None, gt=0, lt=1e9, description="Centre on this price when there is no live one."
    )


class ChainSubscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expiry: dt.date | None = None
    strikes: int | None = Field(None, ge=1, le=1001)
    mode: Literal["ticker", "quote", "full"] = "quote"
    exchange: str | None = Field(None, max_length=16)
    ltp: float | None = Field(None, gt=0, lt=1e9)


class EvictedOut(BaseModel):
    group: str
    user_id: int | None
    symbol: str | None
    expiry: str | None
    size: int


class WatchlistEntryOut(BaseModel):
    id: int
    symbol: str
    exchange: str
    expiry: dt.date | None
    strikes: int | None
    mode: str
    group_id: str
    created: dt.datetime
    last_used: dt.datetime
    state: str
    state_reason: str | None
    size: int = 0
    placed: bool = False
    suspended: bool = False
    pinned: bool = Field(False, description="An admin pinned this chain: never evicted for another user's.")
    atm_strike: float | None = None
    stream_id: str = Field(description="Push-channel id of this chain (`chain:<id>`).")


class WatchlistAddResponse(BaseModel):
    status: Literal["added", "touched"]
    message: str
    entry: WatchlistEntryOut
    keys: list[str]
    evicted: list[EvictedOut]
    suspended: bool
    atm_strike: float | None = None


class CapacityOut(BaseModel):
    total: int
    live: int
    tier_b: int
    tier_a: int
    free: int
    placed: int
    live_free: int
    suspended_keys: int
    live_connections: int


class WatchlistResponse(BaseModel):
    entries: list[WatchlistEntryOut]
    capacity: CapacityOut


class WatchlistRemoveResponse(BaseModel):
    removed: WatchlistEntryOut


# -- status ---------------------------------------------------------------------------------------------


class GroupOut(BaseModel):
    group: str
    tier: str
    owner: str
    mode: str
    size: int
    pinned: bool
    suspended: bool
    created: dt.datetime
    last_used: dt.datetime


class PlannerGroupOut(BaseModel):
    id: str
    tier: str
    owner: str
    mode: str
    keys: list[str]
    pinned: bool
    suspended: bool
    created: float = Field(description="Planner time (the service clock's epoch seconds).")
    last_used: float
    updated: float


class PlannerSnapshotOut(BaseModel):
    """The planner's desired state, per tier in LRU order (oldest use first)."""

    version: int
    limits: dict[str, int]
    groups: list[PlannerGroupOut]


class SubscriptionsResponse(BaseModel):
    capacity: CapacityOut
    desired: int
    placed: int
    by_tier: dict[str, int]
    by_connection: dict[str, int]
    by_account: dict[str, int] = Field(
        default_factory=dict,
        description="Instruments each Dhan account's sockets carry, by its name.",
    )
    account_connections: dict[str, list[int]] = Field(
        default_factory=dict, description="Each account's connection ids (the keys of by_connection)."
    )
    groups: list[GroupOut]
    suspended: list[str]


class ConnectionOut(BaseModel):
    id: int
    account: str = Field(description="The Dhan account (its name in the accounts file) the socket is of.")
    state: str
    instruments: int
    connects: int
    reconnects: int
    frames: int
    last_data_age_s: float | None
    up_for_s: float | None
    last_disconnect: str | None
    next_attempt_in_s: float | None


class AccountTokenOut(BaseModel):
    source: str = Field(description="Where the token in use came from: env, file, renewed, generated, admin.")
    expires_at: str | None
    last_renewal: str = Field(description="When the token in use was obtained (renewed, generated or set).")
    renew_at: str | None
    headless_generation: bool = Field(description="DHAN_PIN and DHAN_TOTP_SECRET are set.")
    failures: int
    last_error: str | None


class SocketsOut(BaseModel):
    account: int
    reserved: int
    tickgate: int = Field(description="Sockets tickgate may hold now.")
    configured: int = Field(description="The account's sockets less the reserved ones.")
    given_up: list[int] = Field(description="Sockets left to another program on the client id.")
    why: str | None
    next_probe_in_s: float | None


class FatalOut(BaseModel):
    reason: str
    how_to_leave: str


class MasterOut(BaseModel):
    file: str | None
    day: str | None = Field(description="The day the loaded master was downloaded for (None: a set file).")
    age_days: int | None


class AccountOut(BaseModel):
    """The account's state (tickgate.service.account): never a token, PIN or TOTP secret."""

    name: str = Field(description="The account's name in the accounts file (default: the one account).")
    client_id: str | None
    instruments: int | None = Field(description="Instruments its sockets carry now.")
    token: AccountTokenOut | None
    blocked_until: str | None = Field(description="Dhan answered 429: no connect before this (IST).")
    sockets: SocketsOut | None
    fatal: FatalOut | None
    master: MasterOut


class WsStatusResponse(BaseModel):
    connections: list[ConnectionOut]
    alert: str | None = Field(description="A fatal account condition: the feed stopped retrying.")
    warning: str | None = Field(
        None,
        description="Worth a look: every socket of a trading market silent at once, or sockets given up.",
    )
    backlog: int
    account: AccountOut | None = Field(None, description="The first account (the one-account case's).")
    accounts: list[AccountOut] = Field(default_factory=list, description="Every pooled account.")


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "starting"]
    live: bool
    ready: bool
    registry_loaded: bool
    instruments: int
    database: bool
    feed_up: int
    feed_connections: int
    alert: str | None = None
    warning: str | None = None
    uptime_s: float | None = None
    account: AccountOut | None = Field(None, description="The first account (the one-account case's).")
    accounts: list[AccountOut] = Field(default_factory=list, description="Every pooled account.")


# -- admin ----------------------------------------------------------------------------------------------


class EodRunOut(BaseModel):
    session: str
    skipped: bool = False
    exchanges: list[str] = Field(default_factory=list)
    close: str | None = None
    groups_cleared: int = 0
    watchlist_rows_deleted: int = 0
    catch_up: bool = False


class CleanupResponse(BaseModel):
    runs: list[EodRunOut]


class RebalanceResponse(BaseModel):
    moves: int
    actions: int
    by_connection: dict[str, int]


class TierBGroupOut(BaseModel):
    group: str
    size: int
    mode: str


class TierBReloadResponse(BaseModel):
    total: int
    groups: list[TierBGroupOut]
    source: str | None = None


class AuditEntryOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    group_id: str | None
    owner: str | None
    tier: str | None
    connection: int | None
    target: int | None
    count: int
    mode: str | None
    reason: str | None
    details: Any = None


class AuditResponse(BaseModel):
    entries: list[AuditEntryOut]
    next_cursor: int | None


class FeedStatsOut(BaseModel):
    frames: int
    batches: int
    packets_by_code: dict[str, int]
    corrupt_frames: int
    unknown_segment: int
    dropped_frames: int
    undelivered_actions: int
    requests_sent: int
    decode_lag_last_s: float
    decode_lag_max_s: float
    server_disconnects: dict[str, int]
    stale_recycles: int
    quote_packets: int
    instruments_in_store: int


class TokenIn(BaseModel):
    """A Dhan access token set at runtime (held as a secret: never echoed, not even in a validation error)."""

    token: SecretStr = Field(description="The new access token.")
    client_id: str | None = Field(None, max_length=64, description="Only if it changes with the token.")


class TokenOut(BaseModel):
    """The token's state: a fingerprint, never the token."""

    token: dict[str, JSONScalar]


class StatsResponse(BaseModel):
    version: str
    uptime_s: float | None
    today: dt.date
    instruments: int
    capacity: CapacityOut
    feed: FeedStatsOut
    store_writer: dict[str, JSONScalar]
    backfill: dict[str, JSONScalar] | None = Field(
        None,
        description="REST market-quote backfill: requests, instruments, priced, 429s, failures, pending.",
    )
    token: dict[str, JSONScalar] | None = Field(
        None,
        description="The Dhan token's fingerprint, source, expiry, next renewal, renewals and failures"
        " (None: credentials injected, or no REST side to renew them with).",
    )
    push_clients: int
    recentres: int
    eod_runs: int
    tier_b_total: int
    gc: dict[str, JSONScalar] = Field(
        default_factory=dict,
        description="The cyclic GC's full collections and their pauses (tickgate.service.runtime).",
    )
    wal_checkpoints: dict[str, JSONScalar] = Field(
        default_factory=dict,
        description="SQLite: WAL checkpoints run off the event loop (count, failures, pause, WAL frames).",
    )
