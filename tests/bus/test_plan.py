"""The plan digest a gateway publishes for its replicas (tickgate.bus.plan): what it carries survives the
trip exactly, a replica's mirror answers the API's reads from it, newer digests win (a new gateway's
always), windows are rebuilt only when they moved and exactly where the gateway centred them."""

from __future__ import annotations

import dataclasses
import zlib

import pytest

import pinned
from tickgate.bus.plan import (
    HEARTBEAT,
    PlanFollower,
    PlanMirror,
    WindowSpec,
    decode_digest,
    encode_digest,
    rebuild_window,
)
from tickgate.chains.atm import AtmEngine, ChainWindow
from tickgate.config import FeedLimits, Settings
from tickgate.dhan.protocol import FeedMode
from tickgate.instruments import InstrumentRegistry
from tickgate.planner import Planner, Tier


@pytest.fixture
def engine(registry: InstrumentRegistry) -> AtmEngine:
    return AtmEngine(registry, Settings().chains)


def gateway_plan(engine: AtmEngine) -> tuple[Planner, dict[str, ChainWindow]]:
    """A planner with a Tier B chain, two users' chains (one pinned), on two accounts."""
    planner = Planner(FeedLimits(), accounts=[5, 5])
    planner.connections_up(range(10))
    windows: dict[str, ChainWindow] = {}
    for gid, symbol, strikes in (("b:NIFTY", "NIFTY", 21), ("u1:INFY", "INFY", 9), ("u2:TCS", "TCS", 5)):
        expiry = engine.registry.option_expiries(symbol)[0]
        w = engine.window(symbol, expiry, strikes, today=pinned.TODAY, quotes=lambda _k: None)
        tier = Tier.B if gid.startswith("b:") else Tier.A
        planner.add_group(gid, tier, w.keys(), FeedMode.QUOTE, gid.split(":")[0], 1.0, gid == "u2:TCS")
        windows[gid] = w
    return planner, windows


def test_a_digest_carries_the_gateway_s_answers_exactly(engine: AtmEngine) -> None:
    planner, windows = gateway_plan(engine)
    digest = decode_digest(encode_digest(planner, windows.get, "boot1", 7, "master-x.csv"))
    assert (digest.boot, digest.number, digest.master) == ("boot1", 7, "master-x.csv")
    assert list(digest.groups.values()) == planner.groups()
    assert digest.capacity == planner.plan_capacity()
    assert set(digest.keys) == {"u1:INFY", "u2:TCS"}, "keys of Tier A chains only (what push clients watch)"
    for gid in digest.keys:
        assert digest.keys[gid] == planner.group_keys(gid)
    w = windows["u1:INFY"]
    assert digest.windows["u1:INFY"] == WindowSpec("INFY", w.exchange, w.expiry.date, 9, w.ltp)


def test_the_mirror_answers_the_api_s_reads_and_queues_uses(engine: AtmEngine) -> None:
    planner, windows = gateway_plan(engine)
    mirror = PlanMirror(FeedLimits())
    assert not mirror.has_group("u1:INFY")
    assert mirror.group_keys("u1:INFY") == ()
    mirror.digest = decode_digest(encode_digest(planner, windows.get, "b", 1))
    assert mirror.has_group("u1:INFY")
    assert mirror.group("u2:TCS") == planner.group("u2:TCS")
    assert mirror.group("u2:TCS").pinned
    assert mirror.group_keys("u1:INFY") == planner.group_keys("u1:INFY")
    assert mirror.plan_capacity() == planner.plan_capacity()
    assert mirror.groups() == planner.groups()
    with pytest.raises(KeyError):
        mirror.group("nobody:X")
    assert mirror.touch("u1:INFY", 5.0).accepted
    assert mirror.touched == {"u1:INFY": 5.0}
    assert mirror.group("u1:INFY").last_used == planner.group("u1:INFY").last_used, "uses go to the gateway"


def test_newer_digests_win_and_a_new_gateway_always_does(engine: AtmEngine) -> None:
    planner, windows = gateway_plan(engine)
    mirror = PlanMirror(FeedLimits())
    rebuilt: list[str] = []
    forgotten: list[str] = []
    follower = PlanFollower(mirror, None, lambda g, _s: rebuilt.append(g), forgotten.append)
    follower.apply(encode_digest(planner, windows.get, "old", 5))
    assert sorted(rebuilt) == ["u1:INFY", "u2:TCS"], "windows of users' chains (what the API reads)"
    follower.apply(encode_digest(planner, windows.get, "old", 6))
    assert len(rebuilt) == 2, "an unchanged window is not rebuilt"
    planner.remove_group("u1:INFY")
    follower.apply(encode_digest(planner, windows.get, "old", 4))  # older than what is held: ignored
    assert mirror.has_group("u1:INFY")
    follower.apply(encode_digest(planner, windows.get, "new", 1))  # a new gateway: its first digest wins
    assert not mirror.has_group("u1:INFY")
    assert forgotten == ["u1:INFY"]
    assert mirror.digest is not None
    assert (mirror.digest.boot, mirror.digest.number) == ("new", 1)
    follower.apply(b"not a digest")
    assert follower.unreadable == 1
    assert mirror.digest.boot == "new"


@dataclasses.dataclass(frozen=True)
class Live:
    ltp: float | None
    prev_close: float | None = None


def test_a_heartbeat_says_the_gateway_lives_and_which_digest_to_hold(engine: AtmEngine) -> None:
    planner, windows = gateway_plan(engine)
    mirror = PlanMirror(FeedLimits())
    follower = PlanFollower(mirror, None, lambda _g, _s: None, lambda _g: None)
    assert follower.heard(HEARTBEAT + b'["b1", 3]'), "nothing held: ask"
    assert follower.received_at > 0
    follower.apply(encode_digest(planner, windows.get, "b1", 3))
    assert not follower.heard(HEARTBEAT + b'["b1", 3]'), "held: nothing to ask"
    assert follower.heard(HEARTBEAT + b'["b1", 4]'), "a digest missed"
    assert follower.heard(HEARTBEAT + b'["b2", 1]'), "a new gateway"
    assert not follower.heard(HEARTBEAT + b"garbage")
    assert follower.unreadable == 1


def test_a_replica_rebuilds_the_gateway_s_window_not_one_around_its_own_price(engine: AtmEngine) -> None:
    """The gateway centred INFY's window on one price; the replica's live price has moved since (the
    gateway's hysteresis had not followed yet): the replica's window is still the gateway's."""
    expiry = engine.registry.option_expiries("INFY")[0]
    placed = engine.window("INFY", expiry, 9, today=pinned.TODAY, quotes=lambda _k: None)
    moved = {placed.underlying.key: Live(placed.ltp * 1.2)}
    replica = AtmEngine(engine.registry, Settings().chains, quotes=moved.get)
    spec = WindowSpec("INFY", placed.exchange, placed.expiry.date, 9, placed.ltp)
    assert replica.window("INFY", expiry, 9, today=pinned.TODAY).keys() != placed.keys(), "the price did move"
    assert rebuild_window(replica, spec, pinned.TODAY).keys() == placed.keys()


def test_an_unreadable_digest_says_so() -> None:
    with pytest.raises(ValueError, match="not a plan digest"):
        decode_digest(b"\x78\x9c garbage")
    with pytest.raises(ValueError, match="not a plan digest"):
        decode_digest(zlib.compress(b'{"boot": "b"}'))
