"""The one settings object. Every limit and tunable lives here; no other module hard-codes them.

Values come from the environment (prefix ``TICKGATE_``) or a ``.env`` file, so the same code runs the demo,
the tests and a production account. Dhan's own credentials keep Dhan's names (``DHAN_CLIENT_ID`` /
``DHAN_ACCESS_TOKEN``) and are held as secrets so they never print.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, AwareDatetime, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tickgate.clock import Clock, clock_for


class FeedLimits(BaseModel, frozen=True):
    """Dhan's documented limits for one account on the live market feed (v2)."""

    sockets_per_account: int = Field(5, ge=1, description="Feed WebSocket connections per client id.")
    instruments_per_socket: int = Field(5000, ge=1, description="Instruments subscribed on one connection.")
    instruments_per_message: int = Field(100, ge=1, description="Instruments in one subscribe message.")
    quote_instruments_per_request: int = Field(
        1000, ge=1, description="Instruments in one REST market-quote request (/v2/marketfeed/*)."
    )
    quote_requests_per_second: float = Field(
        1.0, gt=0, description="REST market-quote requests per second per client id; beyond it, HTTP 429."
    )

    reserved_sockets: int = Field(
        0,
        ge=0,
        description="Of the account's sockets, how many tickgate leaves to the desk's other programs on the"
        " same client id (a 6th socket would drop the oldest with 805).",
    )

    @model_validator(mode="after")
    def _one_socket_left(self) -> FeedLimits:
        if self.reserved_sockets >= self.sockets_per_account:
            raise ValueError(
                f"reserved_sockets ({self.reserved_sockets}) must leave at least one of the account's"
                f" {self.sockets_per_account} sockets to tickgate"
            )
        return self

    @property
    def feed_sockets(self) -> int:
        """The sockets tickgate opens and plans on: the account's, less those reserved for other programs."""
        return self.sockets_per_account - self.reserved_sockets

    @property
    def total_capacity(self) -> int:
        return self.feed_sockets * self.instruments_per_socket


class MasterSettings(BaseModel, frozen=True):
    """Where the scrip master comes from and how strict loading it is (tickgate.instruments)."""

    url: str = Field(
        "https://images.dhan.co/api-data/api-scrip-master-detailed.csv",
        description="Dhan's detailed instrument master (refreshed daily).",
    )
    max_bad_row_fraction: float = Field(
        0.01, ge=0, le=1, description="Above this share of unreadable rows the whole file is rejected."
    )
    fetch_timeout_s: float = Field(60.0, gt=0, description="Per-read timeout of the master download.")
    keep_copies: int = Field(5, ge=1, description="Cached daily masters kept in <data_dir>/masters.")
    retry_pauses_s: tuple[float, ...] = Field(
        (0.0, 2.0, 10.0),
        min_length=1,
        description="Seconds before each attempt to download the day's master (its length is the number of"
        " attempts); after the last, the newest cached copy is used, with an error saying how old it is.",
    )


