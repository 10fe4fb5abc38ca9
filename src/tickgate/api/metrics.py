"""``GET /metrics``: Prometheus exposition of the service, read on scrape.

Each app owns its own :class:`CollectorRegistry` (no process-global state, so tests can build many apps).
Gauges and counters of the service are produced by a custom collector at scrape time from the planner,
the feed, the quote store and the store writer; only API latency (a histogram updated by a middleware) and
planner-event counts (evictions, suspensions, reconnects by reason) are accumulated here.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from tickgate.dhan.client import ConnectionState
from tickgate.dhan.protocol import ResponseCode
from tickgate.feed import FeedManager
from tickgate.orchestrator import PlanChange
from tickgate.planner.types import EventKind
from tickgate.service import TickgateService
from tickgate.service.errors import NotReady

if TYPE_CHECKING:
    from tickgate.api.push import PushHub
    from tickgate.store import Store

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def reason_label(reason: str | None) -> str:
    """A low-cardinality label for a disconnect reason: Dhan's code, else its leading phrase."""
    if not reason:
        return "unknown"
    head = reason.split(":", 1)[0].strip().lower()
    head = re.sub(r"\d+(\.\d+)?", "n", head) if not head.isdigit() else head
    return re.sub(r"[^a-z0-9_ -]", "", head)[:40] or "unknown"


class EventCounter:
    """Counts planner events: a subscriber of the service's orchestrator, like the audit log."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.down_reasons: Counter[str] = Counter()
        self._attached: set[int] = set()

    def attach(self, service: TickgateService) -> None:
        """Subscribe to ``service``'s plan changes (once per service)."""
        if id(service.orchestrator) in self._attached:
            return
        service.orchestrator.subscribe("metrics", self)
        self._attached.add(id(service.orchestrator))

    def __call__(self, change: PlanChange) -> None:
        for e in change.events:
            self.by_kind[e.kind.value] += 1
            if e.kind is EventKind.CONNECTION_DOWN:
                self.down_reasons[reason_label(e.reason)] += 1


