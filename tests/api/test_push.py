"""The push channel: subscribe/unsubscribe, coalesced live updates, chains, msgpack, rate limit, drops —
through Starlette's test WebSocket and over a real WebSocket to uvicorn."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import uvicorn
import websockets
from starlette.websockets import WebSocketDisconnect

from tickgate.api import create_app
from tickgate.api.push import PushHub
from tickgate.config import ApiSettings
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import Simulator

from .conftest import PREFIX, Api, api_settings, build_service

pytestmark = pytest.mark.timeout(120)


def tier_b_keys(api: Api, n: int) -> list[str]:
    assert api.service.tier_b is not None
    return [str(k) for k in api.service.tier_b.keys()[:n]]


def receive_quotes(
    ws: Any, want: set[str], timeout: float = 15.0, binary: bool = False
) -> dict[str, dict[str, Any]]:
    """Read messages until every key in ``want`` has had a quote with a price."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = msgpack.unpackb(ws.receive_bytes()) if binary else ws.receive_json()
        if message["type"] != "quotes":
            continue
        keys = [q["key"] for q in message["quotes"]]
        assert len(keys) == len(set(keys)), "an instrument appears twice in one message (not coalesced)"
        for q in message["quotes"]:
            if q["ltp"]:
                seen[q["key"]] = q
        if want <= set(seen):
            return seen
    raise AssertionError(f"no live quotes for {want - set(seen)}")


def test_subscribe_receive_unsubscribe(api: Api) -> None:
    h = api.user("pusher")
    keys = tier_b_keys(api, 4)
    with api.client.websocket_connect(f"{PREFIX}/stream?key={h['X-API-Key']}") as ws:
        ws.send_json({"subscribe": keys})
        ack = ws.receive_json()
        assert ack["type"] == "subscribed"
        assert ack["keys"] == 4
        assert ack["rejected"] == []
        quotes = receive_quotes(ws, set(keys))
        assert all(q["ltp"] > 0 for q in quotes.values())
        ws.send_json({"unsubscribe": keys[1:]})
        # drain until the ack: later quote messages carry only the key still watched
        while (msg := ws.receive_json())["type"] != "subscribed":
            pass
        assert msg["keys"] == 1
        for _ in range(3):
            msg = ws.receive_json()
            if msg["type"] == "quotes":
                assert {q["key"] for q in msg["quotes"]} <= {keys[0]}


def test_header_auth_and_rejections(api: Api) -> None:
    h = api.user("pusher2")
    with api.client.websocket_connect(f"{PREFIX}/stream", headers=h) as ws:
        ws.send_json({"subscribe": ["NSE_EQ:x", "chain:999999", "chain:abc", tier_b_keys(api, 1)[0]]})
        ack = ws.receive_json()
        assert ack["keys"] == 1
        assert {r["item"] for r in ack["rejected"]} == {"NSE_EQ:x", "chain:999999", "chain:abc"}


def test_chain_subscription_follows_watchlist(api: Api) -> None:
    h = api.user("chainpush")
    added = api.client.post(f"{PREFIX}/watchlist", json={"symbol": "SBIN", "strikes": 3}, headers=h).json()
    other = api.user("intruder")
    with api.client.websocket_connect(f"{PREFIX}/stream?key={other['X-API-Key']}") as ws:
        ws.send_json({"subscribe": [added["entry"]["stream_id"]]})
        assert ws.receive_json()["rejected"], "another user's chain must not be streamable"
    with api.client.websocket_connect(f"{PREFIX}/stream?key={h['X-API-Key']}&format=msgpack") as ws:
        ws.send_text(json.dumps({"subscribe": [added["entry"]["stream_id"]]}))
        ack = msgpack.unpackb(ws.receive_bytes())
        assert ack["type"] == "subscribed"
        assert ack["keys"] == 7
        assert ack["items"] == [added["entry"]["stream_id"]]
        quotes = receive_quotes(ws, set(added["keys"][:1]), binary=True, timeout=20)
        assert quotes


def test_chain_analytics_are_pushed_when_recomputed(api: Api) -> None:
    """``analytics:<watchlist id>``: the chain's analytics arrive as they are recomputed, with every leg's
    IV and Greeks; the same rendering reaches every client of that chain (one per recomputation)."""
    h = api.user("greeks")
    added = api.client.post(
        f"{PREFIX}/watchlist", json={"symbol": "RELIANCE", "strikes": 7}, headers=h
    ).json()
    wid = added["entry"]["id"]
    other = api.user("peeker")
    with api.client.websocket_connect(f"{PREFIX}/stream?key={other['X-API-Key']}") as ws:
        ws.send_json({"subscribe": [f"analytics:{wid}"]})
        assert ws.receive_json()["rejected"], "another user's chain analytics must not be streamable"
    with api.client.websocket_connect(f"{PREFIX}/stream?key={h['X-API-Key']}") as ws:
        ws.send_json({"subscribe": [f"analytics:{wid}"]})
        ack = ws.receive_json()
        assert ack["items"] == [f"analytics:{wid}"]
        assert ack["rejected"] == []
        deadline = time.monotonic() + 20
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(got) < 2:
            message = ws.receive_json()
            if message["type"] == "analytics" and message["analytics"]["atm_iv"] is not None:
                got.append(message)
        assert len(got) == 2, "no analytics pushed"
        first, second = got
        assert first["chain"] == wid
        assert second["analytics"]["computed_at_version"] > first["analytics"]["computed_at_version"]
        columns = first["legs"]  # one list per field, in the same order
        legs = {
            key: {name: values[i] for name, values in columns.items()} for i, key in enumerate(columns["key"])
        }
        assert set(legs) == set(added["keys"]) - {k for k in added["keys"] if k.startswith("NSE_EQ")}
        assert first["analytics"]["atm_iv"] == pytest.approx(0.30, abs=0.03)  # the simulator's equity vol
        priced = [leg for leg in legs.values() if leg["reason"] == "OK"]
        assert priced
        assert all(leg["iv"] > 0 and leg["vega"] > 0 for leg in priced)


