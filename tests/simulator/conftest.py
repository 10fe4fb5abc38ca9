"""Fixtures for the simulator tests: a live simulator on an ephemeral loopback port, and raw clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import pinned
from tickgate.sim import Simulator, StaticUniverse

from .helpers import FAST, REAL_LIMITS, FeedClient


@pytest.fixture
def universe() -> StaticUniverse:
    return StaticUniverse.sample(pinned.TODAY)


@pytest.fixture
async def sim(universe: StaticUniverse) -> AsyncIterator[Simulator]:
    async with Simulator(universe=universe, rate=3_000, limits=REAL_LIMITS, **FAST) as simulator:  # type: ignore[arg-type]
        yield simulator


@pytest.fixture
async def clients() -> AsyncIterator[list[FeedClient]]:
    """Collects clients a test opens so they are closed even when it fails."""
    opened: list[FeedClient] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
def open_client(clients: list[FeedClient]) -> Callable[..., Any]:
    async def _open(url: str, **kwargs: Any) -> FeedClient:
        client = await FeedClient.open(url, **kwargs)
        clients.append(client)
        return client

    return _open
