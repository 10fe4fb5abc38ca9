"""Rows the store hands out and takes in: frozen dataclasses, so callers can keep and queue them.

Times are timezone-aware UTC ``datetime`` everywhere: the database keeps UTC and the store refuses naive
times at its boundary (a naive time is ambiguous between IST and UTC, and the audit log must be exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner.types import EventKind, Tier

JSONValue: TypeAlias = Any
"""Anything ``json.dumps`` accepts (kept loose on purpose: ``details`` is free-form)."""

SubscriptionState: TypeAlias = Literal["placed", "suspended"]


class StoreError(Exception):
    """Base of the store's own errors (database errors from the driver are not wrapped)."""


class DuplicateError(StoreError, ValueError):
    """A unique value (user name, watchlist group id, API key) already exists."""


class NotFoundError(StoreError, LookupError):
    """The row the call names does not exist (or belongs to someone else)."""


class WatchlistState(StrEnum):
    """``active`` rows are restored on restart; ``evicted`` ones lost their subscription to capacity and
    stay visible to their owner until removed or the end of day (they are not re-subscribed by a restart)."""

    ACTIVE = "active"
    EVICTED = "evicted"


class AuditAction(StrEnum):
    """Actions written to ``subscription_log``. Planner events map by name (``EventKind.EOD`` is written as
    ``EOD_CLEANUP``, the name the end-of-day job and the admin API filter on); other writers use the rest."""

    ADD = "ADD"
    REMOVE = "REMOVE"
    REPLACE = "REPLACE"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    EVICT = "EVICT"
    SUSPEND = "SUSPEND"
    RESUME = "RESUME"
    MOVE = "MOVE"
    REJECT = "REJECT"
    MODE_CHANGE = "MODE_CHANGE"
    EOD_CLEANUP = "EOD_CLEANUP"
    PIN = "PIN"
    UNPIN = "UNPIN"
    CONNECTION_DOWN = "CONNECTION_DOWN"
    CONNECTION_UP = "CONNECTION_UP"
    CEILING = "CEILING"
    RESTORE = "RESTORE"
    RECENTRE = "RECENTRE"
    WATCHLIST_ADD = "WATCHLIST_ADD"
    WATCHLIST_REMOVE = "WATCHLIST_REMOVE"
    TIER_B_RELOAD = "TIER_B_RELOAD"
    STARTUP = "STARTUP"
    RECOVERY = "RECOVERY"
    USER_ADD = "USER_ADD"
    KEY_REVOKE = "KEY_REVOKE"
    TOKEN_SET = "TOKEN_SET"


def action_for(kind: EventKind) -> AuditAction:
    """The audit action a planner event is logged under."""
    if kind is EventKind.EOD:
        return AuditAction.EOD_CLEANUP
    return AuditAction(kind.value.upper())


def utc(at: datetime) -> datetime:
    """``at`` in UTC; a naive ``datetime`` is refused (is it IST or UTC? the store will not guess)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: pass a timezone-aware time (e.g. clock.utcnow())")
    return at.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    is_admin: bool
    created: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the key itself, only a display prefix (the hash stays inside)."""

    id: int
    user_id: int
    prefix: str
    created: datetime
    revoked: datetime | None


@dataclass(frozen=True, slots=True)
class WatchlistEntry:
    """One watchlist row. ``group_id`` is the planner group that carries its subscriptions."""

    id: int
    user_id: int
    symbol: str
    exchange: str
    expiry: date | None
    strikes: int | None
    mode: FeedMode
    group_id: str
    created: datetime
    last_used: datetime
    state: WatchlistState
    state_reason: str | None
    atm: float | None = None  # the strike its window sits on, once placed


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """One instrument as the planner holds it: who wants it, where it is placed (``connection`` is None
    when suspended), in which mode (the placed mode, or the desired one when suspended)."""

    key: InstrumentKey
    owners: tuple[str, ...]
    tier: Tier
    connection: int | None
    mode: FeedMode
    state: SubscriptionState
    updated: datetime


@dataclass(frozen=True, slots=True)
class AtmEntry:
    underlying: str
    expiry: date
    atm: float
    window: tuple[float, ...]
    ltp: float | None
    computed_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    group_id: str | None
    owner: str | None
    tier: Tier | None
    connection: int | None
    target: int | None
    count: int
    mode: FeedMode | None
    reason: str | None
    details: JSONValue


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Newest first. ``next_cursor`` is the ``before`` of the following (older) page, None at the end."""

    entries: tuple[AuditEntry, ...]
    next_cursor: int | None
