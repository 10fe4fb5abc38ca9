"""Bad input, filling the gaps the owning suites leave: admin endpoints refused *without side effects*,
push-channel garbage over a real uvicorn WebSocket, malformed scrip masters (hand-made and mutated), and
the decoder garbage fuzz with its frames counted (``make bad-input`` runs the long versions)."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from api.conftest import ADMIN_KEY, PREFIX, Api, api, simulator
from api.test_push import live
from dhan.test_decoding import test_garbage_never_raises_and_both_decoders_agree as garbage_property
from tickgate.instruments import InstrumentRegistry, MasterFormatError

__all__ = ["api", "live", "simulator"]  # fixtures of the API suite, imported so pytest finds them here

pytestmark = pytest.mark.timeout(600)

FUZZ = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
FUZZ_MIN_FRAMES = 1_000_000


# -- unauthenticated / unprivileged admin calls --------------------------------------------------------------

ADMIN_CALLS = [
    ("POST", "/admin/cleanup", {}),
    ("POST", "/admin/cleanup", {"session": "NSE_BSE"}),
    ("POST", "/admin/rebalance", {}),
    ("GET", "/admin/stats", {}),
    ("GET", "/admin/audit", {"limit": "5"}),
    ("POST", "/admin/tier-b/reload", {}),
]


def _state(api: Api, user_headers: dict[str, str]) -> dict[str, Any]:
    svc = api.service
    return {
        "watchlist": api.client.get(f"{PREFIX}/watchlist", headers=user_headers).json()["entries"],
        "plan": {c: dict(v) for c, v in svc.planner.actual().items()},
        "tier_b": None if svc.tier_b is None else (svc.tier_b.total, str(svc.tier_b.source)),
        "eod_runs": len(svc.eod_runs),
        "requests_sent": svc.feed.metrics.requests_sent,
        "admin_user": api.call(svc.store.users.by_name, "admin") is not None,
    }


def test_admin_endpoints_refuse_missing_wrong_and_user_keys_without_side_effects(api: Api) -> None:
    """Every admin endpoint (cleanup would delete every watchlist, rebalance moves subscriptions, reload
    replaces Tier B) answers 401 without a valid key and 403 for a user's key — and does nothing: the
    user's watchlist, the plan, Tier B, the EOD record and the feed's request count are unchanged and no
    audit entry is written. Near misses of the admin key and the key in the query string (only the push
    WebSocket reads ``?key=``) are refused too."""
    user = api.user("not-an-admin")
    added = api.client.post(f"{PREFIX}/watchlist", json={"symbol": "INFY", "strikes": 3}, headers=user)
    assert added.status_code == 200, added.text
    assert api.wait(lambda: api.service.planner.suspended() == [])
    before = _state(api, user)
    audit_before = api.call(api.service.store.audit.count)
    unauthenticated: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}),
        ({"X-API-Key": ""}, {}),
        ({"X-API-Key": "nope"}, {}),
        ({"X-API-Key": ADMIN_KEY[:-1]}, {}),
        ({"X-API-Key": ADMIN_KEY + "x"}, {}),
        ({"X-API-Key": ADMIN_KEY.upper()}, {}),
        ({"X-API-Key": "k" * 5000}, {}),
        ({"Authorization": f"Bearer {ADMIN_KEY}"}, {}),
        ({}, {"key": ADMIN_KEY}),
    ]
    for method, path, params in ADMIN_CALLS:
        for headers, query in unauthenticated:
            r = api.client.request(method, PREFIX + path, headers=headers, params={**params, **query})
            assert r.status_code == 401, (method, path, headers.keys(), query.keys(), r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "ApiKey"
        r = api.client.request(method, PREFIX + path, headers=user, params=params)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    api.call(api.service.store.writer.flush, 30)
    assert _state(api, user) == before
    assert api.call(api.service.store.audit.count) == audit_before, "a refused admin call left an audit trail"
    # the control: the same calls with the admin key do act
    assert api.client.post(f"{PREFIX}/admin/cleanup", headers=api.admin).status_code == 200
    assert api.client.get(f"{PREFIX}/watchlist", headers=user).json()["entries"] == []


# -- push channel: oversized and malformed messages over a real WebSocket ------------------------------------


async def _send_and_close_code(base: str, key: str, message: str | bytes) -> tuple[int | None, str]:
    async with websockets.connect(f"ws://{base}{PREFIX}/stream?key={key}", max_size=None) as ws:
        await ws.send(message)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 20)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (None, "") if rcvd is None else (rcvd.code, rcvd.reason)


PUSH_GARBAGE: list[tuple[str, str | bytes, int, str]] = [
    ("binary garbage", bytes(range(256)) * 4, 1008, "not JSON"),
    ("invalid UTF-8 text-ish", b'{"subscribe": ["\xff\xfe"]}', 1008, "not JSON"),
    ("empty text", "", 1008, "not JSON"),
    ("JSON null", "null", 1008, "expected"),
    ("JSON number", "1e999", 1008, "expected"),
    ("empty object", "{}", 1008, "expected"),
    ("unknown op", '{"subscribe": [], "delete": ["*"]}', 1008, "expected"),
    ("keys not a list", '{"unsubscribe": {"a": 1}}', 1008, "list of strings"),
    ("non-string key", '{"subscribe": ["NSE_EQ:1", 2]}', 1008, "list of strings"),
    ("NaN keys", '{"subscribe": NaN}', 1008, "list of strings"),
]


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [pytest.param(m, c, r, id=name) for name, m, c, r in PUSH_GARBAGE],
)
def test_push_garbage_closes_with_the_right_code_over_a_real_websocket(
    live: tuple[str, Any], message: str | bytes, code: int, reason: str
) -> None:
    """Malformed messages close with 1008 and a reason naming the problem — never 1011 (internal error)
    or a hung connection — and the server keeps serving. (Oversized ones: 1009 via Starlette's
    TestClient in tests/api/test_push.py; in production uvicorn's ``ws_max_size`` enforces the limit.)"""
    base, service = live
    key = _user_key(service, f"garbage-{code}-{len(message)}-{hash(message) & 0xFFFF}")
    got, why = asyncio.run(_send_and_close_code(base, key, message))
    assert got == code, (got, why)
    assert reason in why


def test_push_deeply_nested_json_is_a_policy_close_not_an_internal_error(live: tuple[str, Any]) -> None:
    """~20k nested brackets fit in 64 KiB and make ``json.loads`` raise RecursionError, not ValueError."""
    base, service = live
    key = _user_key(service, "nested-json")
    got, why = asyncio.run(
        _send_and_close_code(base, key, '{"subscribe": ' + "[" * 30_000 + "]" * 30_000 + "}")
    )
    assert got == 1008, (got, why)


def _user_key(service: Any, name: str) -> str:
    loop: asyncio.AbstractEventLoop = service.feed._tasks[0].get_loop()
    _user, key = asyncio.run_coroutine_threadsafe(service.store.users.create(name), loop).result(10)
    return str(key)


# -- malformed scrip masters ---------------------------------------------------------------------------------


def _detailed_sample(samples_dir: Path) -> bytes:
    return (samples_dir / "detailed-nse-equity-index-2026.csv").read_bytes()


MASTER_CASES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda good: b"", "empty scrip master"),
    ("only blank lines", lambda good: b"\r\n\n  \n", "empty scrip master"),
    ("UTF-8 BOM only", lambda good: b"\xef\xbb\xbf", "empty scrip master"),
    (
        "HTML error page",
        lambda good: b"<html><body>503 Service Unavailable</body></html>",
        "not a Dhan scrip",
    ),
    ("JSON error body", lambda good: b'{"status":"failure","remarks":"rate limit"}', "not a Dhan scrip"),
    ("gzip not unpacked", gzip.compress, "not a Dhan scrip"),
    ("UTF-16 encoded", lambda good: good.decode().encode("utf-16"), "not a Dhan scrip"),
    ("NUL bytes", lambda good: b"\x00" * 4096, "not a Dhan scrip"),
    ("semicolon separated", lambda good: good.replace(b",", b";"), "not a Dhan scrip"),
    ("header only", lambda good: good.split(b"\n", 1)[0] + b"\n", "header but no data rows"),
    (
        "required column missing",
        lambda good: b"\n".join(
            b",".join(c for i, c in enumerate(line.split(b",")) if i != 4) for line in good.splitlines()[:30]
        ),
        "missing required column",
    ),
    (
        "every row cut short",
        lambda good: good.split(b"\n", 1)[0] + b"\n" + b"NSE,E\n" * 50,
        "rows unreadable",
    ),
    (
        "garbage security ids",
        lambda good: b"\n".join(
            [good.splitlines()[0]]
            + [b"NSE,E,abc" + line[line.index(b",", 6) :] for line in good.splitlines()[1:40]]
        ),
        "SECURITY_ID",
    ),
]


