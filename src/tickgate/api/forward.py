"""An API replica's requests that only the active gateway can answer, forwarded over the broker (issue 20).

A replica answers from its own state what it holds: the registry, the quotes and analytics it follows,
the plan digest, and users' rows in PostgreSQL (instrument search, option chains, quotes, watchlists, the
audit log, the push channel, the dashboard). Everything else changes the plan or describes the sockets,
which only the gateway holds: every write (watchlist add and remove, admin actions) and the status reads
(``/subscriptions``, ``/ws/status``, ``/health``, ``/admin/planner``, ``/admin/stats``). Those go to the
gateway whole, as an ``http`` command (:mod:`tickgate.api.commands`), and its answer comes back byte for
byte: the same validation, the same errors, the same body as a request to the gateway itself.

A write carries an idempotency key: the caller's ``Idempotency-Key`` header when it sends one (so a
client's own retry is safe too), else one made here for the request, kept over the command's retries. A
gateway that dies after adding but before answering is then answered, after failover, with the first
answer. No gateway answering within the retries is a 503 that says so.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tickgate.api.commands import CommandClient, CommandTimeoutError

log = logging.getLogger(__name__)

PREFIX = "/api/v2"
# Reads that describe the gateway's sockets and plan in detail: only the gateway can answer them.
GATEWAY_READS = re.compile(r"^/api/v2/(subscriptions|ws/status|health|admin/planner|admin/stats)/?$")
PASSED_HEADERS = (b"x-api-key", b"content-type", b"idempotency-key")
MAX_BODY = 1024 * 1024


def forwarded(method: str, path: str) -> bool:
    """Whether a replica sends this request to the gateway (see the module docstring)."""
    if not path.startswith(PREFIX):
        return False
    if method in ("GET", "HEAD", "OPTIONS"):
        return GATEWAY_READS.match(path) is not None
    return True


class GatewayForward:
    """ASGI middleware of a replica: forwarded requests go to the gateway, the rest to the app."""

    def __init__(self, app: ASGIApp, client: Callable[[], CommandClient | None]) -> None:
        self.app = app
        self.client = client  # the replica's, once it has started
        self.forwarded = self.unanswered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not forwarded(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _answer(send, 413, {"error": "too_large", "message": "request body over 1 MiB"})
                return
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in PASSED_HEADERS}
        write = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        key = headers.get("idempotency-key") if write else ""
        args = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "body": base64.b64encode(body).decode(),
        }
        self.forwarded += 1
        client = self.client()
        if client is None:
            await _answer(send, 503, {"error": "not_ready", "message": "the replica is starting"})
            return
        try:
            status, answer = await client.call("http", None, args, key=key)
        except CommandTimeoutError as exc:
            self.unanswered += 1
            await _answer(send, 503, {"error": "gateway_unavailable", "message": str(exc)})
            return
        if not isinstance(answer, dict) or "body" not in answer:  # a refusal of the command itself
            await _answer(send, status, answer)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", str(answer.get("content_type")).encode("latin-1"))],
            }
        )
        await send({"type": "http.response.body", "body": base64.b64decode(answer["body"])})


async def _answer(send: Send, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})
