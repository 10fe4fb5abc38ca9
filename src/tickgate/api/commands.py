"""Users' changes sent from an API replica to the active gateway over the broker (issue 20): request/reply
with a timeout, each carrying an idempotency key.

Why the key: during a failover a replica's request may reach the old gateway just before it dies, or the
answer may be lost on the way back; the replica cannot tell and asks again. The gateway keeps each key's
first answer (``store.commands``, PostgreSQL) and answers a repeat with it, so a retry never adds a chain
twice. What a command returns is exactly what the same REST call on the gateway returns: the gateway runs
the route's own function (:func:`tickgate.api.routes.add_entry` …) and the replica relays status and body.

The message: JSON ``{"key", "op", "user": {"user_id", "name", "is_admin"}, "args"}``; the answer: JSON
``{"status", "body"}``. Only the gateway holding the lease subscribes, so a standby never answers.

Two more ops carry what an API replica cannot answer itself (:mod:`tickgate.api.forward`): ``http`` is a
whole REST request (method, path, query, the caller's key and body), run through the gateway's own app in
process, so its answer is byte for byte the gateway's; ``touch`` carries the chains the replica's users
looked at (the LRU lives in the gateway's planner). A command without a key (a read, a touch) is not
recorded: running it twice changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tickgate.api.auth import Principal
from tickgate.api.errors import KNOWN_ERRORS, known_error
from tickgate.api.models import WatchlistAdd, WatchlistRemoveResponse

if TYPE_CHECKING:
    import httpx

    from tickgate.service import TickgateService

log = logging.getLogger(__name__)

COMMANDS = "tg.commands"
Handler = Callable[["TickgateService", Principal, dict[str, Any]], Awaitable[Any]]


class CommandTimeoutError(TimeoutError):
    """No gateway answered in time, after every retry (none holds the lease, or the broker is away)."""


async def _watchlist_add(svc: TickgateService, user: Principal, args: dict[str, Any]) -> Any:
    from tickgate.api.routes import add_entry

    body = WatchlistAdd.model_validate(args)
    return await add_entry(svc, user, body.symbol, body)


async def _watchlist_remove(svc: TickgateService, user: Principal, args: dict[str, Any]) -> Any:
    from tickgate.api.routes import entry_out

    removed = await svc.watchlists.remove(user.user_id, int(args["watchlist_id"]))
    return WatchlistRemoveResponse(removed=entry_out(removed))


OPS: dict[str, Handler] = {"watchlist.add": _watchlist_add, "watchlist.remove": _watchlist_remove}


class CommandServer:
    """The gateway's side: runs each command once per key and answers (see the module docstring)."""

    def __init__(self, service: TickgateService, nc: Any, *, prefix: str = "", app: Any = None) -> None:
        self.service = service
        self._nc = nc
        self._app = app  # the gateway's ASGI app: what an ``http`` command runs through
        self._http_client: httpx.AsyncClient | None = None  # over the app, made at the first ``http`` command
        self.subject = prefix + COMMANDS
        self._sub: Any = None
        self.answered = self.repeats = self.failures = 0
        self._running: dict[str, asyncio.Future[tuple[int, Any]]] = {}

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self.subject, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._http_client is not None:
            await self._http_client.aclose()
            self._http_client = None

    async def _on_request(self, msg: Any) -> None:
        try:
            request = json.loads(msg.data)
            key, op = str(request.get("key") or ""), str(request["op"])
            user = Principal(**(request.get("user") or {"user_id": 0, "name": "", "is_admin": False}))
            args = dict(request.get("args") or {})
        except (ValueError, KeyError, TypeError) as exc:
            await msg.respond(json.dumps({"status": 400, "body": {"error": f"bad command: {exc}"}}).encode())
            return
        status, body = await self.handle(key, op, user, args)
        await msg.respond(json.dumps({"status": status, "body": body}).encode())

    async def handle(self, key: str, op: str, user: Principal, args: dict[str, Any]) -> tuple[int, Any]:
        """Run ``op`` once for ``key``: a repeat (even while the first is still running) gets its answer.
        Without a key it simply runs (a read)."""
        store = self.service.store
        if not key:
            return await self._run(op, user, args)
        running = self._running.get(key)
        if running is not None:
            self.repeats += 1
            return await asyncio.shield(running)
        kept = await store.commands.answer(key)
        if kept is not None:
            self.repeats += 1
            return kept
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            status, body = await self._run(op, user, args)
            await store.commands.record(key, op, status, body)
            self.answered += 1
            future.set_result((status, body))
            return status, body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a repeat waiting on it re-raises, nobody else must
            raise
        finally:
            del self._running[key]

    async def _run(self, op: str, user: Principal, args: dict[str, Any]) -> tuple[int, Any]:
        if op == "http":
            return await self._http(args)
        if op == "touch":
            return await self._touch(args)
        handler = OPS.get(op)
        if handler is None:
            return 400, {"error": f"unknown command {op!r}"}
        try:
            result = await handler(self.service, user, args)
        except KNOWN_ERRORS as exc:
            response = known_error(exc)
            return response.status_code, json.loads(bytes(response.body))
        except ValidationError as exc:
            return 400, {"error": "invalid_input", "message": str(exc.errors()[0].get("msg", "invalid"))}
        except Exception:
            self.failures += 1
            log.exception("command %s failed", op)
            return 500, {"error": "internal", "message": f"the gateway failed to run {op}"}
        return 200, result.model_dump(mode="json") if hasattr(result, "model_dump") else result

    async def _http(self, args: dict[str, Any]) -> tuple[int, Any]:
        """A replica's REST request, run through this gateway's app (auth, validation, errors and all)."""
        import httpx

        if self._app is None:
            return 501, {"error": "not_forwardable", "message": "this gateway serves no app"}
        if self._http_client is None:  # one client for every forwarded request, not one each
            transport = httpx.ASGITransport(app=self._app)
            self._http_client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
        response = await self._http_client.request(
            str(args["method"]),
            str(args["path"]),
            params=str(args.get("query") or ""),
            headers={str(k): str(v) for k, v in (args.get("headers") or {}).items()},
            content=base64.b64decode(args.get("body") or ""),
        )
        return response.status_code, {
            "content_type": response.headers.get("content-type", "application/json"),
            "body": base64.b64encode(response.content).decode(),
        }

    async def _touch(self, args: dict[str, Any]) -> tuple[int, Any]:
        """Chains a replica's users looked at: each a use, as if looked at here."""
        svc = self.service
        touched = 0
        for group in args.get("groups") or ():
            if svc.planner.has_group(str(group)):
                wid = await svc.watchlists.entry_id(str(group))
                if wid is not None:
                    svc.watchlists.touch(str(group), wid)
                    touched += 1
        return 200, {"touched": touched}


