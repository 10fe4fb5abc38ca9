"""Value types the planner hands out: actions for the I/O layer, events for the audit log, read-only views.

All are frozen so a caller can keep them (queue them, log them) without the planner changing them later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypeAlias

from tickgate.dhan.protocol import FeedMode, InstrumentKey

GroupId: TypeAlias = str
"""A caller-chosen group name, e.g. ``"B:NIFTY:2026-12-01"`` or ``"A:7:RELIANCE:2026-12-29"``."""

Op: TypeAlias = Literal["subscribe", "unsubscribe"]


class Tier(StrEnum):
    """Tier B is the always-on universe (never evicted); Tier A is on-demand user watchlists (LRU)."""

    A = "A"
    B = "B"


class PlannerError(Exception):
    """A call the planner cannot honour because the caller broke its contract (not a capacity refusal)."""


class UnknownGroupError(PlannerError, KeyError):
    """The group id is not in the plan."""


class DuplicateGroupError(PlannerError, ValueError):
    """``add_group`` with an id already in the plan: callers decide between ``touch`` and ``replace_keys``."""


@dataclass(frozen=True, slots=True)
class Action:
    """One request the I/O layer sends on one connection: at most ``instruments_per_message`` keys."""

    connection: int
    op: Op
    mode: FeedMode
    keys: tuple[InstrumentKey, ...]

    @property
    def request_code(self) -> int:
        """Dhan's JSON ``RequestCode`` for this action."""
        return self.mode.subscribe_code if self.op == "subscribe" else self.mode.unsubscribe_code


class EventKind(StrEnum):
    """What the planner decided; each event becomes one audit-log row later."""

    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    EVICT = "evict"
    SUSPEND = "suspend"
    RESUME = "resume"
    MOVE = "move"
    REJECT = "reject"
    MODE_CHANGE = "mode_change"
    EOD = "eod"
    PIN = "pin"
    UNPIN = "unpin"
    CONNECTION_DOWN = "connection_down"
    CONNECTION_UP = "connection_up"
    RESTORE = "restore"
    CEILING = "ceiling"  # a connection's ceiling set (count: the new ceiling)


@dataclass(frozen=True, slots=True)
class PlannerEvent:
    """One decision. ``at`` is the caller's ``now`` for calls that take one (the planner reads no clock)."""

    kind: EventKind
    group: GroupId | None = None
    owner: str | None = None
    tier: Tier | None = None
    connection: int | None = None
    count: int = 0
    mode: FeedMode | None = None
    reason: str | None = None
    target: int | None = None
    """Destination connection of a ``move`` (``connection`` is the source)."""
    at: float | None = None


@dataclass(frozen=True, slots=True)
class GroupRef:
    """Enough about a group to tell its owner what happened ("removed INFY (capacity limit)")."""

    group: GroupId
    owner: str
    tier: Tier
    size: int


@dataclass(frozen=True, slots=True)
class PlanResult:
    """What one call decided. ``actions`` must be executed in order (unsubscribes precede subscribes)."""

    actions: tuple[Action, ...] = ()
    accepted: bool = True
    reason: str | None = None
    """Why a request was rejected (``accepted`` is false); ``None`` otherwise."""
    evicted: tuple[GroupRef, ...] = ()
    suspended: tuple[GroupRef, ...] = ()
    resumed: tuple[GroupRef, ...] = ()
    events: tuple[PlannerEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group as the planner holds it; times are whatever the caller passed as ``now``."""

    group: GroupId
    tier: Tier
    owner: str
    mode: FeedMode
    size: int
    pinned: bool
    suspended: bool
    created: float
    last_used: float
    updated: float


@dataclass(frozen=True, slots=True)
class KeyState:
    """One desired instrument as a row of the subscriptions view: who wants it, whether Tier B does, and
    where it is placed (``connection`` None while every owner is suspended; ``mode`` is then the mode it
    will resume in)."""

    owners: tuple[GroupId, ...]
    tier_b: bool
    connection: int | None
    mode: FeedMode


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    """Capacity accounting. ``tier_a`` counts only keys no Tier B group wants (A's marginal use), so
    ``tier_b + tier_a + free == total``."""

    total: int
    live: int
    tier_b: int
    tier_a: int
    free: int
    placed: int
    live_free: int
    suspended_keys: int
    """Desired keys not placed (their groups are suspended)."""
    live_connections: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Counts of distinct instruments. ``by_tier`` is exclusive (see :class:`CapacityPlan`); ``by_owner``
    counts each owner's distinct keys, so shared keys appear under every owner that wants them."""

    desired: int
    placed: int
    by_tier: dict[Tier, int] = field(default_factory=dict)
    by_connection: dict[int, int] = field(default_factory=dict)
    by_owner: dict[str, int] = field(default_factory=dict)
