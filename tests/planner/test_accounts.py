"""Several Dhan accounts under one planner (issue 19), at the real limits: capacity is the sum, limits hold
per account, chains stay whole on one socket, Tier B is spread so that losing an account loses a share of
every index, and an account lost at capacity degrades Tier A (least recently used first) before Tier B."""

from __future__ import annotations

from collections import Counter

import pytest

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner import Planner, PlannerError, PlanResult, Tier

from .model import ServerModel, keys

LIMITS = FeedLimits()
CHAIN_B = 202  # an index chain: 101 strikes × CE/PE
CHAIN_A = 50
INDICES = ("NIFTY", "BANKNIFTY", "FINNIFTY", "SENSEX")
EXPIRIES = 6


class Accounts:
    """A planner over ``n`` accounts plus the server model its actions replay on, checked after each call."""

    def __init__(self, n: int, sockets: int = 5) -> None:
        self.accounts = [sockets] * n
        self.p = Planner(LIMITS, accounts=self.accounts)
        self.server = ServerModel(LIMITS, self.accounts)
        self.next = 0
        self.squeezed: set[str] = set()
        self.run(self.p.connections_up(range(sum(self.accounts))))

    def run(self, result: PlanResult) -> PlanResult:
        self.server.apply(result, self.p.live_connections())
        assert self.p.actual() == self.server.conns
        return result

    def take(self, n: int) -> list[InstrumentKey]:
        out = keys(range(self.next, self.next + n))
        self.next += n
        return out

    def add_tier_b(self) -> None:
        for expiry in range(EXPIRIES):
            for index in INDICES:
                gid = f"B:{index}:{expiry}"
                r = self.p.add_group(
                    gid, Tier.B, self.take(CHAIN_B), FeedMode.QUOTE, "tierb", 0.0, family=index
                )
                assert self.run(r).accepted

    def fill_tier_a(self) -> list[str]:
        """Tier A chains until the capacity is full; ``self.squeezed``: those added when no single socket
        had room for a whole chain (the only ones that may be split)."""
        gids: list[str] = []
        while self.p.plan_capacity().free >= CHAIN_A:
            gid = f"A:{len(gids)}"
            room = max(c - x for c, x in zip(self.p.ceilings(), self.p.loads(), strict=True))
            if room < CHAIN_A:
                self.squeezed.add(gid)
            owner = f"u{len(gids) % 7}"
            r = self.p.add_group(gid, Tier.A, self.take(CHAIN_A), FeedMode.FULL, owner, 1.0 + len(gids))
            assert self.run(r).accepted
            gids.append(gid)
        return gids

    def connections_of(self, gid: str) -> set[int]:
        placed = self.p.actual()
        return {c for c, row in placed.items() for k in self.p.group_keys(gid) if k in row}

    def account_of_group(self, gid: str) -> int:
        (c,) = self.connections_of(gid)
        return self.p.account_of(c)

    def down(self, account: int, reason: int | str = 807) -> PlanResult:
        for c in self.p.account_connections(account):
            self.server.drop(c)
        return self.run(self.p.account_down(account, reason))


def test_capacity_is_the_sum_and_connections_run_account_by_account() -> None:
    h = Accounts(3)
    assert h.p.total_capacity == 75_000
    assert [list(h.p.account_connections(a)) for a in range(3)] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11, 12, 13, 14],
    ]
    assert [h.p.account_of(c) for c in (0, 4, 5, 14)] == [0, 0, 1, 2]
    with pytest.raises(PlannerError):
        Planner(LIMITS, accounts=[5, 6])  # a 6th socket on one client id
    with pytest.raises(PlannerError):
        Planner(LIMITS, accounts=[])


def test_filled_through_75000_chains_whole_and_limits_per_account() -> None:
    h = Accounts(3)
    h.add_tier_b()
    gids = h.fill_tier_a()
    assert h.p.plan_capacity().placed == 75_000 - (75_000 - h.p.plan_capacity().tier_b) % CHAIN_A
    loads = h.p.loads()
    assert max(loads) <= LIMITS.instruments_per_socket
    assert len(h.squeezed) < len(gids) // 20, "most chains found a socket with room"
    for gid in [f"B:{i}:{e}" for i in INDICES for e in range(EXPIRIES)] + gids:
        if gid not in h.squeezed:
            assert len(h.connections_of(gid)) == 1, f"{gid} split over sockets"


def test_tier_b_spread_so_an_account_loses_a_share_of_every_index() -> None:
    h = Accounts(3)
    h.add_tier_b()
    per_account = Counter(
        (gid.split(":")[1], h.account_of_group(gid)) for gid in (g.group for g in h.p.groups())
    )
    for index in INDICES:
        counts = [per_account[(index, a)] for a in range(3)]
        assert counts == [EXPIRIES // 3] * 3, f"{index} not spread: {counts}"


def test_an_account_lost_at_capacity_degrades_tier_a_lru_first_and_comes_back_whole() -> None:
    h = Accounts(3)
    h.add_tier_b()
    gids = h.fill_tier_a()
    before = h.p.actual()
    result = h.down(1)
    assert all(ref.tier is Tier.A for ref in result.suspended)
    assert not any(h.p.is_suspended(f"B:{i}:{e}") for i in INDICES for e in range(EXPIRIES)), "Tier B lost"
    suspended = [g for g in gids if h.p.is_suspended(g)]
    running = [g for g in gids if not h.p.is_suspended(g)]
    assert suspended, "nothing suspended although a third of the capacity went"
    # Least recently used first: every suspended chain is older than every running one (chains are whole).
    assert max(int(g[2:]) for g in suspended) < min(int(g[2:]) for g in running)
    assert h.p.plan_capacity().placed <= 50_000
    assert all(not h.p.actual()[c] for c in h.p.account_connections(1))
    restored = h.run(h.p.connections_up(h.p.account_connections(1)))
    assert {r.group for r in restored.resumed} == set(suspended)
    assert not h.p.suspended()
    assert sum(len(r) for r in h.p.actual().values()) == sum(len(r) for r in before.values())


def test_an_account_lost_with_room_moves_its_chains_whole_to_the_others() -> None:
    h = Accounts(3)
    h.add_tier_b()
    gids = [f"A:{i}" for i in range(100)]
    for i, gid in enumerate(gids):
        h.run(h.p.add_group(gid, Tier.A, h.take(CHAIN_A), FeedMode.FULL, "u", float(i)))
    result = h.down(2, "429")
    assert not result.suspended
    for gid in [g.group for g in h.p.groups()]:
        (c,) = h.connections_of(gid)
        assert h.p.account_of(c) != 2
    # Fewer than its share of each index lost at the instant of the failure: two of six expiries each.
    moved = Counter(e.connection for e in result.events if e.kind.name == "CONNECTION_DOWN")
    assert sorted(moved) == list(h.p.account_connections(2))
