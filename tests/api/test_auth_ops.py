"""Auth, secrets never leaking, capacity (409), not ready (503), metrics and the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tickgate.api import create_app
from tickgate.api.logs import configure_logging
from tickgate.cli import app as cli
from tickgate.config import FeedLimits
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import DEFAULT_TOKEN, Simulator

from .conftest import ADMIN_KEY, PREFIX, Api, api_settings, build_service, running_api

pytestmark = pytest.mark.timeout(120)


def test_auth_required_everywhere_but_health(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    for path, ops in schema["paths"].items():
        for method in ops:
            url = PREFIX + path.removeprefix(PREFIX)
            url = (
                url.replace("{symbol}", "NIFTY").replace("{security_id}", "1").replace("{watchlist_id}", "1")
            )
            r = api.client.request(method.upper(), url, params={"q": "x", "keys": "NSE_EQ:1"})
            if path.endswith("/health"):
                assert r.status_code == 200
            else:
                assert r.status_code == 401, (method, path, r.text)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["www-authenticate"] == "ApiKey"


def test_keys_are_hashed_and_per_user(api: Api) -> None:
    h1, h2 = api.user("k1"), api.user("k2")
    api.client.post(f"{PREFIX}/watchlist", json={"symbol": "WIPRO", "strikes": 1}, headers=h1)
    assert [e["symbol"] for e in api.client.get(f"{PREFIX}/watchlist", headers=h1).json()["entries"]] == [
        "WIPRO"
    ]
    assert api.client.get(f"{PREFIX}/watchlist", headers=h2).json()["entries"] == []
    db = Path(str(api.service.settings.db_url).removeprefix("sqlite+aiosqlite:///"))
    assert h1["X-API-Key"].encode() not in db.read_bytes()


def test_secrets_never_in_logs_or_answers(
    tmp_path: Path,
    simulator: Simulator,
    registry: InstrumentRegistry,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A whole app run: every answer and every log line is searched for the token and the keys."""
    root = logging.getLogger()
    before = root.level
    configure_logging(logging.DEBUG, json=True)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("websockets.server").setLevel(logging.INFO)  # the simulator's side: just noise
    try:
        _run_and_grep(tmp_path, simulator, registry, capsys, caplog)
    finally:
        root.setLevel(before)
        logging.getLogger("websockets.server").setLevel(logging.NOTSET)


