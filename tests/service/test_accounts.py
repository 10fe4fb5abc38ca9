"""Several Dhan accounts end to end (issue 19): three accounts on the simulator give 75,000, filled through
the REST API; account 2's token expires, its instruments degrade by priority (capacity is full), its
tokens are generated again from its PIN and TOTP, and the plan is restored. No client id ever holds a 6th
socket, and the simulator's limit checks hold per client id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import polars as pl
import pyotp
import pytest
from pydantic import SecretStr

import pinned
from tickgate.accounts import Account
from tickgate.api import create_app
from tickgate.instruments import InstrumentRegistry
from tickgate.orchestrator import PlanChange
from tickgate.planner import EventKind, Tier
from tickgate.service import TickgateService
from tickgate.sim import RegistryUniverse, Simulator
from waiting import until

from .conftest import NOW, SMALL_TIER_B, TODAY, service_settings

CLIENTS = ("1100000011", "1100000022", "1100000033")
TOKENS = {cid: f"sim-token-{cid}" for cid in CLIENTS}
PIN = "2468"
TOTP_SECRET = pyotp.random_base32()
PREFIX = "/api/v2"


@pytest.fixture
async def three_accounts(master: Path, registry: InstrumentRegistry) -> AsyncIterator[Simulator]:
    sim = Simulator(
        universe=RegistryUniverse(registry, TODAY),
        master=master,
        today=TODAY,
        rate=3_000.0,
        credentials=TOKENS,
        logins={CLIENTS[1]: (PIN, TOTP_SECRET)},
    )
    await sim.start()
    yield sim
    await sim.close()


def stock_chains(registry: InstrumentRegistry) -> list[tuple[str, str]]:
    rows = (
        registry.frame.filter(pl.col("instrument").cast(pl.Utf8) == "OPTSTK")
        .select(pl.col("symbol").cast(pl.Utf8), pl.col("expiry"))
        .unique()
        .sort(["expiry", "symbol"])
    )
    return [(s, e.isoformat()) for s, e in rows.iter_rows() if e >= TODAY]


def sockets_per_client(sim: Simulator) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in sim.open_sockets():
        out[record.client_id] = out.get(record.client_id, 0) + 1
    return out


def carried(sim: Simulator) -> int:
    return sum(len(s.book.subscriptions) for s in sim.live())


async def test_three_accounts_fill_75000_and_survive_a_token_expiry(
    three_accounts: Simulator, registry: InstrumentRegistry, tmp_path: Path
) -> None:
    sim = three_accounts
    tier_b = tmp_path / "tier_b.toml"
    tier_b.write_text(SMALL_TIER_B)
    settings = service_settings(tmp_path, tier_b=tier_b)
    settings = settings.model_copy(update={"feed": settings.feed.model_copy(update={"backfill": False})})
    accounts = [Account(f"acct{i + 1}", cid, SecretStr(TOKENS[cid])) for i, cid in enumerate(CLIENTS)]
    accounts[1] = Account(
        "acct2", CLIENTS[1], SecretStr(TOKENS[CLIENTS[1]]), SecretStr(PIN), SecretStr(TOTP_SECRET)
    )
    svc = TickgateService(
        settings,
        accounts=accounts,
        feed_url=sim.url,
        rest_url=sim.rest_url,
        registry=registry,
        clock=pinned.flowing(NOW),
        scheduler=False,
    )
    peak: dict[str, int] = {}

    async def watch_sockets() -> None:  # at every instant, not only at the end
        while True:
            for cid, n in sockets_per_client(sim).items():
                peak[cid] = max(peak.get(cid, 0), n)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch_sockets())
    await svc.start()
    try:
        assert svc.planner.total_capacity == 75_000
        await until(svc.feed.all_up, 20, "15 sockets up")
        app = create_app(service=svc)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            _user, key = await svc.store.users.create("desk")
            h = {"X-API-Key": key}
            chains = stock_chains(registry)
            refused = 0
            for symbol, expiry in chains:
                if svc.planner.plan_capacity().free < 150:
                    break
                r = await http.post(
                    f"{PREFIX}/watchlist",
                    json={"symbol": symbol, "expiry": expiry, "strikes": 101},
                    headers=h,
                )
                if r.status_code != 200:
                    refused += 1
                    continue
                assert not r.json()["evicted"], "an eviction before the capacity is full"
            cap = svc.planner.plan_capacity()
            assert cap.total == 75_000
            assert cap.free < 150, f"only {cap.total - cap.free:,} of 75,000 filled from {len(chains)} chains"
            assert refused < len(chains) // 10
            await until(lambda: carried(sim) == cap.placed, 30, "the simulator carries the whole plan")
            status = (await http.get(f"{PREFIX}/ws/status", headers=h)).json()
            by_account = {c["account"] for c in status["connections"]}
            assert by_account == {"acct1", "acct2", "acct3"}

            # Account 2's token expires: its 5 sockets get 807, the plan loses a third of its capacity.
            desired = set(svc.planner.desired(include_suspended=True))
            changes: list[PlanChange] = []
            svc.orchestrator.subscribe("test", changes.append)
            sim.faults.expire_token(CLIENTS[1])
            await until(
                lambda: any(c.cause.startswith("account acct2 down") for c in changes), 10, "account down"
            )
            down = next(c for c in changes if c.cause.startswith("account acct2 down"))
            gone = {e.connection for e in down.events if e.kind is EventKind.CONNECTION_DOWN}
            assert gone == set(svc.planner.account_connections(1))
            assert "807" in down.cause
            tier_of = {g.group: g.tier for g in svc.planner.groups()}
            suspended = [r for r in down.result.suspended]
            assert suspended, "a full plan lost a third of its capacity and nothing waited"
            assert all(r.tier is Tier.A for r in suspended), "Tier B suspended before Tier A"
            assert all(tier_of[r.group] is Tier.A for r in suspended)
            # The token is generated again from the PIN and TOTP, the sockets return, the plan is restored.
            await until(lambda: svc.feed.all_up() and not svc.planner.suspended(), 30, "account 2 restored")
            assert set(svc.planner.desired(include_suspended=True)) == desired
            assert svc.links[1].tokens is not None
            assert svc.links[1].tokens.stats.generations >= 1
            await until(lambda: carried(sim) == svc.planner.plan_capacity().placed, 30, "sockets == plan")
    finally:
        watcher.cancel()
        await svc.stop()
    assert max(peak.values()) <= 5, f"a client id held a 6th socket: {peak}"
    assert set(peak) == set(CLIENTS)
    assert not sim.breaches, sim.breaches[:3]
    assert all(n <= 5 for n in sim.stats.max_sockets_per_client.values())