@pytest.mark.parametrize(("make", "problem"), [pytest.param(m, p, id=n) for n, m, p in MASTER_CASES])
def test_malformed_scrip_master_is_rejected_naming_the_problem(
    samples_dir: Path, make: Callable[[bytes], bytes], problem: str
) -> None:
    """A bad master download (an error page, a compressed or re-encoded body, a cut file, a format
    change) is rejected with :class:`MasterFormatError` saying what is wrong — never loaded half-way,
    never another exception type (the service then keeps the previous day's registry)."""
    with pytest.raises(MasterFormatError, match=problem):
        InstrumentRegistry.load(make(_detailed_sample(samples_dir)))


@pytest.mark.filterwarnings("ignore:CSV malformed")  # polars' own note on a damaged chunk
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_scrip_master_loads_or_raises_master_format_error_only(
    samples_dir: Path, data: st.DataObject
) -> None:
    """Random damage to a real master (bytes flipped, lines dropped or cut, cells replaced): the loader
    either loads it (skipping and counting bad rows) or raises :class:`MasterFormatError` — no other
    exception escapes."""
    lines = _detailed_sample(samples_dir).splitlines()[:200]
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    for _ in range(data.draw(st.integers(1, 20))):
        i = rng.randrange(len(lines))
        kind = rng.choice(["flip", "drop", "cut", "cell", "garbage"])
        line = lines[i]
        if kind == "flip" and line:
            j = rng.randrange(len(line))
            lines[i] = line[:j] + bytes([rng.randrange(256)]) + line[j + 1 :]
        elif kind == "drop":
            del lines[i]
        elif kind == "cut":
            lines[i] = line[: rng.randrange(len(line) + 1)]
        elif kind == "cell":
            cells = line.split(b",")
            cells[rng.randrange(len(cells))] = data.draw(st.binary(max_size=12))
            lines[i] = b",".join(cells)
        else:
            lines[i] = data.draw(st.binary(max_size=80))
        if not lines:
            break
    try:
        registry = InstrumentRegistry.load(b"\n".join(lines) + b"\n")
    except MasterFormatError:
        return
    assert len(registry) >= 0