def _run_and_grep(
    tmp_path: Path,
    simulator: Simulator,
    registry: InstrumentRegistry,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = api_settings(tmp_path)
    from pydantic import SecretStr

    settings = settings.model_copy(
        update={"dhan_access_token": SecretStr(DEFAULT_TOKEN), "dhan_client_id": SecretStr("1100000001")}
    )
    bodies: list[str] = []
    with running_api(settings, simulator, registry) as api:
        user = api.user("leaky")
        key = user["X-API-Key"]
        for method, path, kw in [
            ("GET", "/health", {}),
            ("GET", "/admin/stats", {"headers": api.admin}),
            ("GET", "/ws/status", {"headers": user}),
            ("GET", "/subscriptions", {"headers": user}),
            ("POST", "/watchlist", {"headers": user, "json": {"symbol": "TCS", "strikes": 3}}),
            ("GET", "/watchlist", {"headers": user}),
            ("GET", "/admin/audit", {"headers": api.admin}),
            ("GET", "/quotes", {"headers": user, "params": {"keys": "NSE_EQ:1", "key": key}}),
            ("GET", "/watchlist", {"headers": {"X-API-Key": key + "x"}}),
        ]:
            r = api.client.request(method, PREFIX + path, **kw)  # type: ignore[arg-type]
            bodies.append(r.text)
        bodies.append(api.client.get("/metrics").text)
        with api.client.websocket_connect(f"{PREFIX}/stream?key={key}") as ws:
            ws.send_json({"subscribe": ["NSE_EQ:1"]})
            bodies.append(ws.receive_text())
    out = capsys.readouterr()
    everything = "\n".join([*bodies, out.out, out.err, caplog.text])
    assert "request" in everything  # the access log ran
    for secret in (DEFAULT_TOKEN, ADMIN_KEY, key):
        assert secret not in everything.replace(f'"query":"{key}"', ""), "a secret leaked"


def test_capacity_conflict_names_what_did_not_fit(
    tmp_path: Path, simulator: Simulator, registry: InstrumentRegistry
) -> None:
    limits = FeedLimits(sockets_per_account=2, instruments_per_socket=60, instruments_per_message=40)
    with running_api(api_settings(tmp_path, limits=limits), simulator, registry) as api:
        a, b = api.user("a"), api.user("b")
        first = api.client.post(
            f"{PREFIX}/watchlist", json={"symbol": "INFY", "strikes": 11}, headers=a
        ).json()
        assert first["status"] == "added"
        # capacity 120 = Tier B 23 + 4 chains of 23 = 115: the next chain of b evicts a's INFY (the LRU)
        evicted = []
        for symbol in ("TCS", "SBIN", "ITC", "LT"):
            r = api.client.post(f"{PREFIX}/watchlist", json={"symbol": symbol, "strikes": 11}, headers=b)
            assert r.status_code == 200, r.text
            evicted += r.json()["evicted"]
            if r.json()["evicted"]:
                assert "capacity limit" in r.json()["message"]
        assert evicted
        assert evicted[0]["symbol"] == "INFY"
        assert evicted[0]["user_id"] is not None
        entries = api.client.get(f"{PREFIX}/watchlist", headers=a).json()["entries"]
        assert entries[0]["state"] == "evicted"
        assert "capacity" in entries[0]["state_reason"]
        r = api.client.post(f"{PREFIX}/watchlist", json={"symbol": "NIFTY", "strikes": 201}, headers=a)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "capacity_exceeded"
        assert "NIFTY" in error["message"]
        assert error["details"]["tier_b"] == 23
        assert error["details"]["needed"] == 403
        metrics = api.client.get("/metrics").text
        assert "tickgate_evictions_total" in metrics
        evictions = next(
            line for line in metrics.splitlines() if line.startswith("tickgate_evictions_total ")
        )
        assert float(evictions.split()[1]) >= 1


def test_not_ready_is_503(tmp_path: Path, simulator: Simulator, registry: InstrumentRegistry) -> None:
    service = build_service(api_settings(tmp_path), simulator, registry)
    client = TestClient(create_app(service))  # no lifespan: the service never starts
    r = client.get(f"{PREFIX}/health")
    assert r.status_code == 503
    assert r.json()["ready"] is False
    assert r.json()["status"] == "starting"
    r = client.get(f"{PREFIX}/instruments/search", params={"q": "X"}, headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "not_ready"
    assert client.get("/metrics").status_code == 200


def test_metrics(api: Api) -> None:
    h = api.user("metrics")
    api.client.get(f"{PREFIX}/watchlist", headers=h)
    text = api.client.get("/metrics").text
    for name in (
        'tickgate_subscriptions{tier="B"} 23.0',
        "tickgate_connection_instruments{",
        'tickgate_capacity{kind="total"} 25000.0',
        "tickgate_evictions_total",
        "tickgate_suspensions_total",
        "tickgate_reconnect_reasons",
        'tickgate_packets_total{code="quote"}',
        "tickgate_corrupt_frames_total",
        "tickgate_decode_lag_seconds",
        "tickgate_push_clients",
        'tickgate_api_request_seconds_bucket{le="0.005",method="GET",route="/api/v2/watchlist",status="200"}',
        'tickgate_store_writer{stat="audit_written"}',
        'tickgate_connection_up{account="default",connection=',
        'tickgate_background_failures_total{loop="recentre"} 0.0',
        'tickgate_background_failures_total{loop="decoder"} 0.0',
        'tickgate_metrics_failures_total{section="service"} 0.0',
        'tickgate_metrics_failures_total{section="accounts"} 0.0',
    ):
        assert name in text, name
    # two apps in one process: each has its own registry, no clash
    other = create_app(api.service)
    assert other.state.metrics.registry is not api.app.state.metrics.registry


def test_a_failing_metrics_section_is_counted_and_the_rest_still_served(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in one section of the scrape (here the planner's totals) must not take the whole of /metrics
    with it: Prometheus would see the service as down and lose every other figure."""

    def broken() -> None:
        raise RuntimeError("totals bug")

    monkeypatch.setattr(api.service.planner, "totals", broken)
    first = api.client.get("/metrics")
    second = api.client.get("/metrics")
    assert first.status_code == second.status_code == 200
    for name in ("tickgate_push_clients", "tickgate_planner_events_total", "tickgate_feed_sockets{account="):
        assert name in second.text, name
    assert "tickgate_capacity{" not in second.text  # the broken section's figures are left out, not made up
    assert 'tickgate_metrics_failures_total{section="service"} 2.0' in second.text
    assert "totals bug" in caplog.text
    monkeypatch.undo()
    healed = api.client.get("/metrics").text
    assert 'tickgate_capacity{kind="total"} 25000.0' in healed
    assert 'tickgate_metrics_failures_total{section="service"} 2.0' in healed


def test_cli_users_add_and_serve_refuses_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickgate.config import get_settings

    monkeypatch.setenv("TICKGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TICKGATE_DB_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("DHAN_CLIENT_ID", raising=False)
    monkeypatch.delenv("DHAN_ACCESS_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        r = runner.invoke(cli, ["users", "add", "ops", "--admin"])
        assert r.exit_code == 0, r.output
        key = r.stdout.strip().splitlines()[-1]
        assert len(key) >= 20
        assert key.encode() not in (tmp_path / "cli.db").read_bytes()
        dup = runner.invoke(cli, ["users", "add", "ops"])
        assert dup.exit_code == 1
        r = runner.invoke(cli, ["serve"])
        assert r.exit_code == 2
        assert "make demo" in r.output
        r = runner.invoke(cli, ["eod", "--now", "--url", "http://127.0.0.1:9"])
        assert r.exit_code == 0, r.output
        assert "NSE_BSE" in r.stdout
    finally:
        get_settings.cache_clear()


def test_serve_refuses_a_virtual_clock_against_the_real_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With real credentials and Dhan's feed URL, a virtual clock (the suite's own, here) is refused with
    a clear error before anything connects; pointed at a simulator it would be allowed."""
    from tickgate.config import Settings, VirtualClockError, get_settings

    monkeypatch.setenv("TICKGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DHAN_CLIENT_ID", "1100000001")
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", "a-real-looking-token")
    monkeypatch.delenv("TICKGATE_FEED_URL", raising=False)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(cli, ["serve"])
        assert r.exit_code == 2
        assert "virtual clock" in r.output
        assert "api-feed.dhan.co" in r.output
        assert "a-real-looking-token" not in r.output
    finally:
        get_settings.cache_clear()
    settings = Settings()
    assert settings.clock_start is not None  # tests/pinned.py
    with pytest.raises(VirtualClockError):
        settings.check_clock_for("wss://api-feed.dhan.co")
    settings.check_clock_for("ws://127.0.0.1:9000")  # the simulator: fine
    settings.model_copy(update={"clock_start": None}).check_clock_for("wss://api-feed.dhan.co")


def test_a_failing_background_step_is_logged_counted_and_the_rest_goes_on(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """A plan subscriber that raises does not stop the others (the audit log still gets the change), and
    the failure is logged and shows in the metrics."""
    svc = api.service
    calls: list[str] = []

    def broken(change: object) -> None:
        calls.append("broken")
        raise RuntimeError("subscriber bug")

    svc.orchestrator.subscribe("broken", broken)
    h = api.user("failing-step")
    try:
        r = api.client.post(f"{PREFIX}/watchlist", json={"symbol": "INFY", "strikes": 3}, headers=h)
    finally:
        svc.orchestrator.unsubscribe("broken")
    assert r.status_code in (200, 201), r.text
    assert calls
    assert svc.orchestrator.subscriber_failures["broken"] >= 1
    assert "subscriber bug" in caplog.text
    text = api.client.get("/metrics").text
    assert 'tickgate_background_failures_total{loop="subscriber:broken"}' in text
    listed = api.client.get(f"{PREFIX}/watchlist", headers=h).json()
    assert "INFY" in str(listed)  # the add itself went through, the other subscribers ran
