"""Token lifecycle against the simulator's account side: renewal ahead of expiry on the clock, headless
generation when renewal fails, the 0600 token file a restart prefers, an operator's token, and no secret in
any status or log line."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import stat
from pathlib import Path

import pyotp
import pytest

from pinned import frozen
from tickgate.clock import IST, ManualClock
from tickgate.dhan.tokens import (
    TOKEN_FILE,
    TokenError,
    TokenFile,
    TokenManager,
    TokenRecord,
    jwt_expiry,
    parse_token_answer,
    renew_at,
)
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator, StaticUniverse

START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=IST)


@pytest.fixture
def universe() -> StaticUniverse:
    return StaticUniverse.sample(START.date())


PIN = "2468"
SECRET = pyotp.random_base32()


def _jwt(exp: float) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'typ': 'JWT'})}.{part({'exp': exp, 'dhanClientId': '1'})}.c2ln"


def test_expiry_from_the_answer_else_the_jwt() -> None:
    token = _jwt(1_800_000_000)
    assert jwt_expiry(token) == dt.datetime.fromtimestamp(1_800_000_000, dt.UTC)
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.b!.c") is None
    got, expiry = parse_token_answer({"accessToken": "t", "expiryTime": "2026-12-02T09:00:00"})
    assert (got, expiry) == ("t", dt.datetime(2026, 12, 2, 9, 0, tzinfo=IST))
    assert parse_token_answer({"data": {"token": token}}) == (token, jwt_expiry(token))
    with pytest.raises(TokenError, match="without an access token"):
        parse_token_answer({"status": "failure"})
    assert renew_at(None, 60) is None
    assert renew_at(START, 60) == START - dt.timedelta(minutes=1)


def test_the_token_file_is_the_owner_s_only(tmp_path: Path) -> None:
    f = TokenFile(tmp_path / "sub" / TOKEN_FILE)
    record = TokenRecord("c", "secret-token", START, START, "renewed", "abc")
    f.save(record)
    assert stat.S_IMODE(f.path.stat().st_mode) == 0o600
    f.path.chmod(0o644)
    f.save(record)  # rewritten: back to 0600
    assert stat.S_IMODE(f.path.stat().st_mode) == 0o600
    loaded = f.load()
    assert loaded is not None
    assert (loaded.token, loaded.expires_at, loaded.replaces, loaded.source) == (
        "secret-token",
        START,
        "abc",
        "file",
    )
    f.path.write_text("{broken")
    assert f.load() is None


async def _sim(universe: StaticUniverse, clock: ManualClock) -> Simulator:
    sim = Simulator(
        universe=universe,
        clock=clock,
        token_lifetime_s=86_400.0,
        logins={DEFAULT_CLIENT_ID: (PIN, SECRET)},
        ping_interval=0.1,
        ping_timeout=1.0,
    )
    await sim.start()
    return sim


def _manager(
    sim: Simulator, clock: ManualClock, data: Path, token: str = DEFAULT_TOKEN, **kw: object
) -> TokenManager:
    return TokenManager(
        DEFAULT_CLIENT_ID,
        token,
        clock=clock,
        data_dir=data,
        rest_url=sim.rest_url,
        auth_url=sim.rest_url,
        renew_margin_s=3_600.0,
        retry_s=0.05,
        **kw,  # type: ignore[arg-type]
    )


async def _until(condition: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_renews_ahead_of_expiry_on_the_clock(
    universe: StaticUniverse, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = frozen(START)
    sim = await _sim(universe, clock)
    seen: list[str] = []
    manager = _manager(sim, clock, tmp_path)
    manager.on_change(lambda c: seen.append(c.fingerprint))
    try:
        manager.start()  # the environment's token has no known expiry: renewed at once to learn it
        await _until(lambda: manager.stats.renewals == 1)
        first = manager.credentials().access_token
        assert first != DEFAULT_TOKEN
        assert manager.status()["expires_at"] == "2026-12-02T09:00:00+05:30"
        assert sim.tokens.verify(first, DEFAULT_CLIENT_ID) is None
        clock.advance(22 * 3_600.0)  # 23 h in: not yet due (an hour's margin before 09:00 tomorrow)
        await asyncio.sleep(0.2)
        assert manager.stats.renewals == 1
        clock.advance(3_600.0)
        await _until(lambda: manager.stats.renewals == 2)
        assert manager.credentials().access_token not in (first, DEFAULT_TOKEN)
        assert len(seen) == 2
        saved = TokenFile(tmp_path / TOKEN_FILE).load()
        assert saved is not None
        assert saved.token == manager.credentials().access_token
    finally:
        await manager.stop()
        await sim.close()
    text = json.dumps(manager.status()) + caplog.text
    for secret in (DEFAULT_TOKEN, first, saved.token, PIN, SECRET):
        assert secret not in text


async def test_falls_back_to_totp_generation_and_a_restart_prefers_the_file(
    universe: StaticUniverse, tmp_path: Path
) -> None:
    clock = frozen(START)
    sim = await _sim(universe, clock)
    sim.tokens.expire(DEFAULT_CLIENT_ID)  # the environment's token died overnight: renewal is refused
    plain = _manager(sim, clock, tmp_path / "plain")
    with pytest.raises(TokenError, match="401"):
        await plain.refresh()
    manager = _manager(sim, clock, tmp_path, pin=PIN, totp_secret=SECRET)
    try:
        manager.start()
        await _until(lambda: manager.stats.generations == 1)
        generated = manager.credentials().access_token
        assert manager.status()["source"] == "generated"
        assert sim.state(subscriptions=False, history=False)["auth"]["generated"] == 1
    finally:
        await manager.stop()
    again = _manager(sim, clock, tmp_path)  # a restart, the same stale token in the environment
    assert again.credentials().access_token == generated
    assert again.status()["source"] == "file"
    operator = _manager(sim, clock, tmp_path, token="a-new-token-from-the-operator")
    assert operator.credentials().access_token == "a-new-token-from-the-operator"  # a different env wins
    assert operator.set_token("  set-at-runtime ").access_token == "set-at-runtime"
    assert TokenFile(tmp_path / TOKEN_FILE).load().token == "set-at-runtime"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="empty"):
        operator.set_token(" ")
    await sim.close()
