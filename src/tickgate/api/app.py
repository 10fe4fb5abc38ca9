"""The FastAPI app: REST under ``/api/v2``, the push WebSocket, ``/metrics``, the dashboard at ``/``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickgate import __version__
from tickgate.api import errors
from tickgate.api.auth import Authenticator
from tickgate.api.fastpath import FastPaths
from tickgate.api.logs import register_secret
from tickgate.api.metrics import EventCounter, Metrics, route_of
from tickgate.api.push import PushHub
from tickgate.api.push import router as push_router
from tickgate.api.render import ChainCache, QuoteRenderer
from tickgate.api.routes import router as rest_router
from tickgate.config import Settings, get_settings
from tickgate.service import TickgateService

PREFIX = "/api/v2"
STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"

access_log = structlog.get_logger("tickgate.api.access")


class AccessMiddleware:
    """One log line and one latency observation per HTTP request. Logs the path only — never the query
    string or headers, where API keys travel."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = route_of(Request(scope))
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(elapsed)
            state: Any = scope.get("state") or {}
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(elapsed * 1000, 2),
                user=state.get("user") if isinstance(state, dict) else None,
            )


def create_app(service: TickgateService | None = None, settings: Settings | None = None) -> FastAPI:
    """The app over ``service`` (built from ``settings`` if not given). The lifespan starts the service if
    it is not running yet, and stops it on shutdown only if it started it — so a caller (``tickgate demo``,
    tests) may hand in a running service and keep ownership of it."""
    if service is None:
        service = TickgateService(settings or get_settings())
    settings = service.settings
    register_secret(
        settings.admin_key.get_secret_value() if settings.admin_key else None,
        settings.dhan_access_token.get_secret_value() if settings.dhan_access_token else None,
    )
    events = EventCounter()
    events.attach(service)  # a subscriber of the service's orchestrator, from now on
    renderer = QuoteRenderer(service.quotes)
    push = PushHub(service.settings.api.push_max_hz, renderer)
    metrics = Metrics(service, events, push)
    svc = service

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        owned = svc.started_at is None
        if owned:
            await svc.start()
        try:
            yield
        finally:
            if owned:
                await svc.stop()

    app = FastAPI(
        title="tickgate",
        version=__version__,
        description="Decides which instruments flow in from the DhanHQ live market feed, keeps them flowing,"
        " serves them. Authenticate with the `X-API-Key` header.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.auth = Authenticator(service)
    app.state.push = push
    app.state.renderer = renderer
    app.state.chains = ChainCache(service.settings.api.chain_cache_s, service.clock)
    app.state.metrics = metrics
    app.state.events = events
    errors.install(app)
    app.include_router(rest_router, prefix=PREFIX)
    app.include_router(push_router, prefix=PREFIX)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return metrics.render()

    app.add_middleware(FastPaths, service=service, auth=app.state.auth, cache=app.state.chains)
    if service.replica:  # outside the fast paths: a replica's writes go to the gateway, not to its plan
        from tickgate.api.forward import GatewayForward

        app.add_middleware(GatewayForward, client=lambda: getattr(svc, "commands", None))
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    app.add_middleware(AccessMiddleware, metrics=metrics)
    if STATIC_DIR.is_dir():
        _serve_dashboard(app)
    return app


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How tickgate is served (``tickgate serve`` and the demo): one worker, our logging, the push limits.

    permessage-deflate is off unless ``api.push_compression``: every push message is compressed per client
    (no shared context), which on a 2-core box costs more CPU than the loopback/LAN bandwidth it saves."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "ws_max_size": settings.api.max_ws_message_bytes,
        "ws_per_message_deflate": settings.api.push_compression,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def _serve_dashboard(app: FastAPI) -> None:
    """The dashboard's few files as explicit GET routes, not a catch-all mount at ``/``: a mount would
    answer a wrong-method API call (``GET`` on a ``POST`` route) with its own 404 instead of the 405 the
    API documents."""
    files = {"/": STATIC_DIR / "index.html"}
    # Vendored libraries live under vendor/<name-version>/ with their licences (served too).
    files.update(
        {f"/{p.relative_to(STATIC_DIR).as_posix()}": p for p in STATIC_DIR.rglob("*") if p.is_file()}
    )
    for path, file in files.items():

        async def serve(file: Path = file) -> FileResponse:
            return FileResponse(file)

        app.add_api_route(path, serve, methods=["GET"], include_in_schema=False, name=f"web:{path}")