# -- decoder fuzz, frames counted ----------------------------------------------------------------------------


def test_decoder_garbage_fuzz_counts_its_frames() -> None:
    """The garbage property of ``tests/dhan/test_decoding.py`` (random byte frames: no exception escapes,
    the batch and per-frame decoders agree packet for packet), run with the profile's example count and
    its frames counted. Under ``HYPOTHESIS_PROFILE=fuzz`` (``make bad-input``) it must reach 1,000,000."""
    counted = {"examples": 0, "frames": 0, "bytes": 0}
    check = garbage_property.hypothesis.inner_test  # type: ignore[attr-defined]

    @settings(max_examples=settings().max_examples, database=None)
    @given(st.lists(st.binary(max_size=400), max_size=10))
    def fuzz(frames: list[bytes]) -> None:
        counted["examples"] += 1
        counted["frames"] += len(frames)
        counted["bytes"] += sum(len(f) for f in frames)
        check(frames)

    fuzz()
    print(
        f"\ndecoder fuzz: {counted['examples']:,} examples, {counted['frames']:,} frames,"
        f" {counted['bytes']:,} bytes through decode_frame and decode_batch, 0 failures"
    )
    assert counted["frames"] > 0
    if FUZZ:
        assert counted["frames"] >= FUZZ_MIN_FRAMES, f"only {counted['frames']:,} frames fuzzed"
