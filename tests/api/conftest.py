"""The API over a whole service: simulator (own thread and loop), generated master, SQLite in tmp.

The app runs in Starlette's TestClient (its lifespan starts the service on the client's event loop) or in a
real uvicorn server on 127.0.0.1:<free port> (push over a real WebSocket, schemathesis over real HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

import pinned
from tickgate.api import create_app
from tickgate.config import ApiSettings, FeedClientSettings, FeedLimits, Settings
from tickgate.dhan.client import Credentials
from tickgate.instruments import InstrumentRegistry
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator

TODAY = pinned.TODAY
ADMIN_KEY = "test-admin-key-5f0c9a1d2e"
PREFIX = "/api/v2"

SMALL_TIER_B = """
[defaults]
mode = "quote"
strikes = 11

[[options]]
symbol = "NIFTY"
exchange = "NSE"
expiries = "next 1 weekly"
"""

T = TypeVar("T")


class ThreadLoop:
    """An event loop in a daemon thread: runs things that must outlive one test's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="sim-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def simulator(master: Path, registry: InstrumentRegistry) -> Iterator[Simulator]:
    runner = ThreadLoop()

    async def start() -> Simulator:
        sim = Simulator(universe=RegistryUniverse(registry, TODAY), master=master, today=TODAY, rate=4_000.0)
        await sim.start()
        return sim

    sim = runner.run(start())
    yield sim
    runner.run(sim.close())
    runner.close()


def api_settings(
    tmp: Path, *, limits: FeedLimits | None = None, api: ApiSettings | None = None, tier_b: bool = True
) -> Settings:
    feed = FeedClientSettings(
        open_interval_s=0.01,
        backoff_initial_s=0.1,
        backoff_cap_s=0.5,
        ping_interval_s=2.0,
        ping_timeout_s=5.0,
        close_timeout_s=0.5,
        startup_barrier_s=0.5,
    )
    settings = Settings(
        limits=limits or FeedLimits(),
        feed=feed,
        data_dir=tmp,
        db_url=f"sqlite+aiosqlite:///{tmp / 'tickgate.db'}",
        admin_key=SecretStr(ADMIN_KEY),
        api=api or ApiSettings(push_max_hz=20.0, cors_origins=("http://dash.example",)),
    )
    if tier_b:
        path = tmp / "tier_b.toml"
        path.write_text(SMALL_TIER_B)
        settings = settings.model_copy(update={"chains": settings.chains.model_copy(update={"tier_b": path})})
    return settings


def build_service(settings: Settings, simulator: Simulator, registry: InstrumentRegistry) -> TickgateService:
    """A service not started yet: the app's lifespan starts it on the app's own loop."""
    return TickgateService(
        settings,
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=simulator.url,
        registry=registry,
        scheduler=False,
    )


@dataclass
class Api:
    """A running app in a TestClient, plus helpers to reach the service on the app's loop."""

    client: TestClient
    app: FastAPI
    service: TickgateService

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        portal = self.client.portal
        assert portal is not None
        return portal.call(functools.partial(fn, *args, **kwargs))

    def user(self, name: str, *, admin: bool = False) -> dict[str, str]:
        _user, key = self.call(self.service.store.users.create, name, admin=admin)
        return {"X-API-Key": key}

    @property
    def admin(self) -> dict[str, str]:
        return {"X-API-Key": ADMIN_KEY}

    def wait(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()


@contextlib.contextmanager
def running_api(settings: Settings, simulator: Simulator, registry: InstrumentRegistry) -> Iterator[Api]:
    service = build_service(settings, simulator, registry)
    app = create_app(service)
    with TestClient(app) as client:
        api = Api(client, app, service)
        assert api.wait(service.feed.all_up), "feed connections never came up"
        yield api


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, registry: InstrumentRegistry
) -> Iterator[Api]:
    """One app for a whole test module (start-up costs a second); tests use their own users."""
    with running_api(api_settings(tmp_path_factory.mktemp("api")), simulator, registry) as running:
        yield running
