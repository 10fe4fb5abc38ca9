"""The subscription planner: a pure state machine deciding which instrument is subscribed on which
connection, in which mode (issue 4). No I/O: the feed client executes its actions and reports back.

Typical use by the feed layer::

    planner = Planner(settings.limits)
    for action in planner.connection_up(0).actions:      # each: connection, op, mode, ≤ 100 keys
        send(action.connection, action.request_code, action.keys)
    result = planner.add_group("A:7:RELIANCE:2026-12-29", Tier.A, keys, FeedMode.FULL, "7", now)
    if not result.accepted:
        tell_user(result.reason)
    for ref in result.evicted:                              # "removed INFY (capacity limit)"
        notify(ref.owner, ref.group)
    audit_log.extend(planner.drain_events())

See :mod:`tickgate.planner.core` for the model (admission vs live capacity, suspension, net-diff actions).
"""

from tickgate.planner.core import SNAPSHOT_VERSION, Planner
from tickgate.planner.types import (
    Action,
    CapacityPlan,
    DuplicateGroupError,
    EventKind,
    GroupId,
    GroupInfo,
    GroupRef,
    KeyState,
    Op,
    PlannerError,
    PlannerEvent,
    PlanResult,
    Tier,
    Totals,
    UnknownGroupError,
)

__all__ = [
    "SNAPSHOT_VERSION",
    "Action",
    "CapacityPlan",
    "DuplicateGroupError",
    "EventKind",
    "GroupId",
    "GroupInfo",
    "GroupRef",
    "KeyState",
    "Op",
    "PlanResult",
    "Planner",
    "PlannerError",
    "PlannerEvent",
    "Tier",
    "Totals",
    "UnknownGroupError",
]
