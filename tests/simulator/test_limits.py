"""Dhan's limits as the simulator enforces and records them (the chaos suite relies on these records)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pinned
from tickgate.clock import IST
from tickgate.config import FeedLimits
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey, PrevClose
from tickgate.sim import Simulator, StaticUniverse

from .helpers import FAST, NIFTY, REAL_LIMITS, RELIANCE, FeedClient


def equities(n: int, first: int = 100_000) -> tuple[StaticUniverse, list[InstrumentKey]]:
    universe = StaticUniverse()
    keys = [
        universe.add_spot(InstrumentKey(ExchangeSegment.NSE_EQ, first + i), f"STOCK{i}", 100.0 + i % 50)
        for i in range(n)
    ]
    return universe, keys


async def test_sixth_socket_disconnects_the_oldest_with_805(sim: Simulator, open_client) -> None:
    assert sim.limits.sockets_per_account == 5  # the real limit
    clients: list[FeedClient] = []
    for _ in range(5):
        clients.append(await open_client(sim.feed_url()))
        await sim.wait_for(lambda: len(sim.open_sockets()) == len(clients))
    await clients[0].subscribe(FeedMode.TICKER, [NIFTY])
    await sim.wait_for(lambda: sim.open_sockets()[0].subscriptions)
    assert sim.breaches == []

    sixth = await open_client(sim.feed_url())
    await clients[0].wait_closed()
    assert clients[0].disconnects == [805]
    assert all(not c.closed.is_set() for c in [*clients[1:], sixth])
    assert len(sim.open_sockets()) == 5
    oldest = sim.socket(1)
    await sim.wait_for(lambda: not oldest.open, message="server-side close")
    assert oldest.close_reason == "disconnect:805"
    assert oldest.disconnect_code == 805
    assert oldest.final_subscriptions == 1
    assert sim.stats.max_sockets_per_client == {"1100000001": 6}
    [breach] = sim.breaches
    assert (breach.kind, breach.value, breach.limit, breach.socket_id) == ("sockets_per_account", 6, 5, 6)
    assert 1 not in sim.view()


async def test_sockets_are_counted_per_client_id(universe, open_client) -> None:
    limits = FeedLimits(sockets_per_account=1)
    creds = {"A": "token-a", "B": "token-b"}
    async with Simulator(universe=universe, credentials=creds, limits=limits, **FAST) as sim:
        a = await open_client(sim.feed_url("token-a", "A"))
        b = await open_client(sim.feed_url("token-b", "B"))
        await sim.wait_for(lambda: len(sim.open_sockets()) == 2)
        assert sim.breaches == []
        a2 = await open_client(sim.feed_url("token-a", "A"))
        await a.wait_closed()
        assert a.disconnects == [805]
        assert not b.closed.is_set()
        assert not a2.closed.is_set()
        assert sim.stats.max_sockets_per_client == {"A": 2, "B": 1}


async def test_another_program_s_time_is_up_at_its_instant_not_at_the_next_watchdog_tick(
    universe, open_client
) -> None:
    """A foreign program lives ``seconds`` of the market clock: a socket opened the moment it is over must
    not be counted against it (the watchdog's once-a-second sweep has not run yet; CI met exactly that)."""
    clock = pinned.frozen(dt.datetime.combine(pinned.TODAY, dt.time(10, 0), IST))
    async with Simulator(universe=universe, clock=clock, limits=REAL_LIMITS) as sim:  # type: ignore[arg-type]
        own = []
        for _ in range(4):
            own.append(await open_client(sim.feed_url()))
            await sim.wait_for(lambda: len(sim.open_sockets()) == len(own))
        sim.add_foreign(sim.client_id, 1, seconds=60.0)
        clock.advance(60.0)
        own.append(await open_client(sim.feed_url()))
        await sim.wait_for(lambda: len(sim.open_sockets()) == 5)
        await asyncio.sleep(0.3)
        assert [c.disconnects for c in own] == [[]] * 5
        assert sim.stats.foreign_805s == sim.stats.foreign_dropped == 0
        assert sim.foreign == {}


async def test_101_instruments_in_one_message_gets_804_and_close(sim: Simulator, open_client) -> None:
    universe, keys = equities(101)
    sim.universe = universe
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.TICKER, keys[:100], per_message=100)  # exactly the limit: fine
    await sim.wait_for(lambda: sum(map(len, sim.view().values())) == 100)
    await client.subscribe(FeedMode.TICKER, keys, per_message=101)
    await client.wait_closed()
    assert client.disconnects == [804]
    [breach] = sim.breaches
    assert (breach.kind, breach.value, breach.limit) == ("instruments_per_message", 101, 100)
    assert sim.stats.max_instruments_per_message == 101
    assert sim.history[-1].close_reason == "disconnect:804"
    assert sim.view() == {}


