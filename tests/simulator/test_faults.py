"""Fault injection, through the Python API and through the HTTP control API a chaos test would use."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from tickgate.dhan.protocol import FeedMode, Quote, Ticker
from tickgate.sim import Simulator

from .helpers import FAST, HDFCBANK, NIFTY, NIFTY_FUT, RELIANCE, FeedClient


async def streaming_client(sim: Simulator, open_client, mode: FeedMode = FeedMode.TICKER) -> FeedClient:
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(mode, [NIFTY, RELIANCE, HDFCBANK])
    await client.wait(lambda: len(client.packets) > 20, what="data flowing")
    return client


async def control(sim: Simulator, action: str, **params: object) -> dict:
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=5) as http:
        response = await http.get(f"/control/{action}", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("ok", True) is True
    return body


# ------------------------------------------------------------------------------------- socket faults


@pytest.mark.parametrize("via", ["python", "http"])
async def test_drop_aborts_tcp_without_close_frame(sim: Simulator, open_client, via: str) -> None:
    client = await streaming_client(sim, open_client)
    if via == "python":
        assert sim.faults.drop(1) == [1]
    else:
        assert (await control(sim, "drop", socket=1))["sockets"] == [1]
    await client.wait_closed()
    assert client.close_exc is not None
    assert client.close_exc.rcvd is None  # no close frame: an abrupt TCP close
    assert client.disconnects == []
    await sim.wait_for(lambda: not sim.socket(1).open)
    assert sim.socket(1).close_reason == "dropped"
    assert sim.socket(1).close_code == 1006
    assert sim.faults.log[-1]["kind"] == "drop"


@pytest.mark.parametrize("via", ["python", "http"])
async def test_a_fault_can_target_one_account_of_several(sim: Simulator, open_client, via: str) -> None:
    """``<client id>/<selector>``: one account's sockets only (issue 19: each account its own faults)."""
    sim.faults.set_token("second-account-token", "2200000002")
    first = await streaming_client(sim, open_client)
    other: FeedClient = await open_client(sim.feed_url(token="second-account-token", client_id="2200000002"))
    await other.subscribe(FeedMode.TICKER, [NIFTY])
    await other.wait(lambda: len(other.packets) > 5, what="the second account's data")
    mine = [r.id for r in sim.open_sockets("2200000002")]
    assert len(mine) == 1
    if via == "python":
        assert sim.faults.disconnect("2200000002/all", 807) == mine
    else:
        assert (await control(sim, "disconnect", socket="2200000002/random", code=807))["sockets"] == mine
    await other.wait_closed()
    assert other.disconnects == [807]
    assert first.disconnects == []
    assert [r.client_id for r in sim.open_sockets()] == [sim.client_id]
    assert not sim.open_sockets("2200000002")


@pytest.mark.parametrize("via", ["python", "http"])
async def test_disconnect_code_then_close(sim: Simulator, open_client, via: str) -> None:
    first = await streaming_client(sim, open_client)
    second = await streaming_client(sim, open_client)
    if via == "python":
        assert sim.faults.disconnect("oldest", 800) == [1]
    else:
        assert (await control(sim, "disconnect", socket="oldest", code=800))["sockets"] == [1]
    await first.wait_closed()
    assert first.disconnects == [800]
    assert first.close_exc is None or first.close_exc.rcvd is not None
    assert not second.closed.is_set()
    assert sim.socket(1).close_reason == "disconnect:800"


@pytest.mark.parametrize("mode", ["garble", "truncate", "mixed"])
async def test_corrupt_percentage_of_frames(sim: Simulator, open_client, mode: str) -> None:
    client = await streaming_client(sim, open_client, FeedMode.QUOTE)
    sim.faults.corrupt(25, mode)  # type: ignore[arg-type]
    start_frames, start_corrupt = len(client.frames), client.stats.corrupt_frames
    await client.wait(lambda: len(client.frames) > start_frames + 2_000)
    sim.set_rate(0)
    sim.faults.corrupt(0)
    await asyncio.sleep(0.1)
    frames = len(client.frames) - start_frames
    corrupt = client.stats.corrupt_frames - start_corrupt
    assert 0.18 < corrupt / frames < 0.32
    assert corrupt == sim.open_sockets()[0].corrupt_frames  # what the server says it damaged
    assert sim.stats.corrupt_frames == corrupt


