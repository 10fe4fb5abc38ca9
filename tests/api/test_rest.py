"""Every REST endpoint over a running service, and the error model (400/401/403/404/409/503)."""

from __future__ import annotations

from typing import Any

import pytest

from tickgate.api.fastpath import FastPaths
from tickgate.api.models import OptionChainResponse, WatchlistAddResponse

from .conftest import PREFIX, Api

pytestmark = pytest.mark.timeout(120)


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["code"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


# -- instruments ----------------------------------------------------------------------------------------


def test_search(api: Api) -> None:
    h = api.user("search")
    r = api.client.get(f"{PREFIX}/instruments/search", params={"q": "RELIANCE", "limit": 5}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 1 <= body["count"] <= 5
    assert body["results"][0]["symbol"] == "RELIANCE"
    assert body["results"][0]["key"].startswith(("NSE_EQ:", "BSE_EQ:"))
    error_of(
        api.client.get(f"{PREFIX}/instruments/search", params={"q": ""}, headers=h), 400, "invalid_input"
    )
    error_of(api.client.get(f"{PREFIX}/instruments/search", params={"q": "X", "limit": 0}, headers=h), 400)
    error_of(api.client.get(f"{PREFIX}/instruments/search", headers=h), 400, "invalid_input")


def test_expiries(api: Api) -> None:
    h = api.user("expiries")
    r = api.client.get(f"{PREFIX}/instruments/nifty/expiries", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbol"] == "NIFTY"
    dates = [e["date"] for e in body["expiries"]]
    assert dates == sorted(dates)
    assert dates[0] >= "2026-11-25"
    assert {e["kind"] for e in body["expiries"]} <= {"weekly", "monthly", "quarterly"}
    err = error_of(api.client.get(f"{PREFIX}/instruments/NOSUCHCO/expiries", headers=h), 404, "not_found")
    assert "NOSUCHCO" in err["message"]


def test_instrument_by_id(api: Api) -> None:
    h = api.user("byid")
    found = api.client.get(f"{PREFIX}/instruments/search", params={"q": "INFY"}, headers=h).json()["results"][
        0
    ]
    sid, segment = found["security_id"], found["segment"]
    r = api.client.get(f"{PREFIX}/instruments/{sid}", params={"segment": segment}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["key"] == found["key"]
    error_of(api.client.get(f"{PREFIX}/instruments/999999999", headers=h), 404, "not_found")
    error_of(api.client.get(f"{PREFIX}/instruments/abc", headers=h), 400, "invalid_input")
    err = error_of(api.client.get(f"{PREFIX}/instruments/1", params={"segment": "NOPE"}, headers=h), 400)
    assert "NSE_EQ" in str(err["details"])


def test_ambiguous_security_id_names_segments(api: Api) -> None:
    h = api.user("ambiguous")
    reg = api.service.registry
    import polars as pl

    from tickgate.dhan.protocol import ExchangeSegment

    dups = (
        reg.frame.group_by("sid")
        .agg(pl.col("fseg").unique().alias("segs"))
        .filter(pl.col("segs").list.len() > 1)
    )
    if dups.height == 0:
        pytest.skip("generated master has no id shared by two segments")
    dup = int(dups["sid"][0])
    segments = [ExchangeSegment(int(s)) for s in dups["segs"][0]]
    err = error_of(api.client.get(f"{PREFIX}/instruments/{dup}", headers=h), 400, "ambiguous_security_id")
    for segment in segments:
        assert segment.name in err["message"]


# -- option chain -----------------------------------------------------------------------------------------


def test_option_chain_has_live_quotes(api: Api) -> None:
    h = api.user("chain")
    # NIFTY's nearest weekly is Tier B here, so its legs stream from the simulator
    tier_b = api.service.tier_b
    assert tier_b is not None
    expiry = next(g.expiry for g in tier_b.groups if g.expiry is not None)
    assert expiry is not None

    def fetch() -> dict[str, Any]:
        r = api.client.get(
            f"{PREFIX}/option-chain/NIFTY",
            params={"expiry": expiry.date.isoformat(), "strikes": 11},
            headers=h,
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def live() -> bool:
        body = fetch()
        legs = [row["ce"] for row in body["rows"]] + [row["pe"] for row in body["rows"]]
        return all(leg and leg["quote"] and leg["quote"]["ltp"] for leg in legs) and bool(
            body["underlying"]["quote"] and body["underlying"]["quote"]["ltp"]
        )

    assert api.wait(live, 20), "chain legs never got live prices from the simulator"
    body = fetch()
    assert body["symbol"] == "NIFTY"
    assert body["strikes"] == 11
    assert sum(1 for row in body["rows"] if row["atm"]) == 1
    atm_index = next(i for i, row in enumerate(body["rows"]) if row["atm"])
    assert atm_index == 5
    assert body["rows"][atm_index]["strike"] == body["atm_strike"]
    leg = body["rows"][atm_index]["ce"]
    assert leg["security_id"] > 0
    quote = leg["quote"]
    for field in ("ltp", "bid", "ask", "oi", "volume", "change"):
        assert field in quote
    assert quote["ltp"] > 0
    assert quote["updates"] > 0
    # the hand-rendered bytes are exactly the documented model: nothing missing, nothing extra
    assert OptionChainResponse.model_validate(body).model_dump(mode="json") == body


def test_option_chain_errors(api: Api) -> None:
    h = api.user("chainerr")
    error_of(api.client.get(f"{PREFIX}/option-chain/NOSUCHCO", headers=h), 404, "not_found")
    err = error_of(
        api.client.get(f"{PREFIX}/option-chain/RELIANCE", params={"expiry": "2026-12-02"}, headers=h), 404
    )
    assert "upcoming expiries" in err["message"]
    error_of(api.client.get(f"{PREFIX}/option-chain/RELIANCE", params={"strikes": 0}, headers=h), 400)
    error_of(api.client.get(f"{PREFIX}/option-chain/RELIANCE", params={"expiry": "soon"}, headers=h), 400)
    error_of(api.client.get(f"{PREFIX}/option-chain/RELIANCE", params={"ltp": -5}, headers=h), 400)
    expired = api.client.get(f"{PREFIX}/option-chain/RELIANCE", params={"expiry": "2026-10-27"}, headers=h)
    assert expired.status_code in {400, 404}
    error_of(expired, expired.status_code)


def test_subscribe_chain_and_view_touches(api: Api) -> None:
    h = api.user("subscriber")
    r = api.client.post(f"{PREFIX}/option-chain/TCS/subscribe", json={"strikes": 5}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "added"
    assert len(body["keys"]) == 11  # 5 strikes × CE/PE + TCS
    assert body["evicted"] == []
    assert body["message"].startswith("Added TCS")
    entry = body["entry"]
    group = entry["group_id"]
    before = api.service.planner.group(group).last_used
    chain = api.client.get(
        f"{PREFIX}/option-chain/TCS", params={"expiry": entry["expiry"], "strikes": 5}, headers=h
    ).json()
    assert chain["watchlist_id"] == entry["id"]
    assert api.service.planner.group(group).last_used > before  # viewing is a use
    again = api.client.post(f"{PREFIX}/option-chain/TCS/subscribe", json={"strikes": 5}, headers=h).json()
    assert again["status"] == "touched"
    no_body = api.client.post(f"{PREFIX}/option-chain/SBIN/subscribe", headers=h)
    assert no_body.status_code == 200, no_body.text
    error_of(api.client.post(f"{PREFIX}/option-chain/TCS/subscribe", json={"strikes": -1}, headers=h), 400)
    error_of(api.client.post(f"{PREFIX}/option-chain/NOSUCHCO/subscribe", json={}, headers=h), 404)


# -- watchlist --------------------------------------------------------------------------------------------


def test_watchlist_add_list_remove(api: Api) -> None:
    h = api.user("asha")
    r = api.client.post(f"{PREFIX}/watchlist", json={"symbol": "RELIANCE"}, headers=h)
    assert r.status_code == 200, r.text
    added = r.json()
    assert added["status"] == "added"
    assert len(added["keys"]) == 51
    # The answer says where the entry stands, as GET /watchlist will (it used to say unplaced, size 0).
    assert (added["entry"]["placed"], added["entry"]["size"]) == (True, 51)
    assert added["entry"]["stream_id"] == f"chain:{added['entry']['id']}"
    assert added["atm_strike"] is not None
    listing = api.client.get(f"{PREFIX}/watchlist", headers=h).json()
    assert [e["symbol"] for e in listing["entries"]] == ["RELIANCE"]
    assert listing["entries"][0]["size"] == 51
    cap = listing["capacity"]
    assert cap["total"] == 25_000
    assert cap["tier_b"] + cap["tier_a"] + cap["free"] == cap["total"]
    other = api.user("not-asha")
    assert api.client.get(f"{PREFIX}/watchlist", headers=other).json()["entries"] == []
    error_of(api.client.delete(f"{PREFIX}/watchlist/{added['entry']['id']}", headers=other), 404, "not_found")
    gone = api.client.delete(f"{PREFIX}/watchlist/{added['entry']['id']}", headers=h)
    assert gone.status_code == 200, gone.text
    assert gone.json()["removed"]["symbol"] == "RELIANCE"
    assert api.client.get(f"{PREFIX}/watchlist", headers=h).json()["entries"] == []
    error_of(api.client.delete(f"{PREFIX}/watchlist/{added['entry']['id']}", headers=h), 404)
    error_of(api.client.delete(f"{PREFIX}/watchlist/xyz", headers=h), 400)


def test_watchlist_stock_alone_and_bad_bodies(api: Api) -> None:
    h = api.user("ravi")
    r = api.client.post(
        f"{PREFIX}/watchlist", json={"symbol": "ITC", "strikes": 0, "mode": "full"}, headers=h
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["keys"]) == 1
    assert r.json()["entry"]["mode"] == "full"
    for bad in (
        {},
        {"symbol": ""},
        {"symbol": "ITC", "mode": "loud"},
        {"symbol": "ITC", "strikes": -3},
        {"symbol": "ITC", "expiry": "tomorrow"},
        {"symbol": "ITC", "surprise": 1},
    ):
        error_of(api.client.post(f"{PREFIX}/watchlist", json=bad, headers=h), 400, "invalid_input")
    error_of(
        api.client.post(
            f"{PREFIX}/watchlist", content=b"{not json", headers={**h, "Content-Type": "application/json"}
        ),
        400,
    )
    error_of(api.client.post(f"{PREFIX}/watchlist", json={"symbol": "NOSUCHCO"}, headers=h), 404, "not_found")


def fast_paths(api: Api) -> FastPaths:
    """The app's fast-path middleware (built with the app's middleware stack on its first request)."""
    layer: Any = api.client.app
    while not isinstance(layer, FastPaths):
        layer = layer.middleware_stack if hasattr(layer, "middleware_stack") else layer.app
    return layer


def test_watchlist_add_fast_path_answers_as_the_route_does(api: Api) -> None:
    """An add by an already-authenticated key takes the fast path; its answers (success, unknown symbol)
    have the route's shape, and a body that does not validate gets the route's own 400."""
    cold, warm = api.user("fp-cold"), api.user("fp-warm")
    assert api.client.get(f"{PREFIX}/watchlist", headers=warm).status_code == 200  # authenticates the key
    fast = fast_paths(api)
    body = {"symbol": "SBIN", "strikes": 0}
    before = fast.served
    by_route = api.client.post(f"{PREFIX}/watchlist", json=body, headers=cold)
    assert fast.served == before  # a key seen for the first time goes down the route
    by_fast_path = api.client.post(f"{PREFIX}/watchlist", json=body, headers=warm)
    assert fast.served == before + 1
    assert by_route.status_code == by_fast_path.status_code == 200, by_fast_path.text
    a, b = by_route.json(), by_fast_path.json()
    WatchlistAddResponse.model_validate(b)
    assert set(a) == set(b)
    assert set(a["entry"]) == set(b["entry"])
    assert (a["status"], a["keys"], a["evicted"], a["message"]) == (
        b["status"],
        b["keys"],
        b["evicted"],
        b["message"],
    )
    assert b["entry"]["symbol"] == "SBIN"
    assert b["entry"]["id"] != a["entry"]["id"]

    served = fast.served
    for bad in ({"symbol": "ITC", "mode": "loud"}, {"symbol": "ITC", "surprise": 1}, {}):
        error_of(api.client.post(f"{PREFIX}/watchlist", json=bad, headers=warm), 400, "invalid_input")
    assert fast.served == served  # replayed to the route
    missing = error_of(api.client.post(f"{PREFIX}/watchlist", json={"symbol": "NOSUCHCO"}, headers=warm), 404)
    assert missing["code"] == "not_found"
    assert "NOSUCHCO" in missing["message"]
    assert fast.served == served + 1
    # the fast path's answers are measured under the route's own template, as the route's are
    metrics = api.client.get("/metrics").text
    labelled = [
        line
        for line in metrics.splitlines()
        if line.startswith("tickgate_api_request_seconds_count")
        and 'method="POST"' in line
        and 'route="/api/v2/watchlist"' in line
        and 'status="404"' in line
    ]
    assert labelled, "the fast path's 404 is not counted under /api/v2/watchlist"


# -- status -----------------------------------------------------------------------------------------------


def test_subscriptions(api: Api) -> None:
    h = api.user("subs")
    api.client.post(f"{PREFIX}/watchlist", json={"symbol": "INFY", "strikes": 3}, headers=h)
    body = api.client.get(f"{PREFIX}/subscriptions", headers=h).json()
    assert body["by_tier"]["B"] == 23  # 11 NIFTY strikes × CE/PE + NIFTY
    assert body["by_tier"]["A"] >= 7
    assert sum(body["by_connection"].values()) == body["placed"]
    groups = {g["group"]: g for g in body["groups"]}
    assert any(g.startswith("B:") for g in groups)
    infy = next(g for g in groups.values() if ":INFY:" in g["group"])
    assert infy["tier"] == "A"
    assert infy["last_used"].startswith("20")
    assert body["suspended"] == []


def test_ws_status(api: Api) -> None:
    h = api.user("wsstatus")
    body = api.client.get(f"{PREFIX}/ws/status", headers=h).json()
    assert len(body["connections"]) == 5
    assert all(c["state"] == "up" for c in body["connections"])
    assert sum(c["instruments"] for c in body["connections"]) == api.service.planner.totals().placed
    assert body["alert"] is None
    for c in body["connections"]:
        assert {"reconnects", "last_data_age_s", "last_disconnect"} <= set(c)


def test_health(api: Api) -> None:
    r = api.client.get(f"{PREFIX}/health")  # no key needed: load balancers probe it
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"]
    assert body["live"]
    assert body["registry_loaded"]
    assert body["database"]
    assert body["feed_up"] == body["feed_connections"] == 5
    assert body["status"] == "ok"


def test_quotes(api: Api) -> None:
    h = api.user("quotes")
    tier_b = api.service.tier_b
    assert tier_b is not None
    keys = [str(k) for k in tier_b.keys()[:3]]
    assert api.wait(
        lambda: (
            all(
                q["ltp"]
                for q in api.client.get(
                    f"{PREFIX}/quotes", params={"keys": ",".join(keys)}, headers=h
                ).json()["quotes"]
            )
            and len(
                api.client.get(f"{PREFIX}/quotes", params={"keys": ",".join(keys)}, headers=h).json()[
                    "quotes"
                ]
            )
            == 3
        )
    )
    body = api.client.get(
        f"{PREFIX}/quotes", params={"keys": ",".join([*keys, "NSE_EQ:4000000"])}, headers=h
    ).json()
    assert [q["key"] for q in body["quotes"]] == keys
    assert body["missing"] == ["NSE_EQ:4000000"]
    err = error_of(api.client.get(f"{PREFIX}/quotes", params={"keys": "NSE_EQ:abc"}, headers=h), 400)
    assert err["message"].startswith("query.keys")
    error_of(api.client.get(f"{PREFIX}/quotes", params={"keys": "MARS:1"}, headers=h), 400)
    error_of(api.client.get(f"{PREFIX}/quotes", params={"keys": ","}, headers=h), 400)
    error_of(api.client.get(f"{PREFIX}/quotes", headers=h), 400)
    many = ",".join(f"NSE_EQ:{i}" for i in range(1001))
    error_of(api.client.get(f"{PREFIX}/quotes", params={"keys": many}, headers=h), 400)


# -- admin ------------------------------------------------------------------------------------------------

ADMIN_ENDPOINTS = [
    ("post", "/admin/cleanup"),
    ("post", "/admin/rebalance"),
    ("get", "/admin/stats"),
    ("get", "/admin/audit"),
    ("post", "/admin/tier-b/reload"),
    ("get", "/admin/planner"),
    ("put", "/admin/groups/A:1:NSE:X/pin"),
    ("delete", "/admin/groups/A:1:NSE:X/pin"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_admin_needs_admin(api: Api, method: str, path: str) -> None:
    user = api.user(f"plain-{method}-{path.replace('/', '-')}")
    error_of(api.client.request(method.upper(), f"{PREFIX}{path}", headers=user), 403, "forbidden")
    error_of(api.client.request(method.upper(), f"{PREFIX}{path}"), 401, "unauthorized")
    error_of(api.client.request(method.upper(), f"{PREFIX}{path}", headers={"X-API-Key": "nope"}), 401)


def test_admin_stats_and_rebalance(api: Api) -> None:
    stats = api.client.get(f"{PREFIX}/admin/stats", headers=api.admin)
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["instruments"] == len(api.service.registry)
    assert body["tier_b_total"] == 23
    assert body["feed"]["frames"] > 0
    assert "audit_written" in body["store_writer"]
    assert set(body["wal_checkpoints"]) >= {"done", "failed", "max_s", "last_wal_frames"}
    r = api.client.post(f"{PREFIX}/admin/rebalance", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["moves"] >= 0


def test_admin_pin_keeps_a_chain_and_shows_it(api: Api) -> None:
    h = api.user("pin-owner")
    added = api.client.post(f"{PREFIX}/watchlist", json={"symbol": "HDFCBANK", "strikes": 1}, headers=h)
    assert added.status_code == 200, added.text
    group = added.json()["entry"]["group_id"]
    r = api.client.put(f"{PREFIX}/admin/groups/{group}/pin", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["pinned"] is True
    assert r.json()["group"] == group
    listed = api.client.get(f"{PREFIX}/watchlist", headers=h).json()
    assert [e["pinned"] for e in listed["entries"] if e["group_id"] == group] == [True]
    subs = api.client.get(f"{PREFIX}/subscriptions", headers=h).json()
    assert [g["pinned"] for g in subs["groups"] if g["group"] == group] == [True]
    assert api.call(api.service.store.meta.get, "pinned_groups") == [group]
    planner = api.client.get(f"{PREFIX}/admin/planner", headers=api.admin).json()
    assert [g["id"] for g in planner["groups"] if g["pinned"]] == [group]
    r = api.client.delete(f"{PREFIX}/admin/groups/{group}/pin", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["pinned"] is False
    assert api.call(api.service.store.meta.get, "pinned_groups") == []
    api.call(api.service.store.writer.flush)
    actions = [e.action for e in api.call(api.service.store.audit.page, group_id=group).entries]
    assert "PIN" in actions
    assert "UNPIN" in actions


def test_admin_pin_refuses_what_it_cannot_pin(api: Api) -> None:
    missing = api.client.put(f"{PREFIX}/admin/groups/A:0:NSE:NOPE/pin", headers=api.admin)
    error_of(missing, 404, "not_found")
    assert "A:0:NSE:NOPE" in missing.json()["error"]["message"]
    tier_b = next(
        g["group"]
        for g in api.client.get(f"{PREFIX}/subscriptions", headers=api.admin).json()["groups"]
        if g["tier"] == "B"
    )
    error_of(api.client.put(f"{PREFIX}/admin/groups/{tier_b}/pin", headers=api.admin), 400, "invalid_input")


def test_admin_user_with_flag_is_admin(api: Api) -> None:
    h = api.user("root", admin=True)
    assert api.client.get(f"{PREFIX}/admin/stats", headers=h).status_code == 200


def test_admin_tier_b_reload(api: Api) -> None:
    r = api.client.post(f"{PREFIX}/admin/tier-b/reload", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 23
    assert r.json()["groups"]


def test_admin_audit_paginated(api: Api) -> None:
    h = api.user("auditee")
    for symbol in ("WIPRO", "LT", "ITC"):
        api.client.post(f"{PREFIX}/watchlist", json={"symbol": symbol, "strikes": 1}, headers=h)
    api.call(api.service.store.writer.flush)
    page = api.client.get(
        f"{PREFIX}/admin/audit", params={"action": "WATCHLIST_ADD", "limit": 2}, headers=api.admin
    ).json()
    assert len(page["entries"]) == 2
    assert all(e["action"] == "WATCHLIST_ADD" for e in page["entries"])
    assert page["next_cursor"] is not None
    nxt = api.client.get(
        f"{PREFIX}/admin/audit",
        params={"action": "WATCHLIST_ADD", "limit": 2, "cursor": page["next_cursor"]},
        headers=api.admin,
    ).json()
    assert nxt["entries"]
    assert nxt["entries"][0]["id"] < page["entries"][-1]["id"]
    future = api.client.get(
        f"{PREFIX}/admin/audit", params={"since": "2999-01-01T00:00:00"}, headers=api.admin
    ).json()
    assert future["entries"] == []
    error_of(api.client.get(f"{PREFIX}/admin/audit", params={"since": "yesterday"}, headers=api.admin), 400)
    error_of(api.client.get(f"{PREFIX}/admin/audit", params={"limit": 0}, headers=api.admin), 400)


def test_admin_cleanup_clears_tier_a_only(api: Api) -> None:
    h = api.user("eod")
    api.client.post(f"{PREFIX}/watchlist", json={"symbol": "HDFCBANK", "strikes": 1}, headers=h)
    tier_b = api.service.planner.totals().by_tier.get(api.service.planner.groups()[0].tier)
    r = api.client.post(f"{PREFIX}/admin/cleanup", params={"session": "NSE_BSE"}, headers=api.admin)
    assert r.status_code == 200, r.text
    run = r.json()["runs"][0]
    assert run["session"] == "NSE_BSE"
    assert run["watchlist_rows_deleted"] >= 1
    assert api.client.get(f"{PREFIX}/watchlist", headers=h).json()["entries"] == []
    assert api.service.tier_b is not None
    assert api.client.get(f"{PREFIX}/subscriptions", headers=h).json()["by_tier"]["B"] == 23
    assert tier_b is not None
    error_of(
        api.client.post(f"{PREFIX}/admin/cleanup", params={"session": "LSE"}, headers=api.admin),
        400,
        "invalid_input",
    )


def test_unknown_route_and_method_are_json(api: Api) -> None:
    error_of(api.client.get(f"{PREFIX}/nope"), 404, "not_found")
    error_of(api.client.put(f"{PREFIX}/watchlist", headers=api.admin), 405, "method_not_allowed")


def test_cors(api: Api) -> None:
    r = api.client.options(
        f"{PREFIX}/watchlist",
        headers={
            "Origin": "http://dash.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-API-Key",
        },
    )
    assert r.headers.get("access-control-allow-origin") == "http://dash.example"
    r = api.client.get(f"{PREFIX}/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_openapi_has_models_for_everything(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    paths = schema["paths"]
    # the 16 of the seed (GET+POST /watchlist counted apart) + health + planner view + pin, unpin, token
    assert len([op for p in paths.values() for op in p]) == 21
    for path, ops in paths.items():
        for method, op in ops.items():
            ok = op["responses"].get("200")
            assert ok is not None, (method, path)
            content = ok["content"]["application/json"]["schema"]
            assert "$ref" in content, (method, path, content)  # a named model, never a bare dict
            for status in ("400", "401"):
                assert status in op["responses"], (method, path, status)
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]
    assert api.client.get("/docs").status_code == 200


def test_one_error_table_gives_the_same_answer_everywhere() -> None:
    """A domain refusal is answered the same whether it surfaced through a watchlist add (mapped by the
    service) or reached the API's handlers directly: one table, ``as_service_error``."""
    import datetime as dt

    from tickgate.api.errors import known_error
    from tickgate.chains.atm import (
        ExpiryExpiredError,
        ExpiryNotListedError,
        NoOptionsError,
        UnknownSymbolError,
    )
    from tickgate.instruments.model import AmbiguousSecurityIdError
    from tickgate.service.errors import as_service_error

    cases = {
        UnknownSymbolError("unknown symbol 'X'"): (404, "not_found"),
        NoOptionsError("no options on X"): (404, "not_found"),
        ExpiryNotListedError("not listed", [dt.date(2026, 12, 8)]): (404, "not_found"),
        ExpiryExpiredError("expired"): (400, "invalid_input"),
        AmbiguousSecurityIdError("13 in IDX_I and NSE_EQ"): (400, "ambiguous_security_id"),
    }
    for exc, (status, code) in cases.items():
        direct = known_error(exc)
        via_service = known_error(as_service_error(exc))
        assert (direct.status_code, direct.body) == (via_service.status_code, via_service.body)
        assert direct.status_code == status
        assert f'"code":"{code}"' in direct.body.decode()
    listed = known_error(ExpiryNotListedError("not listed", [dt.date(2026, 12, 8)]))
    assert "2026-12-08" in listed.body.decode()


def test_option_chain_analytics_are_computed_once_and_shared(api: Api) -> None:
    """``?analytics=true``: every leg's IV and Greeks and the chain's ATM IV, PCR and max pain, in the
    documented model; the simulator prices index options at 14 % volatility, and the chain says so."""
    h = api.user("analyst")
    tier_b = api.service.tier_b
    assert tier_b is not None
    expiry = next(g.expiry for g in tier_b.groups if g.expiry is not None and g.group.startswith("B:NIFTY:"))
    assert expiry is not None
    params = {"expiry": expiry.date.isoformat(), "strikes": 11, "analytics": "true"}

    def fetch() -> dict[str, Any]:
        r = api.client.get(f"{PREFIX}/option-chain/NIFTY", params=params, headers=h)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def ready() -> bool:
        a = fetch()["analytics"]
        return a is not None and a["atm_iv"] is not None and a["forward"] is not None

    assert api.wait(ready, 20), fetch()["analytics"]
    body = fetch()
    assert OptionChainResponse.model_validate(body).model_dump(mode="json") == body
    chain = body["analytics"]
    assert chain["forward_source"] in ("future", "parity")
    assert chain["atm_iv"] == pytest.approx(0.14, abs=0.01)
    assert chain["max_pain_strikes"] > 0
    assert chain["max_pain"] in {row["strike"] for row in body["rows"]}
    assert chain["years_to_expiry"] > 0
    atm = next(row for row in body["rows"] if row["strike"] == chain["atm_strike"])
    for side, sign in (("ce", 1), ("pe", -1)):
        leg = atm[side]["analytics"]
        assert leg["reason"] == "OK"
        assert leg["iv"] == pytest.approx(0.14, abs=0.01)
        assert 0.3 < sign * leg["delta"] < 0.7
        assert leg["gamma"] > 0
        assert leg["vega"] > 0
        assert leg["theta"] < 0
    plain = api.client.get(
        f"{PREFIX}/option-chain/NIFTY", params={**params, "analytics": "false"}, headers=h
    ).json()
    assert plain["analytics"] is None
    assert plain["rows"][0]["ce"]["analytics"] is None
    engine = api.service.analytics
    before = engine.computed
    for _ in range(30):  # thirty readers: the rendered chain is shared (and the engine reuses its work)
        fetch()
    assert engine.computed - before < 30
