"""The subscription planner: one pure, synchronous state machine that decides what is subscribed where.

It holds the *desired* state (groups of instrument keys with owners, tiers, modes, LRU order) and its model
of the *actual* state of each feed connection, and every mutating call returns the actions that move actual
towards desired. Reconnects, rebalances, restarts and end of day all take the same path: change desired or
the set of live connections, then reconcile. No I/O and no clock: callers pass ``now``.

Two capacities matter and are deliberately different:

* **admission** is checked against the *configured* capacity (connections × per connection), so a user's
  watchlist is not refused because a socket happens to be reconnecting;
* **placement** is checked against the *live* capacity; the shortfall is covered by *suspending* Tier A
  groups (least recently used first), which stay desired and come back when capacity does.

Per call, keys whose target may have changed are collected as *dirty*; their placement changes are recorded
against the placement they had when the call started, and the result is emitted as a net diff. That keeps
every call proportional to what it touched, and makes intermediate moves inside one call (resume then
rebalance) collapse into the single request the wire needs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner import keystate
from tickgate.planner.keystate import (
    ACTIVE,
    BLANK,
    MODE_COUNT,
    MODE_INDEX,
    MODES,
    N_MODES,
    REFS,
    SLOT,
    TIER_B_REFS,
    TOP,
    KeyRow,
    target,
)
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

SNAPSHOT_VERSION = 1


class _Group:
    """A group as held internally; ``keys`` is an ordered set (dict) so actions follow the caller's order."""

    __slots__ = (
        "created",
        "family",
        "gid",
        "idx",
        "keys",
        "last_used",
        "mode",
        "owner",
        "pinned",
        "suspended",
        "tier",
        "updated",
    )

    def __init__(
        self,
        gid: GroupId,
        *,
        tier: Tier,
        owner: str,
        mode: FeedMode,
        keys: dict[InstrumentKey, None],
        now: float,
        pinned: bool,
        family: str | None = None,
    ) -> None:
        self.gid = gid
        # Tier B groups of one family (an index's chains across expiries) are spread over the accounts.
        self.family = gid if family is None else family
        self.tier = tier
        self.owner = owner
        self.mode = mode
        self.idx = MODE_INDEX[mode]
        self.keys = keys
        self.pinned = pinned
        self.suspended = False
        self.created = now
        self.last_used = now
        self.updated = now

    def ref(self) -> GroupRef:
        return GroupRef(self.gid, self.owner, self.tier, len(self.keys))

    def event(
        self, kind: EventKind, reason: str | None, at: float | None, *, mode: FeedMode | None = None
    ) -> PlannerEvent:
        """A decision about this whole group (evicted, suspended, resumed, cleared at end of day)."""
        return PlannerEvent(
            kind, self.gid, self.owner, self.tier, count=len(self.keys), mode=mode, reason=reason, at=at
        )

    def info(self) -> GroupInfo:
        return GroupInfo(
            group=self.gid,
            tier=self.tier,
            owner=self.owner,
            mode=self.mode,
            size=len(self.keys),
            pinned=self.pinned,
            suspended=self.suspended,
            created=self.created,
            last_used=self.last_used,
            updated=self.updated,
        )


class _Tx:
    """Scratch state of one mutating call: its audit context and the groups it suspended/resumed/evicted."""

    __slots__ = ("at", "events", "evicted", "flips", "group", "owner", "reason", "tier")

    def __init__(self, reason: str, group: _Group | None, at: float | None) -> None:
        self.reason = reason
        self.group = group.gid if group else None
        self.owner = group.owner if group else None
        self.tier = group.tier if group else None
        self.at = at
        self.events: list[PlannerEvent] = []
        self.evicted: list[GroupRef] = []
        # group id -> (group, its suspended flag when this call first changed it; None = added by this call)
        self.flips: dict[GroupId, tuple[_Group, bool | None]] = {}


class _Pick:
    """A choice of groups to evict or suspend, in progress (see ``Planner._choose``)."""

    __slots__ = ("active", "exclude", "freed", "gains", "pend", "victims")

    def __init__(
        self,
        *,
        active: bool,
        exclude: Mapping[InstrumentKey, object] | None = None,
        pend: dict[InstrumentKey, int] | None = None,
    ) -> None:
        self.active = active
        self.exclude = exclude
        self.pend: dict[InstrumentKey, int] = {} if pend is None else pend
        self.victims: list[_Group] = []
        self.gains: list[int] = []
        self.freed = 0


def _waterfill(loads: list[int], n: int, cap: int | list[int]) -> list[int]:
    """How many of ``n`` new keys each connection gets so that the result equals placing them one at a time
    on the least-loaded connection with room (ties → lowest index), without the per-key scan. ``cap`` is
    one ceiling for all, or one per connection (a socket Dhan answered 804 on carries less)."""
    m = len(loads)
    caps = [cap] * m if isinstance(cap, int) else cap
    if n <= 0:
        return [0] * m
    room_total = sum(max(0, c - x) for x, c in zip(loads, caps, strict=True))
    if room_total < n:
        raise AssertionError(f"no room to place {n} keys on loads {loads} (caps {caps})")

    def filled(level: int) -> int:  # keys placed when every connection is raised to ``level`` (capped)
        return sum(max(0, min(level, c) - x) for x, c in zip(loads, caps, strict=True))

    lo, hi = min(loads), max(caps)  # filled(lo) == 0 < n <= filled(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if filled(mid) >= n:
            hi = mid
        else:
            lo = mid
    # Everyone to ``lo`` (fewer than n), then one more each, lowest index first, for those with room.
    counts = [max(0, min(lo, c) - x) for x, c in zip(loads, caps, strict=True)]
    extra = n - sum(counts)
    for i in range(m):
        if extra == 0:
            break
        if max(loads[i], lo) < caps[i] and loads[i] <= lo:
            counts[i] += 1
            extra -= 1
    return counts