class FeedClientSettings(BaseModel, frozen=True):
    """How the feed client connects, retries and watches its sockets (``dhan.client``, ``feed``)."""

    open_interval_s: float = Field(
        0.1, ge=0, description="Minimum gap between two socket opens of one account (no connect storms)."
    )
    backoff_initial_s: float = Field(2.0, gt=0, description="First reconnect delay (before jitter).")
    backoff_cap_s: float = Field(60.0, gt=0, description="Longest reconnect delay.")
    backoff_stable_s: float = Field(
        60.0, gt=0, description="A socket up this long resets its backoff (overnight drops never add up)."
    )
    backoff_805_s: float = Field(
        90.0, gt=0, description="Delay after Dhan's 805 (too many connections): never reconnect-storm."
    )
    block_cooloff_s: float = Field(
        120.0, gt=0, description="After Dhan's 429 at a handshake: the whole account waits this long..."
    )
    block_cooloff_max_s: float = Field(
        1_800.0,
        gt=0,
        description="... doubling while it happens again before a connection succeeds, to this.",
    )
    budget_strikes: int = Field(
        2,
        ge=1,
        description="805s (another program opened a socket on the client id) within budget_window_s that"
        " make tickgate give up the sockets they closed instead of dropping the other program in turn.",
    )
    budget_window_s: float = Field(
        600.0, gt=0, description="Market seconds: the 805 window, and how long a probe must live."
    )
    budget_regrow_after_s: float = Field(
        5_400.0,
        gt=0,
        description="Market seconds without an 805 before one given-up socket is probed back (a desk's other"
        " program usually runs for hours: probing sooner costs it a socket for nothing).",
    )
    budget_regrow_max_s: float = Field(
        4 * 3_600.0, gt=0, description="The wait doubles after a failed probe, to this."
    )
    fatal_recheck_s: float = Field(
        30.0, gt=0, description="After a fatal reason (bad/expired token…), how often the token is re-read."
    )
    connect_timeout_s: float = Field(10.0, gt=0)
    ping_interval_s: float = Field(10.0, gt=0, description="Client-side keepalive pings.")
    ping_timeout_s: float = Field(30.0, gt=0, description="A socket that stops answering pings is dead.")
    close_timeout_s: float = Field(
        2.0,
        gt=0,
        description="How long a closing handshake may take before the TCP connection is cut"
        " (a dead server never answers it).",
    )
    backfill: bool = Field(
        True, description="Fill every newly subscribed leg from the REST market quote (feed.backfill)."
    )
    stale_after_s: float = Field(
        30.0,
        gt=0,
        description="No data for this long while one of its markets trades, when a peer socket carrying"
        " that market did receive data: the socket is stale and is recycled (feed.watchdog).",
    )
    recycle_min_interval_s: float = Field(
        60.0, ge=0, description="A socket is recycled as stale at most once in this long."
    )
    recycles_per_window: int = Field(
        3, ge=1, description="Stale recycles per account in recycle_window_s at most (805 protection)."
    )
    recycle_window_s: float = Field(60.0, gt=0)
    startup_barrier_s: float = Field(
        5.0,
        ge=0,
        description="At start, wait this long for every socket to open before placing the plan,"
        " so it is spread evenly at once instead of piled on the first socket and then moved.",
    )
    decode_batch_frames: int = Field(4096, ge=1, description="Frames decoded per batch on the hot path.")
    decode_gather_s: float = Field(
        0.002,
        ge=0,
        le=0.05,
        description="How long the decoder lets frames gather after the first arrives (batching; adds at most"
        " this to tick latency).",
    )
    decode_batch_bytes: int = Field(
        256 * 1024, ge=1, description="Bytes decoded per batch at most (stacked frames carry many packets)."
    )
    max_pending_frames: int = Field(
        1_000_000, ge=1, description="Received-but-undecoded frames kept; beyond it the oldest are dropped."
    )


class StoreSettings(BaseModel, frozen=True):
    """How the database is used (tickgate.store); the URL itself is ``Settings.db_url``."""

    pg_schema: str | None = Field(
        None, description="PostgreSQL schema to keep the tables in (created if missing); None: the default."
    )
    pool_size: int = Field(4, ge=1, description="Pooled connections (PostgreSQL; SQLite readers).")
    busy_timeout_ms: int = Field(
        10_000, ge=0, description="SQLite: how long a write waits for another process's lock before failing."
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="SQLite: NORMAL (with WAL) survives a process kill; FULL also a power cut."
    )
    checkpoint_interval_s: float = Field(
        1.0,
        gt=0,
        description="SQLite: how often the WAL is checkpointed into the database (on a worker thread).",
    )
    writer_high_water: int = Field(
        10_000, ge=1, description="Queued audit rows above which async producers wait (nothing is dropped)."
    )
    writer_batch_max: int = Field(
        50, ge=1, description="Audit rows per transaction at most (short: awaited writes queue behind it)."
    )
    writer_linger_s: float = Field(
        0.02, ge=0, description="How long the writer waits to gather a batch after the first item arrives."
    )
    writer_retry_cap_s: float = Field(5.0, gt=0, description="Longest wait between retries of a write.")
    writer_snapshot_interval_s: float = Field(
        1.0, ge=0, description="Subscriptions snapshots are written at most this often (latest wins)."
    )
    writer_yield_max_s: float = Field(
        0.05,
        ge=0,
        description="Longest a writer batch waits for a gap in users' requests before it goes anyway"
        " (SQLite: users' writes go first).",
    )
    writer_subs_chunk: int = Field(
        50,
        ge=1,
        description="Subscription rows per transaction when writing a change set: awaited writes (a user's"
        " add) wait for one chunk at most, not for the whole change.",
    )


class AnalyticsSettings(BaseModel, frozen=True):
    """Live option analytics (tickgate.analytics; docs/decisions/0006-option-analytics.md)."""

    rate: float = Field(
        0.065,
        ge=-0.05,
        le=0.5,
        description="Risk-free rate, continuously compounded, for Black-76's discounting and put-call parity"
        " (6.5 %: close to Indian short rates, and the simulator's cost of carry).",
    )
    min_interval_s: float = Field(
        0.5,
        gt=0,
        le=10,
        description="A chain's analytics are recomputed at most this often (and only when a leg moved),"
        " however many REST callers and push clients read them. The push sends them at most"
        " api.push_analytics_hz (2) a second: recomputing more often than that is work no client receives,"
        " done on the event loop between the quotes' sends.",
    )


