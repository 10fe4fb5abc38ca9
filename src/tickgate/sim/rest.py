"""Dhan's REST market quote, as the simulator answers it: ``POST /v2/marketfeed/ltp``, ``/ohlc``, ``/quote``.

Pure request handling (the HTTP shell is :mod:`tickgate.sim.http`): authentication by the ``access-token``
and ``client-id`` headers against the same tokens as the feed, Dhan's request body (``{"NSE_FNO": [49081],
"IDX_I": [13]}``), its limits (``quote_instruments_per_request`` instruments a request, one request per
``1 / quote_requests_per_second`` seconds per client id, answered 429 beyond that) and its JSON: ``data``
by segment name, then security id as a string; ``status: "success"``. Errors carry Dhan's
``errorType`` / ``errorCode`` / ``errorMessage``.

Values come from the simulator's market (:meth:`tickgate.sim.server.Simulator.rest_quotes`): an instrument
that has not traded today shows the previous close as its last price, as Dhan's would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.sim.core import TokenBook

ENDPOINTS = {"/v2/marketfeed/ltp": "ltp", "/v2/marketfeed/ohlc": "ohlc", "/v2/marketfeed/quote": "quote"}

QuoteValues = Mapping[str, Any]
"""One instrument's market as the simulator holds it: ltp, ltq, ltt, open, high, low, prev_close, volume,
atp, oi, oi_high, oi_low, total_buy_qty, total_sell_qty, depth (5 × (bid qty, ask qty, bid orders, ask
orders, bid price, ask price))."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    client_id: str = ""
    instruments: int = 0

    def json(self) -> bytes:
        return msgspec.json.encode(self.body)  # compact, like json.dumps with tight separators, but faster


def dhan_error(status: int, kind: str, code: str, message: str) -> Answer:
    return Answer(status, {"errorType": kind, "errorCode": code, "errorMessage": message})


@dataclass(slots=True)
class RequestPacer:
    """At most ``per_second`` requests a second per client id (Dhan's market-quote limit)."""

    per_second: float
    _last: dict[str, float] = field(default_factory=dict)

    def allow(self, client_id: str, now: float) -> bool:
        last = self._last.get(client_id)
        if last is not None and now - last < 1.0 / self.per_second:
            return False
        self._last[client_id] = now
        return True


class QuoteStats:
    """What the market quote answered (the control API's ``rest``); ``max_per_second`` is the most requests
    admitted within one second, which Dhan's limit says is one."""

    def __init__(self) -> None:
        self.requests = self.answered = self.instruments = self.rate_limited = self.refused = 0
        self.max_per_second = 0
        self._window: list[float] = []

    def admitted(self, now: float, instruments: int) -> None:
        self.answered += 1
        self.instruments += instruments
        self._window = [t for t in self._window if now - t < 1.0] + [now]
        self.max_per_second = max(self.max_per_second, len(self._window))

    def to_json(self) -> dict[str, int]:
        return {name: value for name, value in vars(self).items() if not name.startswith("_")}


class MarketQuoteApi:
    """Answers one market-quote request (see the module docstring)."""

    def __init__(
        self,
        tokens: TokenBook,
        limits: FeedLimits,
        quotes: Callable[[Sequence[InstrumentKey]], list[QuoteValues | None]],
    ) -> None:
        self._tokens = tokens
        self._limits = limits
        self._quotes = quotes
        self.pacer = RequestPacer(limits.quote_requests_per_second)
        self.stats = QuoteStats()

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes, now: float) -> Answer:
        self.stats.requests += 1
        answer = self._answer(method, path, headers, body, now)
        if answer.status == 429:
            self.stats.rate_limited += 1
        elif answer.status != 200:
            self.stats.refused += 1
        return answer

    def _answer(self, method: str, path: str, headers: Mapping[str, str], body: bytes, now: float) -> Answer:
        kind = ENDPOINTS.get(path)
        if kind is None:
            return dhan_error(404, "Input_Exception", "DH-905", f"no such endpoint {path}")
        if method != "POST":
            return dhan_error(405, "Input_Exception", "DH-905", f"{path} takes POST")
        token, client_id = headers.get("access-token", ""), headers.get("client-id", "")
        if token in self._tokens.expired:
            return dhan_error(401, "Invalid_Authentication", "DH-901", "access token expired")
        owner = self._tokens.valid.get(token)
        if owner is None or owner != client_id:
            return dhan_error(401, "Invalid_Authentication", "DH-901", "client id or access token invalid")
        try:
            keys = _parse_body(body)
        except ValueError as exc:
            return dhan_error(400, "Input_Exception", "DH-905", str(exc))
        limit = self._limits.quote_instruments_per_request
        if len(keys) > limit:
            return dhan_error(400, "Input_Exception", "DH-905", f"{len(keys)} instruments: at most {limit}")
        if not self.pacer.allow(client_id, now):
            return dhan_error(
                429, "Rate_Limit", "DH-904", "Too many requests: market quote is 1 request/second"
            )
        self.stats.admitted(now, len(keys))
        data: dict[str, dict[str, Any]] = {}
        for key, values in zip(keys, self._quotes(keys), strict=True):
            if values is not None:
                data.setdefault(key.segment.name, {})[str(key.security_id)] = _render(kind, values)
        return Answer(200, {"data": data, "status": "success"}, client_id, len(keys))


def _parse_body(body: bytes) -> list[InstrumentKey]:
    try:
        request = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc.msg}") from None
    if not isinstance(request, dict):
        raise ValueError('body must be {"<segment>": [security ids]}')
    keys: list[InstrumentKey] = []
    for name, ids in request.items():
        segment = ExchangeSegment.from_name(str(name))
        if not isinstance(ids, list):
            raise ValueError(f"{name}: a list of security ids")
        for sid in ids:
            if isinstance(sid, bool) or not isinstance(sid, int | str) or not str(sid).isdigit():
                raise ValueError(f"{name}: bad security id {sid!r}")
            keys.append(InstrumentKey(segment, int(sid)))
    return list(dict.fromkeys(keys))


def _render(kind: str, v: QuoteValues) -> dict[str, Any]:
    out: dict[str, Any] = {"last_price": v["ltp"]}
    if kind == "ltp":
        return out
    out["ohlc"] = {"open": v["open"], "close": v["prev_close"], "high": v["high"], "low": v["low"]}
    if kind == "ohlc":
        return out
    depth = v["depth"]
    out.update(
        average_price=v["atp"],
        buy_quantity=v["total_buy_qty"],
        sell_quantity=v["total_sell_qty"],
        depth={
            "buy": [{"quantity": lvl[0], "orders": lvl[2], "price": lvl[4]} for lvl in depth],
            "sell": [{"quantity": lvl[1], "orders": lvl[3], "price": lvl[5]} for lvl in depth],
        },
        last_quantity=v["ltq"],
        last_trade_time=v["ltt_text"],
        lower_circuit_limit=round(v["prev_close"] * 0.8, 2),
        upper_circuit_limit=round(v["prev_close"] * 1.2, 2),
        net_change=round(v["ltp"] - v["prev_close"], 2) if v["prev_close"] else 0.0,
        oi=v["oi"],
        oi_day_high=v["oi_high"],
        oi_day_low=v["oi_low"],
        volume=v["volume"],
    )
    return out