class _Spread:
    """Where Tier B sits across accounts, for one placement call: per account, how many Tier B groups (and
    how many of each family) have keys on it. Built on first use from each group's first placed key."""

    def __init__(self, planner: Planner) -> None:
        self._p = planner
        self._built = False
        self.groups: list[int] = [0] * len(planner.accounts)
        self.family: dict[tuple[str, int], int] = {}
        self._counted: set[GroupId] = set()

    def _build(self) -> None:
        p = self._p
        table = p._keys
        for g in p._lru[Tier.B].values():
            for k in g.keys:
                slot = table[k][SLOT]
                if slot >= 0:
                    self.placed(g, p.account_of(slot // N_MODES))
                    break
        self._built = True

    def placed(self, g: _Group, account: int) -> None:
        if g.gid in self._counted:
            return
        self._counted.add(g.gid)
        self.groups[account] += 1
        key = (g.family, account)
        self.family[key] = self.family.get(key, 0) + 1

    def pick(self, g: _Group, size: int, live: list[int], loads: list[int]) -> int:
        """The least-loaded connection with room for ``size`` keys on the account holding the fewest of
        ``g``'s family (then the fewest Tier B groups); -1 when no connection has room."""
        if not self._built:
            self._build()
        caps, account_of = self._p._caps, self._p._account_of
        best, best_rank = -1, (0, 0, 0)
        for c in live:
            if caps[c] - loads[c] < size:
                continue
            a = account_of[c]
            rank = (self.family.get((g.family, a), 0), self.groups[a], loads[c])
            if best < 0 or rank < best_rank:
                best, best_rank = c, rank
        return best


class Planner:
    """Desired vs actual subscriptions for one or more Dhan accounts; see the module docstring for the model.

    ``accounts`` gives each account's sockets (its ``sockets_per_account`` less those reserved for other
    programs; default: one account of ``limits.feed_sockets``). Connection ids are dense, account by
    account: account 0 holds ``0 .. accounts[0] - 1``, account 1 the next ``accounts[1]``, and so on, so
    Dhan's per-account socket limit holds by construction and every other limit (per socket, per message)
    is the same for every account. All connections start DOWN.

    Every mutating call returns a :class:`PlanResult` whose actions the I/O layer executes in order; the
    planner assumes they succeed (it updates its model of each connection as it emits them). Decisions are
    also appended to an event stream drained with :meth:`drain_events`.
    """

    def __init__(
        self,
        limits: FeedLimits,
        *,
        accounts: Sequence[int] | None = None,
        rebalance_tolerance: int | None = None,
    ) -> None:
        self._limits = limits
        sockets = (limits.feed_sockets,) if accounts is None else tuple(accounts)
        if not sockets or not all(1 <= n <= limits.sockets_per_account for n in sockets):
            raise PlannerError(
                f"each account needs 1..{limits.sockets_per_account} sockets, got {list(sockets)}"
            )
        self._accounts = sockets
        self._account_of = [a for a, n in enumerate(sockets) for _ in range(n)]
        self._nconn = len(self._account_of)
        self._per_conn = limits.instruments_per_socket
        # Each connection's ceiling: the per-socket limit, lower for a socket Dhan answered 804 on (see
        # set_ceiling). Placement and live capacity follow it; admission does not (like a socket that is
        # down, a lowered ceiling suspends what does not fit and never evicts).
        self._caps = [self._per_conn] * self._nconn
        self._per_msg = limits.instruments_per_message
        # 2% of a connection: small imbalances are not worth a burst of unsubscribe/subscribe traffic.
        self._tolerance = (
            rebalance_tolerance if rebalance_tolerance is not None else max(1, self._per_conn // 50)
        )
        self._keys: dict[InstrumentKey, KeyRow] = {}  # see tickgate.planner.keystate
        # key -> ids of the groups wanting it: the subscriptions view of a few keys without walking every
        # group. Ids, not groups: a dict of str -> None is never tracked by the cyclic GC, so 25,000 of them
        # cost the collector nothing (holding the groups put GC pauses into the add latency; see
        # docs/decisions/0002-measured-tradeoffs.md).
        self._owners: dict[InstrumentKey, dict[GroupId, None]] = {}
        # Key-state lists of keys no longer desired, reused for new keys. Churn then allocates no new
        # GC-tracked objects: without this every add grows the young generation by a list per key and
        # the collector's pauses land in the add/remove latency tail. Bounded by the peak desired count.
        self._spare: list[KeyRow] = []
        self._groups: dict[GroupId, _Group] = {}
        self._lru: dict[Tier, OrderedDict[GroupId, _Group]] = {Tier.A: OrderedDict(), Tier.B: OrderedDict()}
        self._live = [False] * self._nconn
        self._n_live = 0
        self._actual: list[dict[InstrumentKey, FeedMode]] = [{} for _ in range(self._nconn)]
        self._n_active = 0
        self._n_tierb = 0
        self._n_susp = {Tier.A: 0, Tier.B: 0}
        self._events: list[PlannerEvent] = []
        self._dirty: dict[InstrumentKey, KeyRow] = {}
        # Placement slot of each key touched by the current call, as it was when the call started.
        self._orig: dict[InstrumentKey, int] = {}
        self._tx: _Tx | None = None
        # Keys whose owners, tier or placement may have changed since ``take_changed`` (None: not tracked).
        self._changed: set[InstrumentKey] | None = None

    # ------------------------------------------------------------------ properties / introspection

    @property
    def limits(self) -> FeedLimits:
        return self._limits

    @property
    def accounts(self) -> tuple[int, ...]:
        """Each account's sockets (the planner's connections, account by account)."""
        return self._accounts

    def account_of(self, connection: int) -> int:
        self._check_conn(connection)
        return self._account_of[connection]

    def account_connections(self, account: int) -> range:
        """The connection ids of ``account`` (a contiguous range)."""
        if not 0 <= account < len(self._accounts):
            raise PlannerError(f"no account {account}")
        start = sum(self._accounts[:account])
        return range(start, start + self._accounts[account])

    @property
    def rebalance_tolerance(self) -> int:
        """Default load spread (keys) below which :meth:`rebalance` does nothing."""
        return self._tolerance

    @property
    def total_capacity(self) -> int:
        return self._nconn * self._per_conn

    @property
    def live_capacity(self) -> int:
        return self._live_cap()

    def _live_cap(self) -> int:
        return sum(self._caps[c] for c in range(self._nconn) if self._live[c])

    def ceilings(self) -> list[int]:
        """Each connection's ceiling (the per-socket limit unless an 804 lowered it)."""
        return list(self._caps)

    def is_live(self, connection: int) -> bool:
        self._check_conn(connection)
        return self._live[connection]

    def live_connections(self) -> list[int]:
        return [c for c in range(self._nconn) if self._live[c]]

    def has_group(self, group_id: GroupId) -> bool:
        return group_id in self._groups

    def group(self, group_id: GroupId) -> GroupInfo:
        return self._get(group_id).info()

    def group_keys(self, group_id: GroupId) -> tuple[InstrumentKey, ...]:
        return tuple(self._get(group_id).keys)

    def groups(self) -> list[GroupInfo]:
        """All groups: Tier B then Tier A, each least recently used first."""
        return [g.info() for tier in (Tier.B, Tier.A) for g in self._lru[tier].values()]

    def suspended(self) -> list[GroupId]:
        return [g.gid for tier in (Tier.B, Tier.A) for g in self._lru[tier].values() if g.suspended]

    def is_suspended(self, group_id: GroupId) -> bool:
        """One group's :meth:`suspended` membership, without walking every group (the add path asks)."""
        return self._get(group_id).suspended

    def refcount(self, key: InstrumentKey) -> int:
        """How many groups (suspended or not) want ``key``."""
        return keystate.refs(self._keys.get(key))

    def actual(self) -> dict[int, dict[InstrumentKey, FeedMode]]:
        """What each connection carries, as the planner believes (a copy)."""
        return {c: dict(self._actual[c]) for c in range(self._nconn)}

    def loads(self) -> list[int]:
        return [len(a) for a in self._actual]

    def desired(self, *, include_suspended: bool = False) -> dict[InstrumentKey, FeedMode]:
        """Keys that should be placed, with their mode (richest among active owners). With
        ``include_suspended`` also keys only suspended groups want (richest among those)."""
        out: dict[InstrumentKey, FeedMode] = {}
        for k, ks in self._keys.items():
            t = target(ks)
            if t >= 0:
                out[k] = MODES[t]
        if include_suspended:
            table = self._keys
            for g in self._groups.values():
                if g.suspended:
                    for k in g.keys:
                        if table[k][ACTIVE] == 0:
                            cur = out.get(k)
                            if cur is None or cur.rank < g.mode.rank:
                                out[k] = g.mode
        return out

    def plan_capacity(self) -> CapacityPlan:
        total = self.total_capacity
        desired = len(self._keys)
        live = self.live_capacity
        return CapacityPlan(
            total=total,
            live=live,
            tier_b=self._n_tierb,
            tier_a=desired - self._n_tierb,
            free=total - desired,
            placed=self._n_active,
            live_free=live - self._n_active,
            suspended_keys=desired - self._n_active,
            live_connections=self._n_live,
        )

    def totals(self) -> Totals:
        by_owner: dict[str, set[InstrumentKey]] = {}
        for g in self._groups.values():
            by_owner.setdefault(g.owner, set()).update(g.keys)
        return Totals(
            desired=len(self._keys),
            placed=self._n_active,
            by_tier={Tier.B: self._n_tierb, Tier.A: len(self._keys) - self._n_tierb},
            by_connection={c: len(a) for c, a in enumerate(self._actual)},
            by_owner={o: len(s) for o, s in by_owner.items()},
        )

    def drain_events(self) -> list[PlannerEvent]:
        """Hand over the audit events recorded since the last drain."""
        out, self._events = self._events, []
        return out

    def take_changed(self) -> set[InstrumentKey]:
        """Keys whose owners, tier, mode or placement may have changed since the previous call (a superset:
        re-reading an unchanged key is harmless). The first call starts the tracking and returns every
        desired key. This is what lets the subscriptions view be written as a small diff per user action
        instead of being recomputed from all 25,000 keys."""
        if self._changed is None:
            self._changed = set()
            return set(self._keys)
        out, self._changed = self._changed, set()
        return out

    def wanted_by_tier_a(self, keys: Iterable[InstrumentKey]) -> list[InstrumentKey]:
        """The ``keys`` some users' chain wants (a counter compare per key: what backfill orders by, for a
        whole start-up's plan at once, without building :meth:`key_states`)."""
        table = self._keys
        return [k for k in keys if (row := table.get(k)) is not None and keystate.wanted_by_tier_a(row)]

    def key_states(self, keys: Iterable[InstrumentKey] | None = None) -> dict[InstrumentKey, KeyState]:
        """The subscriptions view of ``keys`` (default: every desired key); keys nobody wants are absent.
        Owners are group ids, sorted."""
        table = self._keys
        owners: dict[InstrumentKey, list[GroupId]] = {}
        richest: dict[InstrumentKey, int] = {}
        if keys is not None:  # a few keys (a user action's): through the owner index
            index, groups = self._owners, self._groups
            for k in keys:
                own = index.get(k)
                if own and k not in owners:
                    owners[k] = list(own)
                    richest[k] = max(groups[gid].idx for gid in own)
        else:  # every key: one pass over the groups
            for tier in (Tier.B, Tier.A):
                for g in self._lru[tier].values():
                    gid, idx = g.gid, g.idx
                    for k in g.keys:
                        found = owners.get(k)
                        if found is None:
                            owners[k] = [gid]
                            richest[k] = idx
                        else:
                            found.append(gid)
                            richest[k] = max(richest[k], idx)
        out: dict[InstrumentKey, KeyState] = {}
        for k, gids in owners.items():
            row = table[k]
            placed = keystate.placement(row)
            tier_b = keystate.wanted_by_tier_b(row)
            if placed is not None:
                out[k] = KeyState(tuple(sorted(gids)), tier_b, placed[0], placed[1])
            else:
                out[k] = KeyState(tuple(sorted(gids)), tier_b, None, MODES[richest[k]])
        return out

    # ------------------------------------------------------------------ groups

    def add_group(  # noqa: PLR0917 - the positional order is the agreed API
        self,
        group_id: GroupId,
        tier: Tier,
        keys: Iterable[InstrumentKey],
        mode: FeedMode,
        owner: str,
        now: float,
        pinned: bool = False,
        *,
        family: str | None = None,
    ) -> PlanResult:
        """Add a group atomically: all its keys become desired, or nothing changes and the result says why.

        ``family`` (Tier B): groups of one family, e.g. an index's chains across expiries, are placed on
        different accounts as far as they go, so that losing an account loses a share of every index
        rather than all of one (default: the group is its own family).

        Cost = keys not already desired. Room is made by evicting least-recently-used, unpinned Tier A
        groups (Tier B may also evict pinned Tier A); only keys an eviction really frees count. An existing
        id raises :class:`DuplicateGroupError`: a re-add is a :meth:`touch` (or :meth:`replace_keys`).
        """
        if group_id in self._groups:
            raise DuplicateGroupError(f"group {group_id!r} already exists")
        tier = Tier(tier)
        new = dict.fromkeys(keys)
        if not new:
            raise ValueError(f"group {group_id!r} has no keys")
        g = _Group(
            group_id, tier=tier, owner=owner, mode=mode, keys=new, now=now, pinned=pinned, family=family
        )
        fast = self._add_fresh(g, now)
        if fast is not None:
            return fast
        victims = self._admit(g, new, None)
        if isinstance(victims, str):
            return self._reject(g, victims, now, len(new))
        tx = self._begin("add", g, now)
        self._evict(victims, tx, f"capacity limit: making room for {group_id}")
        self._groups[group_id] = g
        self._lru[tier][group_id] = g
        tx.flips[group_id] = (g, None)
        self._attach(g, new)
        self._event(tx, EventKind.ADD, count=len(new), mode=mode)
        self._reconcile()
        return self._finish(tx)

    def _add_fresh(self, g: _Group, now: float) -> PlanResult | None:
        """The common add, done in bulk: every key new to the plan, room for all of them in the configured
        capacity and on one live socket, nothing waiting to resume. Same state, actions and events as the
        general path (the stateful test holds both to one model); None when any condition fails, and then
        nothing was changed."""
        table, keys = self._keys, g.keys
        n = len(keys)
        if (
            g.suspended
            or self._n_susp[Tier.A]
            or self._n_susp[Tier.B]
            or len(table) + n > self.total_capacity
            or self._n_active + n > self._live_cap()
            or not table.keys().isdisjoint(keys)
        ):
            return None
        loads = [len(row) for row in self._actual]
        best = self._socket_for(g, n, self.live_connections(), loads, self._spread())
        if best < 0:
            return None
        tx = self._begin("add", g, now)
        self._groups[g.gid] = g
        self._lru[g.tier][g.gid] = g
        tx.flips[g.gid] = (g, None)
        # One template row copied per key (the spare rows of dropped keys first: no new GC-tracked lists).
        template = BLANK[:]
        template[REFS] = template[ACTIVE] = 1
        template[MODE_COUNT + g.idx] = 1
        template[SLOT] = best * N_MODES + g.idx
        if g.tier is Tier.B:
            template[TIER_B_REFS] = 1
            self._n_tierb += n
        spare = self._spare
        rows: list[KeyRow] = []
        for _ in range(min(n, len(spare))):
            row = spare.pop()
            row[:] = template
            rows.append(row)
        rows.extend([template[:] for _ in range(n - len(rows))])
        table.update(zip(keys, rows, strict=True))
        gid = g.gid
        self._owners.update({k: {gid: None} for k in keys})
        self._n_active += n
        self._actual[best].update(dict.fromkeys(keys, g.mode))
        if self._changed is not None:
            self._changed.update(keys)
        self._event(tx, EventKind.ADD, count=n, mode=g.mode)
        ordered = list(keys)
        per = self._per_msg
        actions = tuple(
            Action(best, "subscribe", g.mode, tuple(ordered[i : i + per])) for i in range(0, n, per)
        )
        self._event(tx, EventKind.SUBSCRIBE, connection=best, count=n, mode=g.mode, reason=tx.reason)
        self._events.extend(tx.events)
        self._tx = None
        return PlanResult(actions=actions, events=tuple(tx.events))

    def remove_group(self, group_id: GroupId, now: float | None = None) -> PlanResult:
        """Drop a group; keys no other group wants are unsubscribed, freed room resumes suspended groups."""
        g = self._get(group_id)
        tx = self._begin("remove", g, now)
        self._drop(g)
        self._event(tx, EventKind.REMOVE, count=len(g.keys))
        self._reconcile()
        return self._finish(tx)

    def touch(self, group_id: GroupId, now: float) -> PlanResult:
        """Mark a group used (viewed or re-added): it becomes the most recently used of its tier.

        Placement is not reshuffled: a suspended group moves up the resume order, no more."""
        g = self._get(group_id)
        g.last_used = now
        self._lru[g.tier].move_to_end(group_id)
        return PlanResult()

    def replace_keys(
        self, group_id: GroupId, keys: Iterable[InstrumentKey], now: float, *, touch: bool = False
    ) -> PlanResult:
        """Swap a group's key set (ATM window move) emitting only the difference.

        Admission as for :meth:`add_group` with the group's own released keys counted as free, the group
        itself never evicted. Not a "use" unless ``touch`` (an automatic recentre is not a user view)."""
        g = self._get(group_id)
        new = dict.fromkeys(keys)
        if not new:
            raise ValueError(f"group {group_id!r}: replace_keys needs at least one key (use remove_group)")
        old = g.keys
        removed = [k for k in old if k not in new]
        added = [k for k in new if k not in old]
        if not removed and not added:
            if touch:
                self.touch(group_id, now)
            return PlanResult()
        victims = self._admit(g, new, removed)
        if isinstance(victims, str):
            return self._reject(g, victims, now, len(new))
        tx = self._begin("replace", g, now)
        self._evict(victims, tx, f"capacity limit: making room for {group_id}")
        self._detach_keys(g, removed)
        g.keys = new
        self._attach(g, added)
        g.updated = now
        if touch:
            g.last_used = now
            self._lru[g.tier].move_to_end(group_id)
        self._event(tx, EventKind.REPLACE, count=len(new), reason=f"+{len(added)} -{len(removed)}")
        self._reconcile()
        return self._finish(tx)

    def pin(self, group_id: GroupId) -> PlanResult:
        """Protect a Tier A group from eviction by other Tier A adds (and suspend it last)."""
        return self._set_pin(group_id, True)

    def unpin(self, group_id: GroupId) -> PlanResult:
        return self._set_pin(group_id, False)

    def clear_tier(
        self,
        tier: Tier,
        reason: str = "EOD",
        *,
        now: float | None = None,
        only: Callable[[GroupInfo], bool] | None = None,
    ) -> PlanResult:
        """Remove every group of ``tier`` (pinned and suspended ones too) — end of day for Tier A.

        ``only`` narrows it (e.g. per exchange session: NSE/BSE chains at 15:30, MCX ones later)."""
        tx = self._begin("eod" if reason == "EOD" else "clear", None, now)
        for g in list(self._lru[tier].values()):
            if only is not None and not only(g.info()):
                continue
            self._drop(g)
            tx.events.append(g.event(EventKind.EOD, reason, now, mode=g.mode))
        self._reconcile()
        return self._finish(tx)

    # ------------------------------------------------------------------ connections

    def connection_down(self, connection: int, reason: str | int | None = None) -> PlanResult:
        """The connection is gone and the server forgot its subscriptions: re-place its keys on live
        connections, suspending Tier A groups (LRU first) when live capacity no longer covers the plan."""
        return self.connections_down([connection], reason)

    def account_down(self, account: int, reason: str | int | None = None) -> PlanResult:
        """Every socket of ``account`` is gone (its token failed, Dhan blocked it, another program took
        it): one re-plan for all of them, so that nothing is placed on a sibling socket about to go too."""
        return self.connections_down(list(self.account_connections(account)), reason)

    def connections_down(self, connections: Iterable[int], reason: str | int | None = None) -> PlanResult:
        """:meth:`connection_down` for several connections in one call (one re-plan)."""
        conns = list(dict.fromkeys(connections))
        for connection in conns:
            self._check_conn(connection)
        tx = self._begin("connection_down", None, None)
        why = None if reason is None else str(reason)
        dirty, keys = self._dirty, self._keys
        for connection in conns:
            row = self._actual[connection]
            self._event(tx, EventKind.CONNECTION_DOWN, connection=connection, count=len(row), reason=why)
            if not self._live[connection]:
                continue
            self._live[connection] = False
            self._n_live -= 1
            for k in row:
                ks = keys[k]
                ks[SLOT] = -1
                dirty[k] = ks
            self._actual[connection] = {}
        self._reconcile()
        return self._finish(tx)

    def connection_up(self, connection: int, *, rebalance: bool = True) -> PlanResult:
        """A fresh socket is open (it carries nothing): resume what now fits, then rebalance (unless
        ``rebalance`` is false, e.g. while several sockets are still opening one after another).

        A no-op for a connection already live — report ``connection_down`` first when a socket is replaced."""
        return self.connections_up([connection], rebalance=rebalance)

    def connections_up(self, connections: Iterable[int], *, rebalance: bool = True) -> PlanResult:
        """:meth:`connection_up` for several connections in one call: the start-up barrier reports every
        socket open at once, so that resumed chains are placed (and Tier B spread over the accounts) with
        every socket in view, not piled on the first one up."""
        conns = list(dict.fromkeys(connections))
        for connection in conns:
            self._check_conn(connection)
        tx = self._begin("connection_up", None, None)
        opened = False
        for connection in conns:
            if self._live[connection]:
                continue
            self._event(tx, EventKind.CONNECTION_UP, connection=connection)
            self._live[connection] = True
            self._n_live += 1
            opened = True
        if not opened:
            return self._finish(tx)
        self._reconcile()
        if rebalance:
            self._rebalance(None, self._tolerance)
        return self._finish(tx)

    def set_ceiling(self, connection: int, ceiling: int | None, reason: str | None = None) -> PlanResult:
        """Set how many keys ``connection`` may carry (None: the per-socket limit again). Dhan answering 804
        (too many instruments) on a socket that tickgate kept within the limit means Dhan counts more than
        we do: carry less there. Keys above the new ceiling move to other live connections, or their
        groups are suspended (Tier A, least recently used first) when no room is left."""
        self._check_conn(connection)
        value = self._per_conn if ceiling is None else ceiling
        if not 1 <= value <= self._per_conn:
            raise PlannerError(f"ceiling must be 1..{self._per_conn}, got {value}")
        tx = self._begin("set_ceiling", None, None)
        self._event(
            tx,
            EventKind.CEILING,
            connection=connection,
            count=value,
            reason=reason,
        )
        self._caps[connection] = value
        row = self._actual[connection]
        excess = len(row) - value
        if excess > 0:
            keys, dirty = self._keys, self._dirty
            for k in list(islice(reversed(row), excess)):
                ks = keys[k]
                self._orig.setdefault(k, ks[SLOT])
                ks[SLOT] = -1
                dirty[k] = ks
                del row[k]
        self._reconcile()
        return self._finish(tx)

    def rebalance(self, max_moves: int | None = None, tolerance: int | None = None) -> PlanResult:
        """Even out live connection loads when max − min exceeds ``tolerance`` (default 2% of a connection),
        moving at most ``max_moves`` keys (unsubscribe on the source, subscribe on the destination)."""
        if max_moves is not None and max_moves < 0:
            raise ValueError("max_moves must be >= 0")
        tx = self._begin("rebalance", None, None)
        self._rebalance(max_moves, self._tolerance if tolerance is None else tolerance)
        return self._finish(tx)

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict[str, Any]:
        """The desired state as plain JSON types, for an operator (``GET /admin/planner``): groups per tier
        in LRU order (oldest first), with pins, suspension flags and times. Not persisted: a restart rebuilds
        the plan from the database's watchlist rows and the Tier B configuration."""
        return {
            "version": SNAPSHOT_VERSION,
            "limits": self._limits.model_dump(),
            "groups": [
                {
                    "id": g.gid,
                    "tier": g.tier.value,
                    "owner": g.owner,
                    "mode": g.mode.name,
                    "keys": [str(k) for k in g.keys],
                    "pinned": g.pinned,
                    "suspended": g.suspended,
                    "created": g.created,
                    "last_used": g.last_used,
                    "updated": g.updated,
                }
                for tier in (Tier.B, Tier.A)
                for g in self._lru[tier].values()
            ],
        }

    # ------------------------------------------------------------------ internals: state changes

    def _get(self, group_id: GroupId) -> _Group:
        try:
            return self._groups[group_id]
        except KeyError:
            raise UnknownGroupError(group_id) from None

    def _check_conn(self, connection: int) -> None:
        if not 0 <= connection < self._nconn:
            raise PlannerError(f"connection {connection} out of range 0..{self._nconn - 1}")

    def _set_pin(self, group_id: GroupId, pinned: bool) -> PlanResult:
        g = self._get(group_id)
        if g.pinned is pinned:
            return PlanResult()
        g.pinned = pinned
        tx = self._begin("pin" if pinned else "unpin", g, None)
        self._event(tx, EventKind.PIN if pinned else EventKind.UNPIN)
        return self._finish(tx)

    def _attach(self, g: _Group, keys: Iterable[InstrumentKey]) -> None:
        """Count ``g`` as an owner of ``keys`` (and as an active owner unless it is suspended)."""
        table, dirty, spare = self._keys, self._dirty, self._spare
        slot = MODE_COUNT + g.idx
        tier_b = g.tier is Tier.B
        active = not g.suspended
        if self._changed is not None:
            keys = list(keys)
            self._changed.update(keys)
        owners, gid = self._owners, g.gid
        for k in keys:
            own = owners.get(k)
            if own is None:
                owners[k] = {gid: None}
            else:
                own[gid] = None
            ks = table.get(k)
            if ks is None:
                if spare:
                    ks = spare.pop()
                    ks[:] = BLANK
                else:
                    ks = BLANK[:]
                table[k] = ks
            ks[REFS] += 1
            if tier_b:
                ks[TIER_B_REFS] += 1
                if ks[TIER_B_REFS] == 1:
                    self._n_tierb += 1
            if active:
                ks[slot] += 1
                ks[ACTIVE] += 1
                if ks[ACTIVE] == 1:
                    self._n_active += 1
                dirty[k] = ks

    def _detach_keys(self, g: _Group, keys: Iterable[InstrumentKey]) -> None:
        table, dirty = self._keys, self._dirty
        if self._changed is not None:
            keys = list(keys)
            self._changed.update(keys)
        slot = MODE_COUNT + g.idx
        tier_b = g.tier is Tier.B
        active = not g.suspended
        owners, gid = self._owners, g.gid
        for k in keys:
            own = owners[k]
            del own[gid]
            if not own:
                del owners[k]
            ks = table[k]
            ks[REFS] -= 1
            if tier_b:
                ks[TIER_B_REFS] -= 1
                if ks[TIER_B_REFS] == 0:
                    self._n_tierb -= 1
            if active:
                ks[slot] -= 1
                ks[ACTIVE] -= 1
                if ks[ACTIVE] == 0:
                    self._n_active -= 1
            dirty[k] = ks  # also when refs hit 0 on a suspended key, so it gets dropped from the table

    def _set_active(self, g: _Group, active: bool) -> None:
        """Suspend (``active=False``) or resume a group: only the active counters change."""
        tx = self._tx
        assert tx is not None
        if g.gid not in tx.flips:
            tx.flips[g.gid] = (g, g.suspended)
        table, dirty = self._keys, self._dirty
        slot = MODE_COUNT + g.idx
        step = 1 if active else -1
        edge = 1 if active else 0  # the ACTIVE value at which the key enters / leaves the active set
        for k in g.keys:
            ks = table[k]
            ks[slot] += step
            ks[ACTIVE] += step
            if ks[ACTIVE] == edge:
                self._n_active += step
            dirty[k] = ks
        g.suspended = not active
        self._n_susp[g.tier] -= step

    def _drop(self, g: _Group) -> None:
        self._detach_keys(g, g.keys)
        if g.suspended:
            self._n_susp[g.tier] -= 1
        del self._groups[g.gid]
        del self._lru[g.tier][g.gid]

    def _evict(self, victims: list[_Group], tx: _Tx, reason: str) -> None:
        for v in victims:
            self._drop(v)
            tx.evicted.append(v.ref())
            tx.events.append(v.event(EventKind.EVICT, reason, tx.at, mode=v.mode))

    # ------------------------------------------------------------------ internals: choosing groups

    def _evictable(self, own: _Group | None, pinned_too: bool) -> Iterator[_Group]:
        """Tier A groups in eviction order: unpinned LRU first, then (Tier B requests only) pinned LRU."""
        lru = self._lru[Tier.A]
        for g in lru.values():
            if not g.pinned and g is not own:
                yield g
        if pinned_too:
            for g in lru.values():
                if g.pinned and g is not own:
                    yield g

    def _choose(self, pick: _Pick, cands: Iterable[_Group], need: int) -> None:
        """Take candidates in order until dropping them (all together) frees ``need`` keys.

        ``pick.pend[k]`` counts how many chosen groups (plus any pre-seeded release) hold ``k``; a key is
        freed when that reaches its owner count (``act`` for suspension, ``refs`` for eviction)."""
        if pick.freed >= need:
            return
        table, pend, exclude = self._keys, pick.pend, pick.exclude
        which = ACTIVE if pick.active else REFS
        freed = pick.freed
        for g in cands:
            before = freed
            for k in g.keys:
                if exclude is not None and k in exclude:
                    continue
                p = pend.get(k, 0) + 1
                pend[k] = p
                if p == table[k][which]:
                    freed += 1
            pick.victims.append(g)
            pick.gains.append(freed - before)
            if freed >= need:
                break
        pick.freed = freed

    def _prune(self, pick: _Pick, need: int, start: int = 0) -> None:
        """Give back chosen groups (from index ``start``) that turn out not to be needed, e.g. a group
        whose keys a Tier B group also holds frees nothing, so that every victim left is necessary.

        Newest first, so older groups are the ones that go. In the first pass a group's loss when given
        back is at least its gain when chosen (no newer victim can hold a key it freed), hence the cheap
        filter. Giving back an older group can make a newer one unnecessary: repeat until stable."""
        table, pend, exclude = self._keys, pick.pend, pick.exclude
        which = ACTIVE if pick.active else REFS
        victims, gains = pick.victims, pick.gains
        first = True
        changed = True
        while changed:
            changed = False
            top = len(victims) - (2 if first else 1)  # the newest victim is needed in the first pass
            for i in range(top, start - 1, -1):
                margin = pick.freed - need
                if first and gains[i] > margin:
                    continue
                v = victims[i]
                loss = 0
                for k in v.keys:
                    if exclude is not None and k in exclude:
                        continue
                    if pend[k] == table[k][which]:
                        loss += 1
                if loss <= margin:
                    for k in v.keys:
                        if exclude is None or k not in exclude:
                            pend[k] -= 1
                    pick.freed -= loss
                    del victims[i]
                    del gains[i]
                    changed = True
            first = False

    def _admit(
        self, g: _Group, new: dict[InstrumentKey, None], released: list[InstrumentKey] | None
    ) -> list[_Group] | str:
        """Groups to evict so ``g`` (new, or with ``new`` replacing its keys) fits the configured capacity,
        or the reason it cannot. Reads state only: a refusal must leave no trace."""
        table = self._keys
        total = self.total_capacity
        cost = sum(1 for k in new if k not in table)
        pend: dict[InstrumentKey, int] = {}
        freed_own = 0
        for k in released or ():
            pend[k] = 1
            if table[k][REFS] == 1:
                freed_own += 1
        free = total - len(table) + freed_own
        need = cost - free
        if need <= 0:
            return []
        own = g if released is not None else None
        pick = _Pick(active=False, exclude=new, pend=pend)
        self._choose(pick, self._evictable(own, g.tier is Tier.B), need)
        freed = pick.freed
        if freed < need:
            pinned = sum(len(x.keys) for x in self._lru[Tier.A].values() if x.pinned and x is not own)
            if g.tier is Tier.B:
                return (
                    f"cannot add Tier B group {g.gid}: needs {cost} more instruments, "
                    f"{free} of {total} free; Tier B alone would exceed capacity "
                    f"(Tier B holds {self._n_tierb}, evicting all of Tier A frees only {freed})"
                )
            return (
                f"cannot fit {g.gid}: needs {cost} more instruments, {free} of {total} free; Tier B holds "
                f"{self._n_tierb}, pinned Tier A groups hold {pinned}, evicting every other unpinned Tier A "
                f"group would free only {freed}"
            )
        self._prune(pick, need)
        return pick.victims

    # ------------------------------------------------------------------ internals: reconcile

    def _reconcile(self) -> None:
        """Make the active set fit live capacity (suspend / resume), then place or unplace dirty keys."""
        live_cap = self._live_cap()
        if self._n_active > live_cap:
            self._suspend_to_fit(live_cap)
        if self._n_susp[Tier.B] and self._n_susp[Tier.A] < len(self._lru[Tier.A]):
            # Tier A never runs while part of Tier B waits for capacity (e.g. a new Tier A group).
            for g in list(self._lru[Tier.A].values()):
                if not g.suspended:
                    self._set_active(g, False)
        if self._n_susp[Tier.A] or self._n_susp[Tier.B]:
            self._resume_what_fits(live_cap)
        self._apply_dirty()

    def _suspend_to_fit(self, live_cap: int) -> None:
        """Suspend Tier A groups (unpinned LRU, then pinned LRU) until the active set fits; Tier B only
        when even that is not enough, and then every Tier A group is suspended first."""
        need = self._n_active - live_cap
        lru_a = self._lru[Tier.A]
        pick = _Pick(active=True)
        cands_a = [g for g in lru_a.values() if not g.suspended and not g.pinned]
        cands_a += [g for g in lru_a.values() if not g.suspended and g.pinned]
        self._choose(pick, cands_a, need)
        if pick.freed >= need:
            self._prune(pick, need)
        else:
            start = len(pick.victims)  # all of Tier A is chosen; only Tier B choices may be given back
            self._choose(pick, [g for g in self._lru[Tier.B].values() if not g.suspended], need)
            if pick.freed < need:
                raise AssertionError("suspending every group did not free enough keys")
            self._prune(pick, need, start)
        for g in pick.victims:
            self._set_active(g, False)

    def _resume_what_fits(self, live_cap: int) -> None:
        """Resume suspended groups that fit: Tier B (most recent first), then — only once all of Tier B
        runs — Tier A pinned then unpinned, most recently used first. A group too big for the slack is
        skipped so a smaller one behind it can still come back."""
        table = self._keys
        slack = live_cap - self._n_active
        for tier in (Tier.B, Tier.A):
            if tier is Tier.A and self._n_susp[Tier.B]:
                return
            if not self._n_susp[tier]:
                continue
            cands = [g for g in reversed(self._lru[tier].values()) if g.suspended]
            if tier is Tier.A:
                cands.sort(key=lambda g: not g.pinned)
            for g in cands:
                cost = 0
                for k in g.keys:
                    if table[k][ACTIVE] == 0:
                        cost += 1
                        if cost > slack:
                            break
                if cost <= slack:
                    self._set_active(g, True)
                    slack -= cost

    def _apply_dirty(self) -> None:
        """Unplace keys no longer wanted, re-mode changed ones in place, place newly wanted ones."""
        table, orig, actual, spare = self._keys, self._orig, self._actual, self._spare
        new_keys: list[InstrumentKey] = []
        new_states: list[list[int]] = []
        new_modes: list[int] = []
        if self._changed is not None:
            self._changed.update(self._dirty)
        for k, ks in self._dirty.items():
            if ks[ACTIVE]:
                t = TOP
                while not ks[MODE_COUNT + t]:
                    t -= 1
            else:
                t = -1
            slot = ks[SLOT]
            if slot >= 0:
                c, m = divmod(slot, N_MODES)
                if t < 0:
                    orig.setdefault(k, slot)
                    del actual[c][k]
                    ks[SLOT] = -1
                elif t != m:
                    orig.setdefault(k, slot)
                    actual[c][k] = MODES[t]
                    ks[SLOT] = slot - m + t
            elif t >= 0:
                new_keys.append(k)
                new_states.append(ks)
                new_modes.append(t)
            if not ks[REFS]:
                del table[k]
                spare.append(ks)
        self._dirty.clear()
        if new_keys:
            self._place(new_keys, new_states, new_modes)

    def _place(self, keys: list[InstrumentKey], states: list[list[int]], modes: list[int]) -> None:
        """Place newly active keys chain by chain: the keys of one chain go whole to one connection, the
        least loaded with room for all of them (for Tier B, on the account holding the fewest of its
        family). Only a chain no single connection has room for is split, least-loaded first key by key
        (:func:`_waterfill`)."""
        live = [c for c in range(self._nconn) if self._live[c]]
        actual, caps, orig, owners, groups = self._actual, self._caps, self._orig, self._owners, self._groups
        loads = [len(row) for row in actual]
        spread = self._spread()
        # The chain of each key: the call's own group when it wants the key (its window shares keys with a
        # suspended chain), else the key's first owner. A call that changed no other group's suspension (a
        # plain add or window move) places only its own group's keys: one batch, no lookup per key.
        tx = self._tx
        mine = tx.group if tx is not None else None
        batches: dict[GroupId, list[int] | None] = {}
        if tx is not None and mine is not None and all(gid == mine for gid in tx.flips):
            batches[mine] = None  # every key, in order
        else:
            for i, k in enumerate(keys):
                own = owners[k]
                gid = mine if mine is not None and mine in own else next(iter(own))
                batch = batches.get(gid)
                if batch is None:
                    batches[gid] = [i]
                else:
                    batch.append(i)
        for gid, chosen in batches.items():
            size = len(keys) if chosen is None else len(chosen)
            g = groups[gid]
            best = self._socket_for(g, size, live, loads, spread)
            if best >= 0 and chosen is None:
                self._put_all(best, keys, states, modes)
                loads[best] += size
                if spread is not None and g.tier is Tier.B:
                    spread.placed(g, self._account_of[best])
                continue
            idx = list(range(len(keys))) if chosen is None else chosen
            if best >= 0:
                segments: Iterable[tuple[int, int]] = ((best, size),)
            else:
                counts = _waterfill([loads[c] for c in live], size, [caps[c] for c in live])
                segments = zip(live, counts, strict=True)
            pos = 0
            for c, m in segments:
                if not m:
                    continue
                row = actual[c]
                base = c * N_MODES
                for i in idx[pos : pos + m]:
                    k = keys[i]
                    orig.setdefault(k, -1)
                    t = modes[i]
                    row[k] = MODES[t]
                    states[i][SLOT] = base + t
                loads[c] += m
                if spread is not None and g.tier is Tier.B:
                    spread.placed(g, self._account_of[c])
                pos += m

    def _spread(self) -> _Spread | None:
        """Tier B's spread over the accounts for one placement call (None: one account, nothing to spread)."""
        return _Spread(self) if len(self._accounts) > 1 else None

    def _socket_for(
        self, g: _Group, size: int, live: list[int], loads: list[int], spread: _Spread | None
    ) -> int:
        """Where ``size`` keys of chain ``g`` go whole: the least-loaded live connection with room for all
        of them (ties: the lowest id); for Tier B over several accounts, on the account holding the fewest
        of its family. -1 when no connection has room (the caller splits the chain)."""
        if spread is not None and g.tier is Tier.B:
            return spread.pick(g, size, live, loads)
        caps = self._caps
        best = -1
        for c in live:
            if caps[c] - loads[c] >= size and (best < 0 or loads[c] < loads[best]):
                best = c
        return best

    def _put_all(self, c: int, keys: list[InstrumentKey], states: list[list[int]], modes: list[int]) -> None:
        """Place every one of ``keys`` on connection ``c`` (one chain, whole): in bulk where the keys share
        a mode and the call has no earlier placement to remember, as a chain's add usually does."""
        row, orig = self._actual[c], self._orig
        base = c * N_MODES
        if orig:
            for k in keys:
                orig.setdefault(k, -1)
        else:
            orig.update(dict.fromkeys(keys, -1))
        t0 = modes[0]
        if modes.count(t0) == len(modes):
            row.update(dict.fromkeys(keys, MODES[t0]))
            slot = base + t0
            for ks in states:
                ks[SLOT] = slot
        else:
            for k, ks, t in zip(keys, states, modes, strict=True):
                row[k] = MODES[t]
                ks[SLOT] = base + t

    def _rebalance(self, max_moves: int | None, tolerance: int) -> None:
        """Move keys from the most to the least loaded live connections until loads are even (within one)
        once the spread exceeds ``tolerance``. Targets give the remainder to the already heavier
        connections, so no key moves that need not."""
        live = [c for c in range(self._nconn) if self._live[c]]
        if len(live) < 2:
            return
        loads = {c: len(self._actual[c]) for c in live}
        if max(loads.values()) - min(loads.values()) <= tolerance:
            return
        q, r = divmod(sum(loads.values()), len(live))
        heavy_first = sorted(live, key=lambda c: (-loads[c], c))
        target = {c: q + (1 if i < r else 0) for i, c in enumerate(heavy_first)}
        if any(target[c] > self._caps[c] for c in live):  # a lowered ceiling: fill evenly under the caps
            even = _waterfill([0] * len(live), sum(loads.values()), [self._caps[c] for c in live])
            target = dict(zip(live, even, strict=True))
        donors = [[c, loads[c] - target[c]] for c in heavy_first if loads[c] > target[c]]
        takers = [[c, target[c] - loads[c]] for c in reversed(heavy_first) if loads[c] < target[c]]
        budget = -1 if max_moves is None else max_moves
        table, orig = self._keys, self._orig
        i = j = 0
        while i < len(donors) and j < len(takers) and budget != 0:
            src, surplus = donors[i]
            dst, deficit = takers[j]
            m = min(surplus, deficit)
            if budget > 0:
                m = min(m, budget)
                budget -= m
            src_row, dst_row = self._actual[src], self._actual[dst]
            shift = (dst - src) * N_MODES
            for k in list(islice(reversed(src_row), m)):
                ks = table[k]
                orig.setdefault(k, ks[SLOT])
                dst_row[k] = src_row.pop(k)
                ks[SLOT] += shift
            donors[i][1] -= m
            takers[j][1] -= m
            if donors[i][1] == 0:
                i += 1
            if takers[j][1] == 0:
                j += 1

    # ------------------------------------------------------------------ internals: transactions

    def _begin(self, reason: str, g: _Group | None, at: float | None) -> _Tx:
        tx = _Tx(reason, g, at)
        self._tx = tx
        return tx

    def _event(
        self,
        tx: _Tx,
        kind: EventKind,
        *,
        connection: int | None = None,
        count: int = 0,
        mode: FeedMode | None = None,
        reason: str | None = None,
    ) -> None:
        tx.events.append(
            PlannerEvent(kind, tx.group, tx.owner, tx.tier, connection, count, mode, reason, at=tx.at)
        )

    def _reject(self, g: _Group, reason: str, now: float, size: int) -> PlanResult:
        ev = PlannerEvent(
            EventKind.REJECT, g.gid, g.owner, g.tier, count=size, mode=g.mode, reason=reason, at=now
        )
        self._events.append(ev)
        return PlanResult(accepted=False, reason=reason, events=(ev,))

    def _finish(self, tx: _Tx) -> PlanResult:
        """Turn the placement changes of this call into ordered actions and events (net of the call)."""
        table = self._keys
        nm = N_MODES
        # Buckets keyed by placement slot (connection * N_MODES + mode index).
        unsubs: dict[int, list[InstrumentKey]] = {}
        subs: dict[int, list[InstrumentKey]] = {}
        moves: dict[tuple[int, int], int] = {}
        remoded = 0
        for k, s0 in self._orig.items():
            ks = table.get(k)
            s1 = -1 if ks is None else ks[SLOT]
            if s0 == s1:
                continue
            if s0 >= 0:
                unsubs.setdefault(s0, []).append(k)
                if s1 >= 0:
                    subs.setdefault(s1, []).append(k)
                    c0, c1 = s0 // nm, s1 // nm
                    if c0 == c1:
                        remoded += 1
                    else:
                        moves[(c0, c1)] = moves.get((c0, c1), 0) + 1
            else:
                subs.setdefault(s1, []).append(k)
        if self._changed is not None:
            self._changed.update(self._orig)
        self._orig.clear()

        events = tx.events
        actions: list[Action] = []
        per = self._per_msg
        # Every unsubscribe before any subscribe: a key moving between connections leaves its old one first.
        steps: tuple[tuple[Op, EventKind, dict[int, list[InstrumentKey]]], ...] = (
            ("unsubscribe", EventKind.UNSUBSCRIBE, unsubs),
            ("subscribe", EventKind.SUBSCRIBE, subs),
        )
        for op, kind, buckets in steps:
            for b in sorted(buckets):
                ks_list = buckets[b]
                c, mode = b // nm, MODES[b % nm]
                for i in range(0, len(ks_list), per):
                    actions.append(Action(c, op, mode, tuple(ks_list[i : i + per])))
                self._event(tx, kind, connection=c, count=len(ks_list), mode=mode, reason=tx.reason)
        for (src, dst), n in sorted(moves.items()):
            events.append(
                PlannerEvent(EventKind.MOVE, connection=src, target=dst, count=n, reason=tx.reason, at=tx.at)
            )
        if remoded:
            g = self._groups.get(tx.group) if tx.group else None
            self._event(
                tx, EventKind.MODE_CHANGE, count=remoded, mode=g.mode if g else None, reason=tx.reason
            )

        suspended: list[GroupRef] = []
        resumed: list[GroupRef] = []
        for gid, (g, was) in tx.flips.items():
            if self._groups.get(gid) is not g or was is g.suspended:
                continue
            if g.suspended:
                suspended.append(g.ref())
                events.append(g.event(EventKind.SUSPEND, f"live capacity {self.live_capacity}", tx.at))
            elif was is not None:
                resumed.append(g.ref())
                events.append(g.event(EventKind.RESUME, f"live capacity {self.live_capacity}", tx.at))
        self._events.extend(events)
        self._tx = None
        return PlanResult(
            actions=tuple(actions),
            evicted=tuple(tx.evicted),
            suspended=tuple(suspended),
            resumed=tuple(resumed),
            events=tuple(events),
        )
