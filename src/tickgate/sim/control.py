"""The simulator's plain-HTTP side, on the feed port: ``/master.csv``, the control API, refused connects.

websockets only parses GET requests, so every control action is a GET with query parameters
(``GET /control/drop?socket=oldest``); the chaos suite and the benchmarks drive a simulator in another process
through it. Each action is one of :class:`~tickgate.sim.faults.Faults`' or the server's methods.
"""

from __future__ import annotations

import email.utils
import hashlib
import http
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tickgate.dhan.protocol import InstrumentKey

if TYPE_CHECKING:
    from tickgate.sim.server import Simulator


class ControlApi:
    """``sim.http``: answers plain HTTP requests on the feed port (websockets' ``process_request``)."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        master = sim.master_bytes
        self._etag = hashlib.sha1(master).hexdigest() if master is not None else ""
        self._master_mtime = sim.clock.timestamp()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP on the feed port: ``/master.csv``, ``/control/...``; refusal of feed connections.

        websockets only parses GET requests, so every control action is a GET with query parameters."""
        path, _, query = request.path.partition("?")
        if path == "/master.csv":
            return self._master_response(request)
        if path.startswith("/control/"):
            params = {k: v[-1] for k, v in parse_qs(query).items()}
            try:
                body = self.handle(path.removeprefix("/control/"), params)
            except KeyError as exc:
                return json_response(http.HTTPStatus.NOT_FOUND, {"ok": False, "error": str(exc.args[0])})
            except (ValueError, TypeError) as exc:
                return json_response(http.HTTPStatus.BAD_REQUEST, {"ok": False, "error": str(exc)})
            return json_response(http.HTTPStatus.OK, body)
        faults = self._sim.faults
        client = parse_qs(query).get("clientId", [None])[-1]
        if time.monotonic() < faults.refuse_until or faults.blocked(client):
            self._sim.stats.refused += 1
            if faults.refuse_mode == "close" and not faults.blocked(client):
                connection.transport.abort()
            if faults.refuse_mode == "429" or faults.blocked(client):
                return json_response(
                    http.HTTPStatus.TOO_MANY_REQUESTS,
                    {"errorType": "Rate_Limit", "errorCode": "DH-904", "errorMessage": "client id blocked"},
                )
            return json_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                {"ok": False, "error": "refusing connections (fault injected)"},
            )
        return None

    def _master_response(self, request: Request) -> Response:
        master = self._sim.master_bytes
        if master is None:
            return json_response(http.HTTPStatus.NOT_FOUND, {"ok": False, "error": "no master loaded"})
        faults, stats = self._sim.faults, self._sim.stats
        if faults.master_failures > 0:
            faults.master_failures -= 1
            stats.master_failed += 1
            return json_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                {"ok": False, "error": "master unavailable (fault injected)"},
            )
        stats.master_served += 1
        etag = f'"{self._etag}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(304, "Not Modified", Headers([("ETag", etag), ("Content-Length", "0")]), b"")
        headers = Headers(
            [
                ("Content-Type", "text/csv; charset=utf-8"),
                ("Content-Length", str(len(master))),
                ("ETag", etag),
                ("Last-Modified", email.utils.formatdate(self._master_mtime, usegmt=True)),
                ("Connection", "close"),
            ]
        )
        return Response(200, "OK", headers, master)

    def handle(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One control-API action (the HTTP endpoints call this); ``KeyError`` for an unknown action."""
        sim, faults = self._sim, self._sim.faults
        selector = params.get("socket")

        def number(name: str, default: float | None = None) -> float:
            raw = params.get(name)
            if raw is None:
                if default is None:
                    raise ValueError(f"missing parameter {name!r}")
                return default
            return float(raw)

        def seconds() -> float | None:
            return float(params["seconds"]) if "seconds" in params else None

        if action == "state":
            return sim.state(
                subscriptions=params.get("subs", "1") != "0", history=params.get("history", "1") != "0"
            )
        if action == "clock":
            return {"ok": True, "clock": sim.clock.describe()}
        if action == "view":
            return {"ok": True, "view": sim.view_json()}
        if action == "journal":
            return {
                "ok": True,
                "seq": sim.journal_seq,
                "entries": sim.journal_json(int(number("since", 0))),
            }
        if action == "quote":
            key = InstrumentKey.parse(params.get("key", ""))
            return {"ok": True, "key": str(key), "values": sim.last_values(key)}
        if action == "drop":
            return {"ok": True, "sockets": faults.drop(selector)}
        if action == "disconnect":
            return {"ok": True, "sockets": faults.disconnect(selector, int(number("code", 800)))}
        if action == "corrupt":
            mode = params.get("mode", "mixed")
            if mode not in ("mixed", "garble", "truncate"):
                raise ValueError(f"corrupt mode must be mixed, garble or truncate, got {mode!r}")
            faults.corrupt(number("pct"), mode)  # type: ignore[arg-type]
            return {"ok": True, "corrupt_pct": sim.emitter.corrupt_pct, "mode": sim.emitter.corrupt_mode}
        if action == "stall":
            return {"ok": True, "sockets": faults.stall(selector, seconds())}
        if action in ("silence", "silent"):
            return {"ok": True, "sockets": faults.silence(selector, seconds())}
        if action == "resume":
            return {"ok": True, "sockets": faults.resume(selector)}
        if action == "refuse":
            # Faults.refuse checks the mode (a ValueError here is the control API's 400)
            faults.refuse(number("seconds"), params.get("mode", "503"))  # type: ignore[arg-type]
            return {"ok": True, "refusing_for": faults.refusing_for}
        if action == "foreign":
            cid = params.get("client_id") or sim.client_id
            sim.add_foreign(
                cid, int(number("count", 1)), number("seconds", 3_600.0), number("reconnect_s", 5.0)
            )
            return {"ok": True, "foreign": len(sim.foreign.get(cid, []))}
        if action == "block":
            faults.block(number("seconds"), params.get("client_id"))
            return {"ok": True, "refusing_for": faults.refusing_for}
        if action == "fail_master":
            faults.fail_master(int(number("requests")))
            return {"ok": True, "master_failures": faults.master_failures}
        if action == "expire_token":
            return {"ok": True, "sockets": faults.expire_token(params.get("client_id"))}
        if action == "set_token":
            if "token" not in params:
                raise ValueError("missing parameter 'token'")
            faults.set_token(params["token"], params.get("client_id"))
            return {"ok": True}
        if action == "rate":
            stack = params.get("stack")
            sim.set_rate(number("pps", sim.emitter.rate), int(stack) if stack is not None else None)
            return {"ok": True, "rate": sim.emitter.rate, "stack": sim.emitter.stack}
        if action == "price":
            symbol = params.get("symbol", "")
            if not sim.model.has_underlying(symbol):
                raise ValueError(f"no subscribed instrument has underlying {symbol!r}")
            sim.set_price(symbol, number("price"))
            return {"ok": True, "symbol": symbol, "price": sim.model.underlying_price(symbol)}
        if action == "inject":
            return {"ok": True, "sockets": faults.inject(selector, bytes.fromhex(params.get("hex", "")))}
        raise KeyError(f"unknown control action {action!r}")


def json_response(status: http.HTTPStatus, body: Any) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, data)


# ------------------------------------------------------------------------------------------------- CLI