async def test_corrupt_everything_in_stacked_frames(universe, open_client) -> None:
    options = {**FAST, "rate": 4_000, "stack": 10, "corrupt_pct": 100}
    async with Simulator(universe=universe, **options) as sim:  # type: ignore[arg-type]
        client: FeedClient = await open_client(sim.feed_url())
        await client.subscribe(FeedMode.QUOTE, [NIFTY, RELIANCE, HDFCBANK])
        await client.wait(lambda: len(client.frames) > 200)
        sim.set_rate(0)
        await asyncio.sleep(0.05)
        assert client.stats.corrupt_frames == len(client.frames)  # PrevClose frames included
        assert client.stats.corrupt_frames == sim.stats.corrupt_frames


@pytest.mark.parametrize("via", ["python", "http"])
async def test_stall_stops_data_but_not_pings(sim: Simulator, open_client, via: str) -> None:
    client = await streaming_client(sim, open_client)
    if via == "python":
        sim.faults.stall(1)
    else:
        await control(sim, "stall", socket=1)
    await asyncio.sleep(0.05)  # frames already in flight
    record = sim.open_sockets()[0]
    frames, pings, pongs = len(client.frames), record.pings_sent, record.pongs_received
    await asyncio.sleep(0.5)
    assert len(client.frames) == frames
    assert record.stalled
    assert record.packets_withheld > 0
    assert record.pings_sent >= pings + 3
    assert record.pongs_received >= pongs + 3
    if via == "python":
        sim.faults.resume(1)
    else:
        await control(sim, "resume", socket="all")
    await client.wait(lambda: len(client.frames) > frames + 50, what="data after resume")
    assert not client.closed.is_set()


async def test_stall_for_a_while_resumes_by_itself(sim: Simulator, open_client) -> None:
    client = await streaming_client(sim, open_client)
    sim.faults.stall("all", seconds=0.3)
    await asyncio.sleep(0.05)
    frames = len(client.frames)
    await asyncio.sleep(0.15)
    assert len(client.frames) == frames
    await client.wait(lambda: len(client.frames) > frames + 50, what="automatic resume")


@pytest.mark.parametrize("via", ["python", "http"])
async def test_silent_socket_sends_nothing_and_answers_nothing(universe, open_client, via: str) -> None:
    # A long server ping timeout: the silent socket must survive on the server side (the client decides).
    async with Simulator(
        universe=universe, rate=2_000, ping_interval=0.1, ping_timeout=5, close_timeout=1
    ) as sim:
        client = await streaming_client(sim, open_client)
        if via == "python":
            sim.faults.silence(1)
        else:
            await control(sim, "silence", socket=1)
        await asyncio.sleep(0.05)
        record = sim.open_sockets()[0]
        frames, pings = len(client.frames), record.pings_sent
        pong = await client.ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pong), 0.5)  # the server does not answer our ping
        assert len(client.frames) == frames  # no data
        assert record.pings_sent == pings  # and no pings of its own
        assert record.silent
        await client.subscribe(FeedMode.QUOTE, [NIFTY_FUT])  # requests are still read and recorded
        await sim.wait_for(lambda: NIFTY_FUT in sim.view()[1])
        sim.faults.resume(1)
        await client.wait(lambda: len(client.frames) > frames + 50, what="data after silence")
        await asyncio.wait_for(client.ws.ping(), 2)  # pings answered again


async def test_client_leaving_a_silent_socket_is_noticed(sim: Simulator, open_client) -> None:
    client = await streaming_client(sim, open_client)
    sim.faults.silence(1)
    await client.close()  # the close handshake gets no answer; the client aborts after its timeout
    await sim.wait_for(lambda: sim.open_sockets() == [], timeout=3, message="socket not counted")
    await sim.wait_for(lambda: not sim.socket(1).open, timeout=3, message="socket closed")
    assert sim.socket(1).close_reason == "client_closed"


# --------------------------------------------------------------------------------- connection faults


@pytest.mark.parametrize("via", ["python", "http"])
async def test_refuse_new_connections_with_503_for_a_while(sim: Simulator, open_client, via: str) -> None:
    existing = await streaming_client(sim, open_client)
    if via == "python":
        sim.faults.refuse(0.4)
    else:
        assert (await control(sim, "refuse", seconds=0.4))["refusing_for"] > 0
    with pytest.raises(InvalidStatus) as info:
        await connect(sim.feed_url(), open_timeout=2)
    assert info.value.response.status_code == 503
    assert sim.stats.refused == 1
    assert not existing.closed.is_set()
    await control(sim, "state")  # control still answers while refusing
    await asyncio.sleep(0.45)
    again: FeedClient = await open_client(sim.feed_url())
    await sim.wait_for(lambda: len(sim.open_sockets()) == 2)
    assert not again.closed.is_set()