class CommandClient:
    """A replica's side: send a command, wait for the answer, retry with the same key until ``patience_s``
    has passed (a failover: no gateway subscribed for a few seconds, or one that died holding it)."""

    def __init__(
        self, nc: Any, *, prefix: str = "", timeout_s: float = 3.0, patience_s: float = 20.0
    ) -> None:
        self._nc = nc
        self.subject = prefix + COMMANDS
        self.timeout_s = timeout_s
        self.patience_s = patience_s
        self.retries = 0

    async def call(
        self, op: str, user: Principal | None, args: dict[str, Any], key: str | None = None
    ) -> tuple[int, Any]:
        """(status, body) as the gateway's REST route would answer; :class:`CommandTimeoutError` if no
        gateway does."""
        key = uuid.uuid4().hex if key is None else key  # "": not recorded (reads)
        payload = json.dumps(
            {
                "key": key,
                "op": op,
                "user": None
                if user is None
                else {"user_id": user.user_id, "name": user.name, "is_admin": user.is_admin},
                "args": args,
            },
            default=str,
        ).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience_s
        attempt = 0
        while True:
            left = deadline - loop.time()
            try:
                reply = await self._nc.request(
                    self.subject, payload, timeout=max(0.1, min(self.timeout_s, left))
                )
            except Exception as exc:  # a timeout, or no gateway subscribed (no responders)
                pause = min(1.0, 0.2 * 2**attempt)
                if loop.time() + pause < deadline:
                    attempt += 1
                    self.retries += 1
                    await asyncio.sleep(pause)
                    continue
                raise CommandTimeoutError(
                    f"no gateway answered {op} within {self.patience_s:g} s ({attempt + 1} attempts,"
                    f" {type(exc).__name__})"
                ) from None
            answer = json.loads(reply.data)
            return int(answer["status"]), answer["body"]