async def test_small_limits_from_the_constructor(open_client) -> None:
    universe, keys = equities(12)
    limits = FeedLimits(sockets_per_account=2, instruments_per_socket=10, instruments_per_message=4)
    async with Simulator(universe=universe, limits=limits, rate=0, **FAST) as sim:
        client: FeedClient = await open_client(sim.feed_url())
        await client.subscribe(FeedMode.QUOTE, keys[:10], per_message=4)  # 4 + 4 + 2 = 10: at the limit
        await sim.wait_for(lambda: sum(map(len, sim.view().values())) == 10)
        await client.unsubscribe(FeedMode.QUOTE, keys[:1])
        await client.subscribe(FeedMode.QUOTE, keys[10:11], per_message=4)  # back to 10: fine
        await sim.wait_for(lambda: keys[10] in next(iter(sim.view().values())))
        assert sim.breaches == []
        await client.subscribe(FeedMode.QUOTE, keys[11:12], per_message=4)  # 11 > 10
        await client.wait_closed()
        assert client.disconnects == [804]
        [breach] = sim.breaches
        assert (breach.kind, breach.value, breach.limit) == ("instruments_per_socket", 11, 10)
        assert sim.stats.max_instruments_per_socket == 11

        other: FeedClient = await open_client(sim.feed_url())
        await other.subscribe(FeedMode.QUOTE, keys[:5], per_message=5)
        await other.wait_closed()
        assert other.disconnects == [804]
        assert [b.kind for b in sim.breaches] == ["instruments_per_socket", "instruments_per_message"]


async def test_real_limit_of_5000_instruments_per_socket(open_client) -> None:
    universe, keys = equities(5_001)
    async with Simulator(universe=universe, limits=REAL_LIMITS, rate=0, **FAST) as sim:
        client: FeedClient = await open_client(sim.feed_url())
        await client.subscribe(FeedMode.TICKER, keys[:5_000])
        await sim.wait_for(lambda: sum(map(len, sim.view().values())) == 5_000, timeout=10)
        await client.wait(lambda: len(client.of(PrevClose)) == 5_000)
        assert sim.breaches == []
        await client.subscribe(FeedMode.TICKER, keys[5_000:])
        await client.wait_closed()
        assert client.disconnects == [804]
        assert [(b.kind, b.value, b.limit) for b in sim.breaches] == [
            ("instruments_per_socket", 5_001, 5_000)
        ]
        assert sim.stats.max_instruments_per_socket == 5_001
        assert sim.history[-1].messages == 51


async def test_disconnect_request_drops_subscriptions_and_closes(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.QUOTE, [NIFTY, RELIANCE])
    await sim.wait_for(sim.view)
    await client.send_disconnect()
    await client.wait_closed()
    assert client.close_exc is None or client.close_exc.rcvd is not None  # a clean close, no packet
    assert client.disconnects == []
    record = sim.history[-1]
    await sim.wait_for(lambda: not record.open)
    assert record.close_reason == "client_request"
    assert record.final_subscriptions == 2
    assert record.subscriptions == {}
    assert sim.view() == {}
    assert sim.journal_json()[-1]["op"] == "close"


async def test_malformed_requests_are_counted_and_ignored(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    for bad in ["not json", json.dumps({"RequestCode": 99}), json.dumps({"RequestCode": 15})]:
        await client.ws.send(bad)
    await client.ws.send(b"\x00binary")
    await client.subscribe(FeedMode.TICKER, [NIFTY])
    await sim.wait_for(lambda: sim.view() and NIFTY in next(iter(sim.view().values())))
    record = sim.open_sockets()[0]
    assert record.malformed == 4
    assert sim.stats.malformed == 4
    assert record.last_error == "binary frame from client"
    assert not client.closed.is_set()


async def test_strict_mode_answers_malformed_requests_with_814(universe, open_client) -> None:
    async with Simulator(universe=universe, strict_requests=True, **FAST) as sim:
        client: FeedClient = await open_client(sim.feed_url())
        await client.ws.send('{"RequestCode": 15, "InstrumentList": [{"ExchangeSegment": "NOPE"}]}')
        await client.wait_closed()
        assert client.disconnects == [814]


async def test_client_that_stops_answering_pings_is_closed(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await sim.wait_for(sim.open_sockets)
    sim.set_rate(0)
    client.ws.transport.pause_reading()  # our pings are never read, so never answered
    await asyncio.sleep(sim.ping_timeout + 0.5)
    record = sim.socket(1)
    assert record.close_reason == "keepalive_timeout"
    assert sim.open_sockets() == []