async def test_refuse_by_closing_the_tcp_connection(sim: Simulator) -> None:
    sim.faults.refuse(5, mode="close")
    with pytest.raises((InvalidMessage, ConnectionError, EOFError)):
        await connect(sim.feed_url(), open_timeout=2)
    sim.faults.refuse(0)
    async with connect(sim.feed_url(), open_timeout=2):
        await sim.wait_for(lambda: len(sim.open_sockets()) == 1)


@pytest.mark.parametrize("via", ["python", "http"])
async def test_expired_token_then_rollover(sim: Simulator, open_client, via: str) -> None:
    old = sim.feed_url()
    first = await streaming_client(sim, open_client)
    second = await streaming_client(sim, open_client)
    if via == "python":
        assert sim.faults.expire_token() == [1, 2]
    else:
        assert (await control(sim, "expire_token"))["sockets"] == [1, 2]
    await first.wait_closed()
    await second.wait_closed()
    assert first.disconnects == [807]
    assert second.disconnects == [807]

    refused: FeedClient = await open_client(old)
    await refused.wait_closed()
    assert refused.disconnects == [807]  # until a new token is issued

    if via == "python":
        sim.faults.set_token("token-of-tomorrow")
    else:
        await control(sim, "set_token", token="token-of-tomorrow")
    fresh: FeedClient = await open_client(sim.feed_url(token="token-of-tomorrow"))
    await fresh.subscribe(FeedMode.TICKER, [NIFTY])
    await fresh.wait(lambda: len(fresh.of(Ticker)) > 5)
    stale: FeedClient = await open_client(old)
    await stale.wait_closed()
    assert stale.disconnects == [807]  # the expired token stays expired
    assert sim.stats.auth_failures[807] == 2
    assert [f["kind"] for f in sim.faults.log] == ["expire_token", "set_token"]


# ------------------------------------------------------------------------------------- control API


async def test_control_state_view_rate_and_errors(sim: Simulator, open_client) -> None:
    client = await streaming_client(sim, open_client, FeedMode.QUOTE)
    state = await control(sim, "state")
    assert state["sockets"]["1"]["subscriptions"] == {
        "IDX_I:13": "QUOTE",
        "NSE_EQ:2885": "QUOTE",
        "NSE_EQ:1333": "QUOTE",
    }
    assert state["max_sockets_per_client"] == {"1100000001": 1}
    assert state["breaches"] == []
    assert state["config"]["limits"] == {
        "sockets_per_account": 5,
        "instruments_per_socket": 5000,
        "instruments_per_message": 100,
        "quote_instruments_per_request": 1000,
        "quote_requests_per_second": 1.0,
        "reserved_sockets": 0,
    }
    light = await control(sim, "state", subs=0, history=0)
    assert "subscriptions" not in light["sockets"]["1"]
    assert light["history"] == []
    assert (await control(sim, "view"))["view"] == {"1": state["sockets"]["1"]["subscriptions"]}
    journal = await control(sim, "journal", since=0)
    assert journal["entries"][0]["keys"] == ["IDX_I:13", "NSE_EQ:2885", "NSE_EQ:1333"]
    assert (await control(sim, "journal", since=journal["seq"]))["entries"] == []

    assert (await control(sim, "rate", pps=0, stack=5)) == {"ok": True, "rate": 0.0, "stack": 5}
    await asyncio.sleep(0.05)
    quote = await control(sim, "quote", key="NSE_EQ:2885")
    last = [p for p in client.of(Quote) if p.security_id == 2885][-1]
    assert quote["values"]["ltp"] == last.ltp
    assert quote["values"]["volume"] == last.volume

    nifty = sim.model.underlying_price("NIFTY")
    moved = await control(sim, "price", symbol="NIFTY", price=nifty + 100)
    assert moved["price"] == nifty + 100

    async with httpx.AsyncClient(base_url=sim.http_url) as http:
        assert (await http.get("/control/nonsense")).status_code == 404
        bad = await http.get("/control/corrupt", params={"pct": 150})
        assert bad.status_code == 400
        assert "0..100" in bad.json()["error"]
        assert (await http.get("/control/disconnect", params={"socket": "sideways"})).status_code == 400
        assert (await http.get("/control/set_token")).status_code == 400


async def test_inject_raw_frame(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await sim.wait_for(sim.open_sockets)
    await control(sim, "inject", socket="newest", hex="0008000000000000")  # a heartbeat (code 0)
    await client.wait(lambda: client.frames)
    assert client.frames == [bytes.fromhex("0008000000000000")]
    assert client.stats.skipped[0] == 1
