"""Conversions between the store's value types and table rows, shared by the store and its writer.

Audit rows are built and validated *when submitted* (synchronously, on the caller's stack), so a bad value
raises at the call that made it instead of poisoning a batch in the writer later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.planner.types import PlannerEvent, Tier
from tickgate.store.types import (
    ApiKey,
    AtmEntry,
    AuditEntry,
    JSONValue,
    SubscriptionRow,
    User,
    WatchlistEntry,
    WatchlistState,
    action_for,
    utc,
)

Row = dict[str, Any]
SubKey = tuple[str, int]
SubSig = tuple[tuple[str, ...], str, int | None, str, str]
"""What makes a subscription row different (everything but ``updated``)."""

_ACTION_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")


def _clip(text: str | None, n: int) -> str | None:
    return None if text is None else text[:n]


def _check_json(value: JSONValue) -> JSONValue:
    if value is not None:
        json.dumps(value)  # TypeError now, on the caller's stack, not in the writer
    return value


def audit_row(
    action: str,
    *,
    actor: str,
    at: datetime,
    group_id: str | None = None,
    owner: str | None = None,
    tier: Tier | str | None = None,
    connection: int | None = None,
    target: int | None = None,
    count: int = 0,
    mode: FeedMode | None = None,
    reason: str | None = None,
    details: JSONValue = None,
) -> Row:
    """One validated ``subscription_log`` row. Over-long names are clipped (an audit row is never refused
    for a long group id); an unknown-shaped action or a naive time is a caller bug and raises."""
    act = str(action).strip().upper()
    if not _ACTION_RE.match(act):
        raise ValueError(f"audit action must be an UPPER_SNAKE word of at most 32 characters, got {action!r}")
    if not actor:
        raise ValueError("audit rows need an actor (a user name, 'planner', 'scheduler', 'system'…)")
    return {
        "at": utc(at),
        "actor": _clip(actor, 64),
        "action": act,
        "group_id": _clip(group_id, 200),
        "owner": _clip(owner, 64),
        "tier": None if tier is None else Tier(tier).value,
        "connection": connection,
        "target": target,
        "count": int(count),
        "mode": None if mode is None else mode.name,
        "reason": reason,
        "details": _check_json(details),
    }


def event_row(event: PlannerEvent, *, actor: str, at: datetime, details: JSONValue = None) -> Row:
    """A planner event as an audit row. ``at`` is the wall-clock time the caller logs it: the planner's own
    ``event.at`` is whatever ``now`` its caller passed (possibly a monotonic or frozen clock), so it is kept
    in ``details.planner_at`` rather than trusted as a timestamp."""
    extra: dict[str, Any] = {}
    if event.at is not None:
        extra["planner_at"] = event.at
    if details is not None:
        extra = {**extra, **details} if isinstance(details, Mapping) else {**extra, "details": details}
    return audit_row(
        action_for(event.kind),
        actor=actor,
        at=at,
        group_id=event.group,
        owner=event.owner,
        tier=event.tier,
        connection=event.connection,
        target=event.target,
        count=event.count,
        mode=event.mode,
        reason=event.reason,
        details=extra or None,
    )


def event_rows(
    events: Iterable[PlannerEvent], *, actor: str, at: datetime, details: JSONValue = None
) -> list[Row]:
    return [event_row(e, actor=actor, at=at, details=details) for e in events]


def to_audit(r: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        id=int(r["id"]),
        at=r["at"],
        actor=r["actor"],
        action=r["action"],
        group_id=r["group_id"],
        owner=r["owner"],
        tier=None if r["tier"] is None else Tier(r["tier"]),
        connection=r["connection"],
        target=r["target"],
        count=int(r["count"]),
        mode=None if r["mode"] is None else FeedMode[r["mode"]],
        reason=r["reason"],
        details=r["details"],
    )


# ------------------------------------------------------------------------------------------ subscriptions


SubIndex = dict[SubKey, tuple[SubSig, SubscriptionRow]]
_STATES = frozenset(("placed", "suspended"))


def sub_key(row: SubscriptionRow) -> SubKey:
    return (row.key.segment.name, row.key.security_id)


def sub_index(rows: Iterable[SubscriptionRow]) -> SubIndex:
    """Rows by key with what distinguishes them, validated. Cheap on purpose (25k rows per snapshot): only
    rows that changed are turned into full table rows later."""
    out: SubIndex = {}
    for r in rows:
        if r.state not in _STATES:
            raise ValueError(f"subscription state must be placed or suspended, got {r.state!r}")
        if r.updated.tzinfo is None:
            raise ValueError(f"naive datetime {r.updated!r} in a subscription row")
        out[(r.key.segment.name, r.key.security_id)] = (
            (tuple(r.owners), r.tier.value, r.connection, r.mode.name, r.state),
            r,
        )
    return out


@dataclass(frozen=True, slots=True)
class StateMark:
    """Watchlist rows of ``groups`` to set to ``state`` (decided at ``at``), queued through the writer."""

    groups: tuple[str, ...]
    state: str
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class SubDelta:
    """A change set of the subscriptions table: rows to (re)write and keys to delete. Applied by key, so it
    is correct on top of whatever the table held, as long as every delta since the last full write is."""

    upserts: SubIndex
    gone: tuple[SubKey, ...]


def watchlist_values(  # noqa: PLR0917 - mirrors the store's add/put signature
    user_id: int,
    symbol: str,
    exchange: str,
    group_id: str,
    mode: FeedMode,
    expiry: date | None,
    strikes: int | None,
    at: datetime,
) -> Row:
    """A new, active watchlist row, validated (``add_watchlist`` and ``put_watchlist`` write the same)."""
    if strikes is not None and strikes < 0:
        raise ValueError("strikes must be >= 0")
    values: Row = {
        "user_id": user_id,
        "symbol": symbol.strip().upper(),
        "exchange": exchange.strip().upper(),
        "expiry": expiry,
        "strikes": strikes,
        "mode": mode.name,
        "group_id": group_id,
        "created": at,
        "last_used": at,
        "state": WatchlistState.ACTIVE.value,
        "state_reason": None,
    }
    if not values["symbol"] or not values["exchange"] or not group_id:
        raise ValueError("symbol, exchange and group_id are required")
    return values


def sub_values(row: SubscriptionRow) -> Row:
    return {
        "segment": row.key.segment.name,
        "security_id": row.key.security_id,
        "owners": tuple(row.owners),  # stored as a JSON array; a tuple lets the writer reuse its text
        "tier": row.tier.value,
        "connection": row.connection,
        "mode": row.mode.name,
        "state": row.state,
        "updated": utc(row.updated),
    }


def to_subscription(r: Mapping[Any, Any]) -> SubscriptionRow:
    return SubscriptionRow(
        key=InstrumentKey(ExchangeSegment[r["segment"]], int(r["security_id"])),
        owners=tuple(r["owners"]),
        tier=Tier(r["tier"]),
        connection=r["connection"],
        mode=FeedMode[r["mode"]],
        state=r["state"],
        updated=r["updated"],
    )


# ------------------------------------------------------------------------------------------ the rest


def atm_values(e: AtmEntry) -> Row:
    if not isinstance(e.expiry, date):
        raise TypeError("AtmEntry.expiry must be a date")
    return {
        "underlying": e.underlying,
        "expiry": e.expiry,
        "atm": float(e.atm),
        "window": [float(s) for s in e.window],
        "ltp": None if e.ltp is None else float(e.ltp),
        "computed_at": utc(e.computed_at),
    }


def to_atm(r: Mapping[Any, Any]) -> AtmEntry:
    return AtmEntry(
        underlying=r["underlying"],
        expiry=r["expiry"],
        atm=float(r["atm"]),
        window=tuple(float(s) for s in r["window"]),
        ltp=None if r["ltp"] is None else float(r["ltp"]),
        computed_at=r["computed_at"],
    )


def to_user(r: Mapping[Any, Any]) -> User:
    return User(id=int(r["id"]), name=r["name"], is_admin=bool(r["is_admin"]), created=r["created"])


def to_api_key(r: Mapping[Any, Any]) -> ApiKey:
    return ApiKey(
        id=int(r["id"]),
        user_id=int(r["user_id"]),
        prefix=r["prefix"],
        created=r["created"],
        revoked=r["revoked"],
    )


def to_watchlist(r: Mapping[Any, Any]) -> WatchlistEntry:
    return WatchlistEntry(
        id=int(r["id"]),
        user_id=int(r["user_id"]),
        symbol=r["symbol"],
        exchange=r["exchange"],
        expiry=r["expiry"],
        strikes=r["strikes"],
        mode=FeedMode[r["mode"]],
        group_id=r["group_id"],
        created=r["created"],
        last_used=r["last_used"],
        state=WatchlistState(r["state"]),
        state_reason=r["state_reason"],
        atm=r.get("atm"),
    )
