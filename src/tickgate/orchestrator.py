"""The one path for every change of plan.

A user's add, a recentre, the Tier B roll, end of day, a socket lost or regained, a rebalance, a restart:
each is a call on the planner. The orchestrator is the only code that applies one:

    request or event → Orchestrator.apply(cause, change) → planner → actions → feed (the sink)
                     → the planner's events → subscribers (audit, subscriptions table, tracker, eviction
                       marks, metrics, …)

so a new actor (market sessions, token renewal, a second account) is one more caller of :meth:`apply`, and
a new consumer of what happened is one more :meth:`subscribe`. Nothing else sends actions to the feed
(``tests/test_architecture.py`` checks it). A subscriber that raises is logged and counted, and the others
still run: a broken metric must not stop the audit log.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, Protocol

from tickgate.planner import GroupRef, Planner, PlannerEvent, PlanResult, Tier

log = logging.getLogger(__name__)
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One applied change: why it was asked for, the planner's answer, and the events it produced."""

    cause: str
    result: PlanResult
    events: tuple[PlannerEvent, ...]

    def gone(self, planner: Planner) -> list[str]:
        """Groups this change named that are no longer in the plan (removed, evicted, cleared)."""
        named = dict.fromkeys(e.group for e in self.events if e.group)
        named.update(dict.fromkeys(ref.group for ref in self.result.evicted))
        return [g for g in named if not planner.has_group(g)]

    def evicted_tier_a(self, planner: Planner) -> list[GroupRef]:
        """Users' chains that lost their place to this change (not back in the plan)."""
        return [r for r in self.result.evicted if r.tier is Tier.A and not planner.has_group(r.group)]


class ActionSink(Protocol):
    """Where a plan's actions go: the feed's sockets (:class:`tickgate.feed.FeedManager`)."""

    def execute(self, result: PlanResult) -> None: ...


Subscriber = Callable[[PlanChange], None]


class Orchestrator:
    """Applies planner changes, sends their actions to the sink, publishes what happened."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self._sink: ActionSink | None = None
        self._subscribers: list[tuple[str, Subscriber]] = []
        self.applied = 0
        self.subscriber_failures: Counter[str] = Counter()

    def connect(self, sink: ActionSink) -> None:
        """Send actions to ``sink`` from now on (before: the planner has no live connection, so none)."""
        self._sink = sink

    def subscribe(self, name: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with every applied change, in subscription order."""
        self._subscribers.append((name, subscriber))

    def unsubscribe(self, name: str) -> None:
        self._subscribers = [(n, s) for n, s in self._subscribers if n != name]

    def apply(
        self,
        cause: str,
        change: Callable[Concatenate[Planner, P], PlanResult],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> PlanResult:
        """Apply ``change(planner, *args, **kwargs)`` (e.g. ``Planner.add_group``), execute its actions,
        publish it with its ``cause``; return the planner's answer."""
        result = change(self.planner, *args, **kwargs)
        if self._sink is not None:
            self._sink.execute(result)
        events = tuple(self.planner.drain_events())
        self.applied += 1
        published = PlanChange(cause, result, events)
        for name, subscriber in self._subscribers:
            try:
                subscriber(published)
            except Exception:
                self.subscriber_failures[name] += 1
                log.exception("plan subscriber %s failed on %r; the others still ran", name, cause)
        return result
