"""The simulator's account side of tokens: lifetimes on the market clock (807 on live sockets at expiry),
``RenewToken`` and headless generation from PIN + TOTP."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pyotp

from pinned import frozen
from tickgate.clock import IST
from tickgate.dhan.protocol import FeedMode
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator, StaticUniverse
from tickgate.sim.core import TokenBook

from .helpers import FAST, NIFTY_FUT, FeedClient

SECRET = pyotp.random_base32()
PIN = "4321"
START = dt.datetime(2026, 12, 1, 10, 0, tzinfo=IST)


def test_token_book_expires_on_the_clock() -> None:
    book = TokenBook.of({"c1": "t1"})
    book.issue("t2", "c1", expires_at=100.0)
    assert book.due(99.9) == []
    assert book.verify("t2", "c1") is None
    assert book.due(100.0) == ["t2"]
    assert (book.verify("t2", "c1"), book.verify("t1", "c1"), book.verify("t1", "c2")) == (807, None, 810)
    assert book.verify("nope", "c1") == 809


async def test_a_token_expires_on_the_clock_and_renews(universe: StaticUniverse) -> None:
    clock = frozen(START)
    sim = Simulator(universe=universe, clock=clock, token_lifetime_s=3_600.0, **FAST)  # type: ignore[arg-type]
    await sim.start()
    client = await FeedClient.open(sim.feed_url())
    try:
        await client.subscribe(FeedMode.QUOTE, [NIFTY_FUT])
        headers = {"access-token": DEFAULT_TOKEN, "dhanClientId": DEFAULT_CLIENT_ID}
        async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as http:
            clock.advance(1_800.0)
            r = await http.get("/v2/RenewToken", headers=headers)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["dhanClientId"] == DEFAULT_CLIENT_ID
            assert body["expiryTime"] == "2026-12-01T11:30:00"  # an hour of the market clock, in IST
            fresh = body["accessToken"]
            assert fresh != DEFAULT_TOKEN
            clock.advance(1_800.0)  # the old token's hour is up: its live socket gets 807
            for _ in range(100):
                if client.disconnects:
                    break
                await asyncio.sleep(0.02)
            assert client.disconnects == [807]
            r = await http.get("/v2/RenewToken", headers=headers)
            assert (r.status_code, r.json()["errorCode"]) == (401, "DH-901")
            newer = await http.post(
                "/v2/RenewToken", headers={**headers, "access-token": fresh}
            )  # POST too: one client library renews that way
            assert newer.status_code == 200
        again = await FeedClient.open(sim.feed_url(token=fresh))
        await again.subscribe(FeedMode.QUOTE, [NIFTY_FUT])
        await asyncio.sleep(0.2)
        assert again.disconnects == []
        await again.close()
        assert sim.state(subscriptions=False, history=False)["auth"]["renewed"] == 2
    finally:
        await client.close()
        await sim.close()


async def test_a_token_is_refused_the_instant_its_lifetime_is_over(universe: StaticUniverse) -> None:
    """The simulator's sweep of expired tokens runs once a second (real time); a client that acts the
    moment its token's hour is up must be refused all the same, on the socket and on REST, and its live
    socket gets its 807 then too."""
    clock = frozen(START)
    sim = Simulator(universe=universe, clock=clock, token_lifetime_s=3_600.0)  # type: ignore[arg-type]
    await sim.start()
    live = await FeedClient.open(sim.feed_url())
    try:
        headers = {"access-token": DEFAULT_TOKEN, "dhanClientId": DEFAULT_CLIENT_ID}
        async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as http:
            clock.advance(3_600.0)
            r = await http.get("/v2/RenewToken", headers=headers)
            assert (r.status_code, r.json()["errorCode"]) == (401, "DH-901"), r.text
            assert "expired" in r.json()["errorMessage"]
        late = await FeedClient.open(sim.feed_url(DEFAULT_TOKEN))
        await late.wait_closed()
        assert late.disconnects == [807]
        await live.wait_closed()
        assert live.disconnects == [807]
        await late.close()
    finally:
        await live.close()
        await sim.close()


async def test_headless_generation_checks_the_pin_and_the_totp(universe: StaticUniverse) -> None:
    sim = Simulator(universe=universe, logins={DEFAULT_CLIENT_ID: (PIN, SECRET)}, **FAST)  # type: ignore[arg-type]
    await sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as http:

            async def generate(pin: str, totp: str, client: str = DEFAULT_CLIENT_ID) -> httpx.Response:
                params = {"dhanClientId": client, "pin": pin, "totp": totp}
                return await http.post("/app/generateAccessToken", params=params)

            good = pyotp.TOTP(SECRET).now()
            r = await generate(PIN, good)
            assert r.status_code == 200, r.text
            token = r.json()["accessToken"]
            assert sim.tokens.verify(token, DEFAULT_CLIENT_ID) is None
            assert (await generate("0000", good)).status_code == 401
            assert (await generate(PIN, "000000" if good != "000000" else "111111")).status_code == 401
            assert (await generate(PIN, good, client="someone-else")).status_code == 401
            assert (await http.get("/app/generateAccessToken")).status_code == 405
        assert sim.state(subscriptions=False, history=False)["auth"] == {
            "renewed": 0,
            "generated": 1,
            "refused": 4,
        }
    finally:
        await sim.close()


async def test_another_program_on_the_account_takes_the_oldest_socket(universe: StaticUniverse) -> None:
    """Dhan's rule with a foreign program on the same client id: its sockets count and the oldest socket
    goes with 805; the client's reconnect then drops its own next-oldest (the ping-pong a client must not
    feed); when the program's time is up its sockets leave."""
    clock = frozen(START)
    sim = Simulator(universe=universe, clock=clock, **FAST)  # type: ignore[arg-type]
    await sim.start()
    clients = [await FeedClient.open(sim.feed_url()) for _ in range(5)]
    try:
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=sim.http_url, timeout=5) as http:
            r = await http.get("/control/foreign", params={"count": 2, "seconds": 600, "reconnect_s": 0.2})
            assert r.json() == {"ok": True, "foreign": 2}
        await asyncio.sleep(0.2)
        assert [c.disconnects for c in clients[:2]] == [[805], [805]]  # the two oldest
        assert all(c.disconnects == [] for c in clients[2:])
        assert sim.stats.foreign_805s == 2
        back = await FeedClient.open(sim.feed_url())  # the client reconnects: the oldest now is clients[2]
        await asyncio.sleep(0.1)
        assert clients[2].disconnects == [805]
        assert sim.stats.foreign_dropped == 0
        clock.advance(600)  # the foreign program is done
        await asyncio.sleep(0.3)
        assert sim.foreign == {}
        await back.close()
    finally:
        for c in clients:
            await c.close()
        await sim.close()
