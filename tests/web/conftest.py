"""A whole tickgate behind a real uvicorn server, and a real headless Chromium driven by Playwright.

The simulator runs on its own thread and loop, the server (and the service its lifespan starts) on
another; the browser is Debian's ``chromium`` (``TICKGATE_CHROMIUM`` overrides the path), never a
Playwright-downloaded one. Limits are tiny so that capacity, and an eviction, are a few clicks away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from pydantic import SecretStr

import pinned
from tickgate.api import create_app
from tickgate.config import ApiSettings, FeedClientSettings, FeedLimits, Settings
from tickgate.dhan.client import Credentials
from tickgate.instruments import InstrumentRegistry
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator

TODAY = pinned.TODAY
ADMIN_KEY = "web-admin-key-7c1e4b2a90"
CHROMIUM = os.environ.get("TICKGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# 5 connections × 30 = 150 instruments: Tier B (NIFTY, 11 strikes) holds 23, a stock chain with the
# default 25 strikes is 51 keys, so the third chain a user adds must evict the least recently used one.
LIMITS = FeedLimits(sockets_per_account=5, instruments_per_socket=30, instruments_per_message=30)
TIER_B = """
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
    """An event loop in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def simulator(master: Path, registry: InstrumentRegistry) -> Iterator[Simulator]:
    runner = ThreadLoop("web-sim")

    async def start() -> Simulator:
        sim = Simulator(universe=RegistryUniverse(registry, TODAY), master=master, today=TODAY, rate=4_000.0)
        await sim.start()
        return sim

    sim = runner.run(start())
    yield sim
    runner.run(sim.close())
    runner.close()


def web_settings(tmp: Path) -> Settings:
    feed = FeedClientSettings(
        open_interval_s=0.01,
        backoff_initial_s=0.1,
        backoff_cap_s=0.5,
        ping_interval_s=2.0,
        ping_timeout_s=5.0,
        close_timeout_s=0.5,
        startup_barrier_s=0.5,
    )
    tier_b = tmp / "tier_b.toml"
    tier_b.write_text(TIER_B)
    settings = Settings(
        limits=LIMITS,
        feed=feed,
        data_dir=tmp,
        db_url=f"sqlite+aiosqlite:///{tmp / 'tickgate.db'}",
        admin_key=SecretStr(ADMIN_KEY),
        api=ApiSettings(push_max_hz=10.0),
    )
    return settings.model_copy(update={"chains": settings.chains.model_copy(update={"tier_b": tier_b})})


@dataclass
class Live:
    """The running server: its base URL, the service, and a way to run coroutines on the server's loop."""

    url: str
    service: TickgateService
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def new_user(self, name: str) -> str:
        _user, key = self.call(self.service.store.users.create(name))
        return key


@contextlib.contextmanager
def serving(service: TickgateService) -> Iterator[Live]:
    """``service`` behind a real uvicorn on 127.0.0.1:<free port>, in a thread of its own, its feed up."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_config=None, lifespan="on")
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    while not service.feed.all_up() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.feed.all_up(), "feed connections never came up"
    try:
        yield Live(f"http://127.0.0.1:{port}", service, loop)
    finally:
        server.should_exit = True
        thread.join(15)
        loop.close()


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, registry: InstrumentRegistry
) -> Iterator[Live]:
    service = TickgateService(
        web_settings(tmp_path_factory.mktemp("web")),
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=simulator.url,
        registry=registry,
        scheduler=False,
    )
    with serving(service) as running:
        yield running


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if path is None:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (.ci/run does), "
            "or set TICKGATE_CHROMIUM; `playwright install` is never used"
        )
    return path