class ApiSettings(BaseModel, frozen=True):
    """The HTTP API and its live push channel (tickgate.api)."""

    push_max_hz: float = Field(
        100.0,
        gt=0,
        le=1000,
        description="Most updates per second sent to one push client (coalesced; a client may ask for fewer"
        " with ?max_hz=). Also the latency bound: a tick waits at most 1/max_hz for its client's next send"
        " (100: at most 10 ms, so a tick reaches 100 clients within 50 ms at p99 at 50k packets/s).",
    )
    push_analytics_hz: float = Field(
        2.0,
        gt=0,
        le=100,
        description="Most analytics messages a second per chain to one push client: a chain's analytics are"
        " kilobytes, and a desk reads IV and Greeks, not their every tick (quotes go at push_max_hz).",
    )
    push_compression: bool = Field(
        False, description="Offer permessage-deflate on the push WebSocket (costs CPU per client)."
    )
    push_max_clients: int = Field(1000, ge=1, description="Concurrent push (WebSocket) clients at most.")
    push_max_keys: int = Field(5000, ge=1, description="Instruments one push client may watch at most.")
    push_send_timeout_s: float = Field(
        10.0, gt=0, description="A push client that stays unwritable this long is dropped."
    )
    max_ws_message_bytes: int = Field(
        65_536, ge=256, description="Largest message a push client may send; bigger ones close it."
    )
    cors_origins: tuple[str, ...] = Field(
        (), description="Origins allowed by CORS (JSON list in the environment); empty: CORS off."
    )
    chain_cache_s: float = Field(
        0.05,
        ge=0,
        le=5,
        description="An option-chain GET is re-rendered at most this often per request shape (its quotes are"
        " never older than this; 0: every time).",
    )


