"""Commands from a replica to the gateway over the real NATS (issue 20): the answer is the REST route's,
a retry with the same idempotency key (even concurrent) never adds twice, errors keep their status and
reason, and with no gateway the replica gets a clear timeout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

import pinned
from tickgate.api.auth import Principal
from tickgate.api.commands import CommandClient, CommandServer, CommandTimeoutError
from tickgate.config import FeedClientSettings, Settings
from tickgate.dhan.client import Credentials
from tickgate.instruments import InstrumentRegistry
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator

NATS = "nats://127.0.0.1:4222"


@pytest.fixture
async def gateway(
    master: Path, registry: InstrumentRegistry, tmp_path: Path
) -> AsyncIterator[TickgateService]:
    sim = Simulator(
        universe=RegistryUniverse(registry, pinned.TODAY), master=master, today=pinned.TODAY, rate=500.0
    )
    await sim.start()
    settings = Settings(
        feed=FeedClientSettings(open_interval_s=0.01, backoff_initial_s=0.1, startup_barrier_s=0.3),
        data_dir=tmp_path,
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
    )
    svc = TickgateService(
        settings,
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=sim.url,
        registry=registry,
        clock=pinned.flowing(pinned.CLOCK_START),
        scheduler=False,
    )
    await svc.start()
    yield svc
    await svc.stop()
    await sim.close()


async def test_commands_run_once_per_key_and_answer_like_the_route(gateway: TickgateService) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    server_nc, client_nc = await nats.connect(NATS), await nats.connect(NATS)
    server = CommandServer(gateway, server_nc, prefix=prefix)
    await server.start()
    client = CommandClient(client_nc, prefix=prefix)
    user, _key = await gateway.store.users.create("replica-user")
    who = Principal(user.id, user.name, user.is_admin)
    try:
        status, body = await client.call(
            "watchlist.add", who, {"symbol": "RELIANCE", "strikes": 5}, key="k-1"
        )
        assert status == 200, body
        assert body["entry"]["symbol"] == "RELIANCE"
        again = await client.call("watchlist.add", who, {"symbol": "RELIANCE", "strikes": 5}, key="k-1")
        assert again == (status, body), "a retry with the same key must get the first answer"
        twice = await asyncio.gather(
            *(
                client.call("watchlist.add", who, {"symbol": "SBIN", "strikes": 3}, key="k-2")
                for _ in range(3)
            )
        )
        assert len({str(t) for t in twice}) == 1
        rows = await gateway.store.watchlists.rows(user.id)
        assert sorted(r.symbol for r in rows) == ["RELIANCE", "SBIN"], "a repeated command added twice"
        assert server.answered == 2
        assert server.repeats == 3

        status, body = await client.call("watchlist.add", who, {"symbol": "NOSUCHSYMBOL"})
        assert status == 404
        assert "NOSUCHSYMBOL" in str(body)
        status, body = await client.call("watchlist.add", who, {"symbol": "RELIANCE", "strikes": -1})
        assert status == 400
        wid = next(r.id for r in rows if r.symbol == "SBIN")
        status, body = await client.call("watchlist.remove", who, {"watchlist_id": wid})
        assert (status, body["removed"]["symbol"]) == (200, "SBIN")
        status, _ = await client.call("watchlist.remove", who, {"watchlist_id": wid})
        assert status == 404
        status, body = await client.call("no.such.op", who, {})
        assert status == 400

        nobody = CommandClient(client_nc, prefix=prefix + "empty.", timeout_s=0.2, patience_s=0.5)
        with pytest.raises(CommandTimeoutError, match=r"no gateway answered watchlist\.add within 0\.5 s"):
            await nobody.call("watchlist.add", who, {"symbol": "RELIANCE"})
        assert nobody.retries == 1
    finally:
        await server.stop()
        await server_nc.close()
        await client_nc.close()
