"""The service's Dhan token at runtime: renewed through the REST side at start when its expiry is unknown,
set by an operator with ``POST /admin/token``, which brings every socket out of the fatal 807 without a
restart; the token itself never appears in the answer, the stats or the log."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path

import httpx
import pyotp
import pytest
from pydantic import SecretStr

import pinned
from tickgate.api.app import create_app
from tickgate.dhan.client import ConnectionState
from tickgate.dhan.tokens import TOKEN_FILE
from tickgate.instruments import InstrumentRegistry
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator

from .conftest import NOW, service_settings

ADMIN = "admin-key-for-the-token-test"
FRESH = "fresh-token-from-the-operator"


def _service(
    simulator: Simulator, registry: InstrumentRegistry, tmp_path: Path, **settings: object
) -> TickgateService:
    """The service with the simulator's client id and token in its settings: it owns its token."""
    values = {
        "dhan_client_id": SecretStr(DEFAULT_CLIENT_ID),
        "dhan_access_token": SecretStr(DEFAULT_TOKEN),
        **settings,
    }
    return TickgateService(
        service_settings(tmp_path).model_copy(update=values),
        feed_url=simulator.url,
        rest_url=simulator.rest_url,
        registry=registry,
        scheduler=False,
        clock=pinned.flowing(NOW),
    )


async def test_an_operator_token_brings_fatal_sockets_back(
    simulator: Simulator, registry: InstrumentRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    svc = _service(simulator, registry, tmp_path, admin_key=SecretStr(ADMIN))
    await svc.start()
    try:
        tokens = svc.tokens
        assert tokens is not None
        assert await svc.feed.wait_until(lambda: tokens.stats.renewals == 1, 10)
        renewed = tokens.credentials().access_token  # the environment's token had no known expiry
        assert renewed != DEFAULT_TOKEN
        assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
        assert await svc.feed.wait_until(svc.feed.all_up, 15)
        simulator.tokens.expire()  # every token of the account dies: 807 on every live socket
        simulator.faults.disconnect("all", 807)
        assert await svc.feed.wait_until(
            lambda: (
                svc.feed.pool.fatal is not None
                and not any(s.state is ConnectionState.UP for s in svc.feed.pool.status())
            ),
            10,
        )
        assert svc.feed.pool.fatal is not None
        assert svc.feed.pool.fatal.code == 807
        simulator.tokens.issue(FRESH, DEFAULT_CLIENT_ID)
        app = create_app(svc)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            # While fatal, the operator's surfaces say why and how to leave it.
            health = await http.get("/api/v2/health")
            assert health.status_code == 503
            fatal = health.json()["account"]["fatal"]
            assert "807" in fatal["reason"]
            assert "POST /api/v2/admin/token" in fatal["how_to_leave"]
            ws = (await http.get("/api/v2/ws/status", headers={"X-API-Key": ADMIN})).json()
            assert ws["account"]["fatal"] == fatal
            assert ws["account"]["sockets"]["tickgate"] == 5
            assert ws["account"]["master"]["file"] is None  # a registry handed in, no file
            views = health.text + str(ws)
            refused = await http.post("/api/v2/admin/token", json={"token": FRESH})
            assert refused.status_code in (401, 403)
            empty = await http.post("/api/v2/admin/token", json={"token": " "}, headers={"X-API-Key": ADMIN})
            assert empty.status_code == 400
            r = await http.post("/api/v2/admin/token", json={"token": FRESH}, headers={"X-API-Key": ADMIN})
            assert r.status_code == 200, r.text
            assert r.json()["token"]["source"] == "admin"
            assert await svc.feed.wait_until(svc.feed.all_up, 15)  # no restart
            account = (await http.get("/api/v2/health")).json()["account"]
            assert account["fatal"] is None
            assert account["token"]["source"] in ("admin", "renewed")
            assert account["token"]["expires_at"] is not None
            views += str(account)
            # the operator's token, or what it was renewed into at once (its expiry was unknown)
            assert {s.token for s in simulator.live()} <= {FRESH, tokens.credentials().access_token}
            stats = (await http.get("/api/v2/admin/stats", headers={"X-API-Key": ADMIN})).text
            metrics = (await http.get("/metrics", headers={"X-API-Key": ADMIN})).text
            assert "tickgate_token_renewals_total" in metrics
            assert 'tickgate_feed_sockets{account="default",kind="tickgate"} 5.0' in metrics
            assert 'tickgate_feed_blocked_seconds{account="default"} 0.0' in metrics
            # every metric the shipped alert rules name is exported
            rules = (Path(__file__).resolve().parents[2] / "docs" / "alerts.yml").read_text()
            named = set(re.findall(r"tickgate_[a-z_]+", rules))
            assert named
            exported = set(re.findall(r"^(tickgate_[a-z_]+)", metrics, re.MULTILINE))
            assert named <= exported, named - exported
            bad = await http.post("/api/v2/admin/token", json={"token": 5}, headers={"X-API-Key": ADMIN})
            assert bad.status_code in (400, 422)  # a malformed body: refused, nothing echoed
        outputs = r.text + stats + metrics + empty.text + bad.text + caplog.text + views
        for secret in (DEFAULT_TOKEN, renewed, FRESH, tokens.credentials().access_token):
            assert secret not in outputs
    finally:
        await svc.stop()


async def test_an_expired_token_is_replaced_from_the_pin_and_totp_without_anyone(
    simulator: Simulator, registry: InstrumentRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The token dies early (Dhan ended it, or the host slept through its renewal): every socket gets 807.
    Renewal needs a valid token, so the service generates one from the PIN and TOTP at once, and the
    sockets come back with it: no operator, no restart."""
    caplog.set_level(logging.DEBUG)
    pin, secret = "2468", pyotp.random_base32()
    simulator.tokens.logins[DEFAULT_CLIENT_ID] = (pin, secret)
    svc = _service(simulator, registry, tmp_path, dhan_pin=SecretStr(pin), dhan_totp_secret=SecretStr(secret))
    await svc.start()
    try:
        tokens = svc.tokens
        assert tokens is not None
        assert await svc.feed.wait_until(lambda: tokens.stats.renewals == 1 and svc.feed.all_up(), 15)
        before = tokens.credentials().access_token
        simulator.tokens.expire()
        simulator.faults.disconnect("all", 807)
        assert await svc.feed.wait_until(lambda: tokens.stats.generations == 1, 10), tokens.status()
        assert await svc.feed.wait_until(svc.feed.all_up, 15)
        assert svc.feed.pool.fatal is None
        after = tokens.credentials().access_token
        assert after != before
        assert {s.token for s in simulator.live()} == {after}
        assert tokens.status()["source"] == "generated"
        assert tokens.stats.renewals == 1  # the dead token was not renewed again and again
        for secret_text in (before, after, pin, secret, DEFAULT_TOKEN):
            assert secret_text not in caplog.text
    finally:
        await svc.stop()