class ChainSettings(BaseSettings):
    """Option-chain windows, ATM recentring and the Tier B universe (tickgate.chains).

    A settings class of its own so the Tier B file can also be named by the short ``TICKGATE_TIER_B``
    (other fields: ``TICKGATE_CHAINS__<FIELD>`` as for every nested model)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKGATE_CHAINS__", extra="ignore", populate_by_name=True, frozen=True
    )

    stock_strikes: int = Field(25, ge=1, description="Default strikes in a stock option chain window.")
    index_strikes: int = Field(101, ge=1, description="Default strikes in an index option chain window.")
    commodity_strikes: int = Field(51, ge=1, description="Default strikes in an MCX option chain window.")
    currency_strikes: int = Field(25, ge=1, description="Default strikes in a currency option chain window.")
    hysteresis: float = Field(
        0.6,
        ge=0,
        le=5,
        description="Recentre only once the LTP is this many local strike gaps away from the current ATM"
        " (0.5 = no hysteresis: price wiggling around the midpoint would flap the window).",
    )
    recentre_cooldown_s: float = Field(5.0, ge=0, description="Minimum time between recentres of a chain.")
    cache_ttl_s: float = Field(60.0, ge=0, description="How long a computed window is reused (0: never).")
    cache_max_entries: int = Field(4096, ge=1, description="Chain windows/listings kept in the TTL cache.")
    tier_b: Path | None = Field(
        None,
        validation_alias="TICKGATE_TIER_B",
        description="Tier B universe file (TOML); None: the shipped tickgate/data/tier_b.toml.",
    )


class Settings(BaseSettings):
    """Everything tunable about a tickgate process."""

    model_config = SettingsConfigDict(
        env_prefix="TICKGATE_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    limits: FeedLimits = FeedLimits()
    master: MasterSettings = MasterSettings()
    feed: FeedClientSettings = FeedClientSettings()
    store: StoreSettings = StoreSettings()
    chains: ChainSettings = Field(default_factory=ChainSettings)
    api: ApiSettings = ApiSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()

    feed_url: str = "wss://api-feed.dhan.co"
    rest_url: str = Field(
        "https://api.dhan.co",
        description="Dhan's REST API (market quote backfill). With a feed that is not Dhan's, the backfill"
        " runs only when this is set to that feed's REST side (the simulator prints it as REST).",
    )
    dhan_client_id: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DHAN_CLIENT_ID", "TICKGATE_DHAN_CLIENT_ID")
    )
    dhan_access_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DHAN_ACCESS_TOKEN", "TICKGATE_DHAN_ACCESS_TOKEN")
    )
    dhan_pin: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DHAN_PIN", "TICKGATE_DHAN_PIN"),
        description="With DHAN_TOTP_SECRET: a token is generated headless when renewal fails.",
    )
    dhan_totp_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DHAN_TOTP_SECRET", "TICKGATE_DHAN_TOTP_SECRET")
    )
    bus_url: str | None = Field(
        None,
        description="The broker (NATS, nats://host:4222) a gateway publishes its quotes on for its API"
        " replicas (tickgate.bus); None: no publishing (the all-in-one serve).",
    )
    gateway_lease_ttl_s: float = Field(
        5.0,
        gt=0,
        description="The gateway's lease (tickgate gateway): renewed every fifth of it; a holder that cannot"
        " renew steps down at 0.6 of it; a standby takes over once it has run out.",
    )
    bus_prefix: str = Field(
        "", description="Prefix of the broker subjects: several deployments (or test runs) on one broker."
    )
    command_patience_s: float = Field(
        20.0,
        gt=0,
        description="How long an API replica keeps retrying a command (a write) before answering 503: longer"
        " than a failover (the lease's ttl plus a gateway's start), so a write sent meanwhile is answered.",
    )
    accounts_file: Path | None = Field(
        None,
        description="Several Dhan accounts pooled by one planner: a TOML file of [[accounts]] name,"
        " client_id, reserved_sockets, with no secret in it (tickgate.accounts). None: DHAN_CLIENT_ID alone.",
    )
    secrets_file: Path | None = Field(
        None,
        description="The accounts' tokens, PINs and TOTP secrets (TOML, [name] access_token/pin/totp_secret),"
        " mode 0600; the environment's DHAN_ACCESS_TOKEN_<NAME> etc. take precedence.",
    )
    auth_url: str = Field(
        "https://auth.dhan.co",
        description="Dhan's token generation (generateAccessToken); beside another feed's REST side, that.",
    )
    token_renew_margin_s: float = Field(
        3_600.0, ge=0, description="Renew the Dhan token this long (market seconds) before it expires."
    )

    data_dir: Path = Path.home() / ".local" / "share" / "tickgate"
    instruments: str | None = Field(
        None,
        description="Scrip master to use: a path or URL (either format). Default: today's cached download"
        " in data_dir, else a generated full-size master.",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    admin_key: SecretStr | None = Field(
        None, description="An admin API key accepted as given (for automation); never printed."
    )
    db_url: str | None = Field(
        None,
        description="Database URL (sqlite+aiosqlite:///… or postgresql+asyncpg://…); default: SQLite in"
        " data_dir (tickgate.store.database_url).",
    )

    clock_start: AwareDatetime | None = Field(
        None,
        description="Run on a virtual clock that starts at this instant (ISO 8601 with its offset, e.g."
        " 2026-12-08T09:10:00+05:30); None: the host's clock. Refused against the real feed.",
    )
    clock_speed: float = Field(
        1.0, gt=0, le=100_000, description="Market seconds per real second of the virtual clock."
    )
    clock_anchor: float | None = Field(
        None,
        description="Real epoch second at which the virtual clock read clock_start (default: when this"
        " process first asked). Processes that share it agree on the time (see `tickgate simulate`).",
    )

    ltt_is_ist_wall_clock: bool = Field(
        True,
        description=(
            "Dhan's LTT field is reported to be IST wall-clock time encoded as if it were UTC epoch "
            "seconds. When true, ltt_to_datetime subtracts 5h30m to get the true instant."
        ),
    )

    def make_clock(self) -> Clock:
        """The one clock these settings describe (the same object for the same description)."""
        return clock_for(self.clock_start, self.clock_speed, self.clock_anchor)

    def check_clock_for(self, feed_url: str, clock: Clock | None = None) -> None:
        """Refuse a virtual clock against Dhan's real feed: its sessions, tokens and expiries follow real
        time, and a gateway that believes it is another day would subscribe and clean up wrongly."""
        virtual = clock.virtual if clock is not None else self.clock_start is not None
        if virtual and is_dhan_url(feed_url):
            raise VirtualClockError(
                "a virtual clock (TICKGATE_CLOCK_START / TICKGATE_CLOCK_SPEED) cannot run against Dhan's"
                f" real feed ({urlsplit(feed_url).hostname}): unset them, or point TICKGATE_FEED_URL at the"
                " simulator (`tickgate simulate`)"
            )


class VirtualClockError(ValueError):
    """A virtual clock was configured where only real time makes sense (the real Dhan feed)."""


def is_dhan_url(url: str) -> bool:
    """Is ``url`` one of Dhan's own hosts (the real feed), as opposed to a simulator?"""
    host = (urlsplit(url).hostname or "").lower()
    return host == "dhan.co" or host.endswith(".dhan.co")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests build their own ``Settings``)."""
    return Settings()