def test_unauthorized_closes(api: Api) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as info,
        api.client.websocket_connect(f"{PREFIX}/stream?key=wrong") as ws,
    ):
        ws.receive_json()
    assert info.value.code == 4401
    assert "API key" in info.value.reason


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        ("not json", 1008, "not JSON"),
        ('["subscribe"]', 1008, "expected"),
        ('{"subscribe": "NSE_EQ:1"}', 1008, "list of strings"),
        ('{"subscribe": [], "explode": true}', 1008, "expected"),
        (json.dumps({"subscribe": ["NSE_EQ:1"] * 20_000}), 1009, "exceeds"),
    ],
)
def test_malformed_or_oversized_closes_with_reason(api: Api, payload: str, code: int, reason: str) -> None:
    h = api.user(f"bad-{code}-{reason.replace(' ', '')}-{len(payload)}")
    with (  # noqa: PT012 - the close arrives while reading after the send
        pytest.raises(WebSocketDisconnect) as info,
        api.client.websocket_connect(f"{PREFIX}/stream?key={h['X-API-Key']}") as ws,
    ):
        ws.send_text(payload)
        while True:
            ws.receive_json()
    assert info.value.code == code
    assert reason in info.value.reason


def test_too_many_keys_rejected(tmp_path: Path, simulator: Simulator, registry: InstrumentRegistry) -> None:
    from .conftest import running_api

    settings = api_settings(tmp_path, api=ApiSettings(push_max_keys=3, push_max_clients=1))
    with running_api(settings, simulator, registry) as api:
        h = api.user("greedy")
        keys = tier_b_keys(api, 5)
        with api.client.websocket_connect(f"{PREFIX}/stream?key={h['X-API-Key']}") as ws:
            ws.send_json({"subscribe": keys})
            ack = ws.receive_json()
            assert ack["keys"] == 3
            assert len(ack["rejected"]) == 2
            assert "at most 3" in ack["rejected"][0]["reason"]
            with (
                pytest.raises(WebSocketDisconnect) as info,
                api.client.websocket_connect(f"{PREFIX}/stream?key={h['X-API-Key']}") as ws2,
            ):
                ws2.receive_json()
            assert info.value.code == 1013


# -- a real server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, registry: InstrumentRegistry
) -> Iterator[tuple[str, Any]]:
    settings = api_settings(tmp_path_factory.mktemp("live"), api=ApiSettings(push_max_hz=5.0))
    service = build_service(settings, simulator, registry)
    app = create_app(service)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"127.0.0.1:{port}"
    while not service.feed.all_up() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield base, service
    server.should_exit = True
    thread.join(15)


def test_real_websocket_coalesced_at_max_rate(live: tuple[str, Any]) -> None:
    base, service = live
    future = asyncio.run_coroutine_threadsafe(service.store.users.create("realws"), _loop_of(service))
    _user, key = future.result(10)
    keys = [str(k) for k in service.tier_b.keys()]  # noqa: SIM118 - TierBPlan.keys(), not a dict

    async def run() -> tuple[int, float, int, dict[str, float]]:
        async with websockets.connect(f"ws://{base}{PREFIX}/stream?key={key}") as ws:
            await ws.send(json.dumps({"subscribe": keys}))
            ack = json.loads(await ws.recv())
            assert ack["keys"] == len(keys)
            messages, coalesced = 0, 0
            prices: dict[str, float] = {}
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                msg = json.loads(await ws.recv())
                assert msg["type"] == "quotes"
                messages += 1
                coalesced += msg["coalesced"]
                names = [q["key"] for q in msg["quotes"]]
                assert len(names) == len(set(names))
                prices.update({q["key"]: q["ltp"] for q in msg["quotes"] if q["ltp"]})
            return messages, time.monotonic() - started, coalesced, prices

    messages, elapsed, coalesced, prices = asyncio.run(run())
    assert messages <= 5.0 * elapsed + 2, f"{messages} messages in {elapsed:.1f}s breaks the 5 Hz limit"
    assert messages >= 3
    assert coalesced > 0, "4,000 ticks/s over 23 keys at 5 Hz must coalesce"
    assert len(prices) >= len(keys) // 2
    assert all(p > 0 for p in prices.values())


def _loop_of(service: Any) -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = service.feed._tasks[0].get_loop()
    return loop


def test_the_late_half_of_a_tick_comes_after_every_clients_quotes() -> None:
    """Analytics wait for the tick's late half: a client that has them to send goes on only once every
    client woken by the tick has taken its turn, and before the next tick (so nothing skips a tick)."""
    events: list[tuple[str, int]] = []

    async def run() -> None:
        hub = PushHub(max_hz=10.0)  # a late half 50 ms after its tick: no stall of this loop reaches it
        hub.clients = 5

        async def client(i: int) -> None:
            for tick in range(1, 7):  # the tick-th tick this client woke on
                await hub.next_tick()
                events.append(("quotes", tick))
                if i % 2 == 0:  # these have analytics due every tick
                    await hub.late_half()
                    events.append(("analytics", tick))

        await asyncio.gather(*(client(i) for i in range(hub.clients)))
        hub.clients = 0

    asyncio.run(run())
    for tick in range(1, 7):
        order = [kind for kind, t in events if t == tick]
        assert order == ["quotes"] * 5 + ["analytics"] * 3, f"tick {tick}: {order}"
    ticks = [t for _, t in events]
    assert ticks == sorted(ticks), "an analytics send slipped into a later tick"
