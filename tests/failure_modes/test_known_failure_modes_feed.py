"""Known failure modes of other Dhan/broker feed clients, each a named test against the real parts: the
Dhan-compatible simulator over loopback WebSockets, :class:`FeedPool` / :class:`FeedManager` and the pure
planner. Each test drives the fault that broke the other system and asserts it does not break tickgate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest

from feed.conftest import add_groups, big_universe, credentials, fast_settings, make_sim, running
from tickgate.dhan.client import ConnectionState, Credentials
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.feed import FeedManager
from tickgate.planner import Planner, Tier
from tickgate.sim import DEFAULT_CLIENT_ID, Simulator

from .conftest import (
    WAIT_S,
    converged,
    now_ns,
    plan_count,
    sim_count,
    sim_socket_of,
    tick_marks,
    ticks_flow_again,
)

__all__ = ["make_sim", "running"]  # fixtures, imported so pytest finds them here

pytestmark = pytest.mark.timeout(120)

SimFactory = Callable[..., Simulator]


async def start_feed(
    make_sim: SimFactory,
    running: list[object],
    chains: int,
    *,
    sim: dict[str, object] | None = None,
    provider: Callable[[], Credentials] = credentials,
    universe_chains: int | None = None,
    **feed: float,
) -> tuple[Simulator, FeedManager, list[list[InstrumentKey]]]:
    """Simulator + started feed carrying the first ``chains`` chains of the universe as Tier B, converged."""
    universe, groups = big_universe(universe_chains or chains)
    simulator = make_sim(universe=universe, **(sim or {}))
    await simulator.start()
    running.append(simulator)
    feed.setdefault("startup_barrier_s", 0.3)
    settings = fast_settings(None, **feed)
    planner = Planner(settings.limits)
    add_groups(planner, groups[:chains], Tier.B, "B")
    manager = FeedManager(settings, planner, provider, url=simulator.url)
    await manager.start()
    running.append(manager)
    await converged(manager, simulator)
    return simulator, manager, groups


# -- OpenAlgo #1924 ------------------------------------------------------------------------------------------


async def test_openalgo_1924_unsubscribes_are_sent_so_broker_counts_never_drift(
    make_sim: SimFactory, running: list[object]
) -> None:
    """OpenAlgo #1924: removing symbols never sent the unsubscribe, so the broker-side subscription count
    kept growing until the account limit was hit with instruments nobody watched.

    tickgate: every removal, eviction and recentre is a planner diff whose unsubscribe actions are sent
    (≤ 100 per message) on the socket that holds the keys; keys shared by two groups stay until the last
    one goes (refcounts). Over many random add / remove / recentre cycles the simulator's per-socket
    record must equal the plan exactly after each cycle, and at the end only Tier B remains."""
    sim, manager, groups = await start_feed(make_sim, running, 4, universe_chains=40, sim={"rate": 1_000.0})
    planner = manager.planner
    tier_b = plan_count(planner)
    assert tier_b == 4 * len(groups[0])
    rng = random.Random(1924)
    pool = list(range(4, 40))
    live: dict[str, list[InstrumentKey]] = {}
    recentred = 0
    names: list[str] = []
    for cycle in range(40):
        at = float(cycle)
        for _ in range(rng.randint(1, 3)):  # adds (some overlap the keys of live groups)
            i = rng.choice(pool)
            name = f"A{len(names)}-{i}"
            names.append(name)
            keys = groups[i][rng.randint(0, 100) :] + groups[(i + 1) % 40][: rng.randint(0, 100)]
            result = manager.plan(
                lambda p, n=name, k=keys, t=at: p.add_group(n, Tier.A, k, FeedMode.QUOTE, n, t)
            )
            assert result.accepted
            live[name] = keys
        for name in rng.sample(sorted(live), k=min(len(live), rng.randint(1, 3))):  # removes
            manager.plan(lambda p, n=name, t=at: p.remove_group(n, t))
            del live[name]
        if live and cycle % 3 == 0:  # a recentre: the window slides, half its strikes change
            name = rng.choice(sorted(live))
            i = int(name.split("-")[1])
            shifted = groups[i][100:] + groups[(i + 1) % 40][:100]
            manager.plan(lambda p, n=name, k=shifted, t=at: p.replace_keys(n, k, t))
            live[name] = shifted
            recentred += 1
        await converged(manager, sim)
        desired = {k for keys in live.values() for k in keys} | {k for g in groups[:4] for k in g}
        assert sim_count(sim) == plan_count(planner) == len(desired), f"cycle {cycle}: counts drifted"
    for name in list(live):
        manager.plan(lambda p, n=name: p.remove_group(n, 99.0))
    await converged(manager, sim)
    assert sim_count(sim) == tier_b, "unsubscribes went missing: the broker still carries removed keys"
    unsubscribes = sum(r.unsubscribe_messages for r in sim.history)
    assert unsubscribes > 0
    assert recentred >= 5
    assert sim.stats.mode_mismatches == 0  # each unsubscribe named the mode the key was subscribed in
    assert sim.stats.max_instruments_per_message <= 100
    assert sim.breaches == []


# -- OpenAlgo #959 -------------------------------------------------------------------------------------------


async def test_openalgo_959_backoff_resets_so_overnight_drops_never_end_streaming(
    make_sim: SimFactory, running: list[object]
) -> None:
    """OpenAlgo #959: the reconnect attempt counter was never reset after a successful connection, so
    drops spread over a night added up to the maximum and streaming stopped for good.

    tickgate: there is no maximum — a connection retries forever with capped, jittered exponential
    backoff — and the backoff is reset once a socket has stayed up ``backoff_stable_s``. Here
    ``backoff_stable_s`` is 0.3 s: fifteen drops of all five sockets, each after a stable period, must
    never grow the backoff; a burst of flapping (drops before the stable period) must grow it up to the
    cap and still reconnect; and one stable period later it is back to the first step."""
    sim, manager, _groups = await start_feed(
        make_sim,
        running,
        2,
        backoff_initial_s=0.05,
        backoff_cap_s=0.8,
        backoff_stable_s=0.3,
    )
    pool = manager.pool
    stable = manager.settings.feed.backoff_stable_s

    def stable_for_all() -> bool:
        now = time.monotonic()
        return all(
            s.state is ConnectionState.UP and s.up_since is not None and now - s.up_since > stable + 0.05
            for s in pool.status()
        )

    drops = 15
    for night in range(drops):
        assert await manager.wait_until(stable_for_all, WAIT_S)
        sim.faults.drop("all")
        assert await manager.wait_until(lambda: not manager.all_up(), WAIT_S)
        assert await manager.wait_until(manager.all_up, WAIT_S), f"drop {night}: feed stopped reconnecting"
        failures = [c.backoff.failures for c in pool.connections]
        assert max(failures) <= 1, f"drop {night}: backoff kept growing across stable periods: {failures}"
    await converged(manager, sim)
    assert sum(s.reconnects for s in pool.status()) >= drops * 5

    # flapping: drop connection 0 again and again before it has been up for the stable period
    flaps = 6
    for _ in range(flaps):
        assert await manager.wait_until(lambda: sim_socket_of(manager, sim, 0) is not None, WAIT_S)
        victim = sim_socket_of(manager, sim, 0)
        assert victim is not None
        sim.faults.drop(victim)
        assert await manager.wait_until(lambda: pool.connections[0].ws is None, WAIT_S)
    assert await manager.wait_until(manager.all_up, WAIT_S), "a flapping socket gave up"
    assert pool.connections[0].backoff.failures >= flaps  # it did back off (no reconnect storm)…
    delay_cap = manager.settings.feed.backoff_cap_s
    assert pool.connections[0].status.next_attempt_in is None or (
        pool.connections[0].status.next_attempt_in <= delay_cap
    )
    # …and one stable period later the next drop starts from the first step again
    assert await manager.wait_until(stable_for_all, WAIT_S)
    victim = sim_socket_of(manager, sim, 0)
    assert victim is not None
    seen = pool.connections[0].status.reconnects
    sim.faults.drop(victim)
    assert await manager.wait_until(lambda: pool.connections[0].status.reconnects > seen, WAIT_S)
    assert await manager.wait_until(manager.all_up, WAIT_S)
    assert pool.connections[0].backoff.failures == 1
    await converged(manager, sim)
    assert manager.alert is None


# -- OpenAlgo #1372, nautilus_trader #1533 -------------------------------------------------------------------


async def test_openalgo_1372_nautilus_1533_resubscribes_after_reconnect(
    make_sim: SimFactory, running: list[object]
) -> None:
    """OpenAlgo #1372 / nautilus_trader #1533: after the feed socket reconnected, the client never sent
    its subscriptions again — the connection looked healthy but carried no data.

    tickgate: a reconnect is ``planner.connection_up`` like a first connect; the planner re-places every
    group the socket (or the account) lost and the manager sends those subscribes on the new socket. All
    five sockets are killed at once (nowhere to park the keys); after reconnect the simulator's record
    must equal the plan again and every one of the 1,000 instruments must tick again."""
    sim, manager, groups = await start_feed(make_sim, running, 5, sim={"rate": 8_000.0})
    keys = [k for g in groups for k in g]
    before = {r.id for r in sim.open_sockets()}
    for round_ in range(2):
        killed = sim.faults.drop("all")
        assert set(killed) == before
        assert await manager.wait_until(lambda: not manager.all_up(), WAIT_S)
        assert await manager.wait_until(manager.all_up, WAIT_S), f"round {round_}: no reconnect"
        await converged(manager, sim)
        now = {r.id for r in sim.open_sockets()}
        assert not now & before, "the old sockets must be gone: these are new connections"
        assert sim_count(sim) == len(keys) == plan_count(manager.planner)
        marks = tick_marks(manager, keys)
        await ticks_flow_again(manager, marks, now_ns())
        before = now
    assert manager.planner.suspended() == []
    assert sim.breaches == []


# -- OpenAlgo #1419 ------------------------------------------------------------------------------------------


async def test_openalgo_1419_stale_token_after_daily_rollover(
    make_sim: SimFactory, running: list[object]
) -> None:
    """OpenAlgo #1419: after the broker's daily token rollover the client kept reconnecting with the stale
    token (rejected every time, hammering the broker) until someone restarted it.

    tickgate: 807 (token expired) is fatal for the account: every connection stops and only re-reads
    the credentials provider every ``fatal_recheck_s`` — no connect attempt is made while it still returns
    the rejected token. As soon as the provider returns a new token the pool reconnects by itself, with
    the new token (the old one stays expired at the simulator, so an old-token connect would fail)."""
    token = {"value": credentials().access_token}

    def provider() -> Credentials:
        return Credentials(DEFAULT_CLIENT_ID, token["value"])

    sim, manager, groups = await start_feed(make_sim, running, 2, provider=provider, fatal_recheck_s=0.05)
    connects_before = sim.stats.connections
    kicked = sim.faults.expire_token()  # the rollover: every socket gets Disconnect 807
    assert len(kicked) == 5
    assert await manager.wait_until(lambda: manager.alert is not None and "807" in manager.alert, WAIT_S)
    assert await manager.wait_until(lambda: not sim.open_sockets(), WAIT_S)
    # the provider still hands out yesterday's token (a stale cache): ~40 rechecks per connection…
    await asyncio.sleep(2.0)
    stale_attempts = sim.stats.connections - connects_before
    assert stale_attempts <= 5, f"{stale_attempts} connects with a token the broker had rejected"
    assert sim.stats.auth_failures[807] <= 5
    assert token["value"] not in (manager.alert or "")
    # …then the new token is issued and the provider returns it: recovery without an operator
    sim.faults.set_token("token-of-the-next-day")
    token["value"] = "token-of-the-next-day"
    assert await manager.wait_until(lambda: manager.all_up() and manager.alert is None, WAIT_S)
    await converged(manager, sim)
    assert sim_count(sim) == sum(len(g) for g in groups)
    assert sim.stats.auth_failures[807] <= 5  # still: not one more try with the old token
    marks = tick_marks(manager, [k for g in groups for k in g][:50])
    await ticks_flow_again(manager, marks, now_ns())


# -- pykiteconnect #229 / #237 -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["silence", "stall"])
async def test_pykiteconnect_229_237_dead_socket_is_noticed_and_recycled(
    make_sim: SimFactory, running: list[object], fault: str
) -> None:
    """pykiteconnect #229 / #237: a socket that silently died (no close, no data) was never noticed; the
    client sat on it for hours believing it was connected.

    tickgate notices both kinds of death: a *silent* socket (no data, no pings, no pongs — a hung server
    or a black-holed TCP path) fails the client's keepalive ping within ``ping_timeout_s``; a *stalled*
    one (pongs still answered, but no data while the market is open and instruments are subscribed)
    is recycled by the feed watchdog after ``stale_after_s``. Either way the socket is replaced and the
    same instruments tick again."""
    feed: dict[str, float] = (
        {"ping_interval_s": 0.3, "ping_timeout_s": 1.0}  # stale watchdog off (30 s): the ping must do it
        if fault == "silence"
        else {"stale_after_s": 1.0}  # pings flow: the data watchdog must do it
    )
    sim, manager, _groups = await start_feed(make_sim, running, 5, sim={"rate": 8_000.0}, **feed)
    victim_conn = max(range(5), key=lambda c: len(manager.planner.actual()[c]))
    victim = sim_socket_of(manager, sim, victim_conn)
    assert victim is not None
    victim_keys = list(manager.planner.actual()[victim_conn])
    assert victim_keys
    getattr(sim.faults, fault)(victim)  # no end: it stays dead until someone closes it
    assert await manager.wait_until(lambda: not sim.socket(victim).open, WAIT_S), "dead socket unnoticed"
    assert await manager.wait_until(manager.all_up, WAIT_S)
    await converged(manager, sim)
    if fault == "stall":
        assert manager.metrics.stale_recycles >= 1
    else:
        assert manager.metrics.stale_recycles == 0
        assert manager.pool.connections[victim_conn].status.reconnects >= 1
    assert victim not in {r.id for r in sim.open_sockets()}
    await ticks_flow_again(manager, tick_marks(manager, victim_keys), now_ns())
