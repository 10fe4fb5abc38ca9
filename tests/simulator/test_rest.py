"""Dhan's REST market quote on the simulator: request and response JSON, authentication, 1,000 instruments
a request and one request a second (429 with Dhan's error body beyond it)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tickgate.dhan.protocol import FeedMode
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator, StaticUniverse

from .helpers import NIFTY, NIFTY_FUT, RELIANCE, UNKNOWN, FeedClient, chain_keys

AUTH = {"access-token": DEFAULT_TOKEN, "client-id": DEFAULT_CLIENT_ID}
BODY = {"IDX_I": [NIFTY.security_id], "NSE_FNO": [NIFTY_FUT.security_id], "NSE_EQ": [RELIANCE.security_id]}


async def _post(sim: Simulator, kind: str, body: Any, headers: dict[str, str] = AUTH) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as http:
        return await http.post(f"/v2/marketfeed/{kind}", json=body, headers=headers)


async def _paced() -> None:
    await asyncio.sleep(1.05)  # Dhan's limit is a request a second


async def test_ltp_ohlc_and_quote_speak_dhan_json(sim: Simulator) -> None:
    r = await _post(sim, "ltp", {**BODY, "NSE_EQ": [RELIANCE.security_id, UNKNOWN.security_id]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    assert set(body["data"]) == {"IDX_I", "NSE_FNO", "NSE_EQ"}
    assert list(body["data"]["NSE_EQ"]) == [str(RELIANCE.security_id)]  # an unknown id is left out
    assert body["data"]["IDX_I"][str(NIFTY.security_id)]["last_price"] > 0
    await _paced()
    ohlc = (await _post(sim, "ohlc", BODY)).json()["data"]["NSE_FNO"][str(NIFTY_FUT.security_id)]
    assert set(ohlc) == {"last_price", "ohlc"}
    assert set(ohlc["ohlc"]) == {"open", "close", "high", "low"}
    assert ohlc["ohlc"]["close"] == sim.last_values(NIFTY_FUT)["prev_close"]  # type: ignore[index]
    await _paced()
    quote = (await _post(sim, "quote", BODY)).json()["data"]["NSE_FNO"][str(NIFTY_FUT.security_id)]
    for field in (
        "average_price",
        "buy_quantity",
        "sell_quantity",
        "volume",
        "oi",
        "oi_day_high",
        "net_change",
    ):
        assert field in quote, field
    assert len(quote["depth"]["buy"]) == len(quote["depth"]["sell"]) == 5
    assert quote["depth"]["buy"][0]["price"] < quote["last_price"] < quote["depth"]["sell"][0]["price"]


async def test_a_price_before_the_first_trade(sim: Simulator, universe: StaticUniverse) -> None:
    """A leg nobody subscribed, never traded: the quote still has a last price and a previous close."""
    far = chain_keys(universe, [24_050.0])[24_050.0][1]
    r = await _post(sim, "quote", {"NSE_FNO": [far.security_id]})
    leg = r.json()["data"]["NSE_FNO"][str(far.security_id)]
    assert leg["last_price"] > 0
    assert leg["ohlc"]["close"] > 0
    assert leg["last_trade_time"] == "01/01/1980 00:00:00"


async def test_one_request_a_second_then_429(sim: Simulator) -> None:
    first = await _post(sim, "ltp", BODY)
    second = await _post(sim, "ltp", BODY)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json() == {
        "errorType": "Rate_Limit",
        "errorCode": "DH-904",
        "errorMessage": second.json()["errorMessage"],
    }
    await _paced()
    assert (await _post(sim, "ltp", BODY)).status_code == 200
    stats = sim.state(subscriptions=False, history=False)["rest"]
    assert stats["rate_limited"] == 1
    assert stats["max_per_second"] == 1


async def test_limits_and_refusals(sim: Simulator) -> None:
    too_many = {"NSE_FNO": list(range(1, 1_002))}
    r = await _post(sim, "quote", too_many)
    assert r.status_code == 400
    assert "1001 instruments" in r.json()["errorMessage"]
    assert (
        await _post(sim, "ltp", BODY, {"access-token": "nope", "client-id": DEFAULT_CLIENT_ID})
    ).status_code == 401
    assert (await _post(sim, "ltp", {"NOPE": [1]})).status_code == 400
    assert (await _post(sim, "ltp", {"NSE_EQ": ["x1"]})).status_code == 400
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as http:
        assert (await http.get("/v2/marketfeed/ltp", headers=AUTH)).status_code == 405
        assert (await http.post("/v2/nothing", headers=AUTH)).status_code == 404
    sim.faults.expire_token()
    expired = await _post(sim, "ltp", BODY)
    assert expired.status_code == 401
    assert "expired" in expired.json()["errorMessage"]


async def test_quotes_agree_with_the_feed(sim: Simulator, open_client: Any) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.QUOTE, [NIFTY_FUT])
    await client.wait(lambda: client.packets, what="a packet")
    await asyncio.sleep(0.2)
    sim.set_rate(0)
    await asyncio.sleep(0.1)
    sent = sim.last_values(NIFTY_FUT)
    assert sent is not None
    leg = (await _post(sim, "quote", {"NSE_FNO": [NIFTY_FUT.security_id]})).json()["data"]["NSE_FNO"]
    assert leg[str(NIFTY_FUT.security_id)]["last_price"] == sent["ltp"]
    assert leg[str(NIFTY_FUT.security_id)]["volume"] == sent["volume"]