class ServiceCollector(Collector):
    @staticmethod
    def _background_failures(svc: TickgateService, feed: FeedManager | None) -> CounterMetricFamily:
        """Every background loop logs its exceptions and goes on; this counts them, so a loop that keeps
        failing shows on a dashboard instead of only in the log."""
        c = CounterMetricFamily(
            "tickgate_background_failures", "Exceptions survived by background loops", labels=["loop"]
        )
        counts: Counter[str] = Counter()
        counts.update(svc.loop_failures)
        if feed is not None:  # None: a replica's (it has no feed)
            counts.update(feed.metrics.loop_failures)
        counts.update({f"subscriber:{k}": n for k, n in svc.orchestrator.subscriber_failures.items()})
        if svc.eod is not None:
            counts.update({f"job:{k}": n for k, n in svc.eod.failures.items()})
        for loop in dict.fromkeys(("recentre", "decoder", "watchdog", "recycle", *sorted(counts))):
            c.add_metric([loop], counts.get(loop, 0))
        return c

    def __init__(self, service: TickgateService, events: EventCounter, push: PushHub) -> None:
        self.service = service
        self.events = events
        self.push = push
        self.failures: Counter[str] = Counter()  # sections that raised, over the process's life

    def collect(self) -> Iterator[Metric]:
        """Every section on its own: one that raises (a bug, a half-built service) is logged and counted,
        and the scrape still carries every other section, instead of failing whole."""
        failures = self.failures
        for section, metrics in self._sections():
            try:
                yield from metrics()
            except Exception:
                failures[section] += 1
                log.exception("the %s section of /metrics failed; the others are served", section)
            failures.setdefault(section, 0)  # a zero from the start, so a rate can be taken of it
        yield _by_label(
            CounterMetricFamily,
            "tickgate_metrics_failures",
            "Sections of /metrics that raised, left out of their scrape",
            "section",
            failures,
        )

    def _sections(self) -> Iterator[tuple[str, Callable[[], Iterator[Metric]]]]:
        yield "push", self._push
        yield "events", self._events
        svc = self.service
        if svc.started_at is None:
            return
        if svc.replica:
            yield "replica", self._replica
            return
        try:
            feed = svc.feed
            store = svc.store
        except NotReady:
            return
        yield "service", lambda: self._service(svc, feed, store)
        yield "accounts", lambda: self._account(svc, feed)

    def _service(self, svc: TickgateService, feed: FeedManager, store: Store) -> Iterator[Metric]:
        yield self._background_failures(svc, feed)
        planner = svc.planner
        totals, cap = planner.totals(), planner.plan_capacity()
        yield _by_label(
            GaugeMetricFamily,
            "tickgate_subscriptions",
            "Distinct instruments desired, per tier",
            "tier",
            totals.by_tier,
        )
        yield _by_label(
            GaugeMetricFamily,
            "tickgate_connection_instruments",
            "Instruments placed per feed connection",
            "connection",
            totals.by_connection,
        )
        g = GaugeMetricFamily("tickgate_capacity", "Capacity accounting (instruments)", labels=["kind"])
        for kind in ("total", "live", "tier_b", "tier_a", "free", "placed", "live_free", "suspended_keys"):
            g.add_metric([kind], getattr(cap, kind))
        yield g
        yield GaugeMetricFamily(
            "tickgate_capacity_used_ratio",
            "Share of total capacity in use",
            value=cap.placed / max(cap.total, 1),
        )
        yield GaugeMetricFamily(
            "tickgate_suspended_groups",
            "Groups suspended (no room while connections are down)",
            value=len(planner.suspended()),
        )
        up = GaugeMetricFamily(
            "tickgate_connection_up", "1 if the feed connection is up", labels=["connection", "account"]
        )
        rc = CounterMetricFamily(
            "tickgate_connection_reconnects", "Reconnects per connection", labels=["connection", "account"]
        )
        for sid, s in feed.statuses():
            labels = [str(sid), feed.accounts[planner.account_of(sid)].name]
            up.add_metric(labels, 1 if s.state is ConnectionState.UP else 0)
            rc.add_metric(labels, s.reconnects)
        yield up
        yield rc
        m = feed.metrics
        yield _by_label(
            CounterMetricFamily,
            "tickgate_packets",
            "Packets decoded by response code",
            "code",
            {_code_name(code): n for code, n in m.packets_by_code.items()},
        )
        yield _by_label(
            CounterMetricFamily,
            "tickgate_server_disconnects",
            "Dhan disconnect packets by code",
            "code",
            m.server_disconnects,
        )
        for name, text, value in (
            ("tickgate_frames", "Feed frames received", m.frames),
            ("tickgate_corrupt_frames", "Frames that failed to decode", m.corrupt_frames),
            ("tickgate_dropped_frames", "Frames dropped (backlog full)", m.dropped_frames),
            ("tickgate_stale_recycles", "Silent sockets recycled", m.stale_recycles),
            ("tickgate_recycles_held", "Stale recycles held back by the rate limit", m.recycles_held),
            ("tickgate_feed_quiet_alerts", "Every socket of a trading market silent at once", m.quiet_alerts),
        ):
            yield CounterMetricFamily(name, text, value=value)
        for name, text, gauge in (
            ("tickgate_decode_lag_seconds", "Receive-to-store lag of the last batch", m.decode_lag_last_s),
            ("tickgate_decode_lag_max_seconds", "Largest receive-to-store lag", m.decode_lag_max_s),
            ("tickgate_decode_backlog_frames", "Frames waiting to be decoded", feed.backlog),
        ):
            yield GaugeMetricFamily(name, text, value=gauge)
        yield GaugeMetricFamily(
            "tickgate_quote_instruments", "Instruments in the quote store", value=len(svc.quotes)
        )
        yield GaugeMetricFamily(
            "tickgate_feed_alert",
            "1 if the feed stopped retrying (fatal)",
            value=0 if feed.alert is None else 1,
        )
        stats = store.writer.stats()
        g = GaugeMetricFamily("tickgate_store_writer", "Store writer counters and queue", labels=["stat"])
        for name, value in stats.items():
            if isinstance(value, bool | int | float):
                g.add_metric([name], float(value))
        yield g
        yield CounterMetricFamily(
            "tickgate_recentres", "ATM recentres of tracked chains", value=svc.recentres
        )

    @staticmethod
    def _account(svc: TickgateService, feed: FeedManager) -> Iterator[Metric]:
        """Each account's life (issues 17, 19), labelled by account: the token's expiry and renewals, a 429
        cool-off, the sockets tickgate may use, goodbyes. No token appears here, not even a fingerprint."""
        a = ["account"]
        blocked = GaugeMetricFamily(
            "tickgate_feed_blocked_seconds", "Seconds the account still cools off after a 429", labels=a
        )
        fatal = GaugeMetricFamily(
            "tickgate_account_alert", "1 if the account's feed stopped retrying", labels=a
        )
        blocks = CounterMetricFamily("tickgate_feed_blocks", "429 episodes at the handshake", labels=a)
        goodbyes = CounterMetricFamily(
            "tickgate_feed_goodbyes", "Disconnect requests (code 12) sent before closing on purpose", labels=a
        )
        budget = GaugeMetricFamily(
            "tickgate_feed_sockets", "The account's sockets", labels=["account", "kind"]
        )
        shrinks = CounterMetricFamily(
            "tickgate_feed_sockets_given_up",
            "Sockets left to another program on the client id after repeated 805s",
            labels=a,
        )
        expires = GaugeMetricFamily(
            "tickgate_token_expires_in_seconds",
            "Market seconds until the Dhan token expires (NaN: unknown)",
            labels=a,
        )
        renewals = CounterMetricFamily("tickgate_token_renewals", "Dhan token renewals", labels=a)
        generations = CounterMetricFamily(
            "tickgate_token_generations", "Dhan tokens generated from the PIN and TOTP", labels=a
        )
        failures = CounterMetricFamily("tickgate_token_failures", "Failed renewals and generations", labels=a)
        for i, (link, pool) in enumerate(zip(svc.links, feed.pools, strict=True)):
            name = [link.name]
            limits = link.limits
            blocked.add_metric(name, pool.blocked_for)
            fatal.add_metric(name, 0 if feed.account_alert(i) is None else 1)
            blocks.add_metric(name, pool.blocks)
            goodbyes.add_metric(name, pool.goodbyes)
            for kind, value in (
                ("account", limits.sockets_per_account),
                ("reserved", limits.reserved_sockets),
                ("tickgate", limits.feed_sockets),
                ("given_up", len(pool.budget.given_up)),
            ):
                budget.add_metric([link.name, kind], value)
            shrinks.add_metric(name, pool.budget.shrinks)
            tokens = link.tokens
            if tokens is None:
                continue
            until = tokens.status()["expires_at"]
            left = (
                float("nan")
                if not isinstance(until, str)
                else (dt.datetime.fromisoformat(until) - svc.clock.now()).total_seconds()
            )
            expires.add_metric(name, left)
            renewals.add_metric(name, tokens.stats.renewals)
            generations.add_metric(name, tokens.stats.generations)
            failures.add_metric(name, tokens.stats.failures)
        yield from (
            blocked,
            fatal,
            blocks,
            goodbyes,
            budget,
            shrinks,
            expires,
            renewals,
            generations,
            failures,
        )

    def _events(self) -> Iterator[Metric]:
        ev = CounterMetricFamily("tickgate_planner_events", "Planner decisions by kind", labels=["kind"])
        for kind in EventKind:
            ev.add_metric([kind.value], self.events.by_kind.get(kind.value, 0))
        yield ev
        yield CounterMetricFamily(
            "tickgate_evictions",
            "Tier A chains evicted for room",
            value=self.events.by_kind.get(EventKind.EVICT.value, 0),
        )
        yield CounterMetricFamily(
            "tickgate_suspensions",
            "Groups suspended",
            value=self.events.by_kind.get(EventKind.SUSPEND.value, 0),
        )
        yield _by_label(
            CounterMetricFamily,
            "tickgate_reconnect_reasons",
            "Feed connections lost, by reason",
            "reason",
            self.events.down_reasons,
        )

    def _replica(self) -> Iterator[Metric]:
        """An API replica's own: how it follows the gateway (quotes, plan) and what it forwards."""
        from tickgate.replica import ReplicaService

        svc = self.service
        assert isinstance(svc, ReplicaService)
        f = svc.follower
        yield GaugeMetricFamily(
            "tickgate_replica_live", "Quotes follow a gateway live (1) or not", value=f.live
        )
        for name, text, value in (
            ("tickgate_replica_snapshots", "Snapshots taken from the gateway", f.snapshots),
            ("tickgate_replica_gaps", "Gaps in the gateway's deltas (each means a snapshot)", f.gaps),
            ("tickgate_replica_broker_disconnects", "Broker connections lost", f.disconnects),
            ("tickgate_replica_deltas", "Deltas applied", f.applied),
            ("tickgate_replica_unreadable", "Unreadable broker messages skipped", f.unreadable),
            ("tickgate_replica_plan_digests", "Plan digests applied", svc.plan.applied if svc.plan else 0),
            ("tickgate_replica_touches_sent", "Chain uses sent to the gateway", svc.touches_sent),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield self._background_failures(svc, None)

    def _push(self) -> Iterator[Metric]:
        p = self.push
        yield GaugeMetricFamily("tickgate_push_clients", "Connected push clients", value=p.clients)
        yield CounterMetricFamily("tickgate_push_messages", "Push messages sent", value=p.messages_sent)
        yield CounterMetricFamily("tickgate_push_quotes", "Quotes pushed", value=p.quotes_sent)
        yield CounterMetricFamily(
            "tickgate_push_coalesced", "Updates coalesced away (latest wins)", value=p.coalesced
        )
        yield _by_label(
            CounterMetricFamily,
            "tickgate_push_dropped",
            "Push clients closed by us, by reason",
            "reason",
            p.dropped,
        )


def _by_label(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    text: str,
    label: str,
    values: Mapping[Any, float],
) -> Metric:
    """One metric family with a sample per ``values`` entry, labelled ``label=str(key)``."""
    out = family(name, text, labels=[label])
    for key, n in values.items():
        out.add_metric([str(key)], n)
    return out


def _code_name(code: int) -> str:
    try:
        return ResponseCode(code).name.lower()
    except ValueError:
        return str(code)


class Metrics:
    """One app's registry: the service collector plus the API latency histogram."""

    def __init__(self, service: TickgateService, events: EventCounter, push: PushHub) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(service, events, push))
        self.latency = Histogram(
            "tickgate_api_request_seconds",
            "API request latency",
            labelnames=("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)


RequestHandler = Callable[[Request], Awaitable[Response]]


ROUTE_LABEL = "tickgate.route_label"
"""Scope key a request answered outside FastAPI's router (the fast paths) sets to the route template it
stands for, so the access log and the latency metric name it as the route would."""


def route_of(request: Request) -> str:
    """The route template (``/api/v2/watchlist/{watchlist_id}``), so ids do not explode label cardinality."""
    label = request.scope.get(ROUTE_LABEL)
    if isinstance(label, str):
        return label
    route: Any = request.scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        return "unmatched"
    full = str(request.scope.get("path", ""))
    # included routers may report their path without the prefix: put it back
    if not full.startswith(str(path).split("{", 1)[0]) and "/api/v2" + str(path) != path:
        prefix = full[: max(full.find(str(path).split("{", 1)[0]), 0)]
        return prefix + str(path)
    return str(path)


def elapsed_since(started: float) -> float:
    return time.perf_counter() - started
