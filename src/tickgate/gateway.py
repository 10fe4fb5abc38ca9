"""``tickgate gateway``: the process that holds the Dhan sockets, when it holds the lease (issue 20).

Two gateways run, one active and one standby; both load the registry up front and wait on the lease
(:mod:`tickgate.store.lease`). The one that takes it starts the service exactly as a restart does (the
database's watchlists and Tier B, reconciled through the orchestrator), publishes its quotes on the broker
(:mod:`tickgate.bus`) and answers the replicas' commands (:mod:`tickgate.api.commands`). The one that loses
it (its database gone for too long, or replaced) stops the service, which closes every socket with
Dhan's goodbye, before the row can expire and the other one start. So the standby takes over within the
lease's ttl plus a start, and two gateways never hold sockets for one account at once.

The split mode needs PostgreSQL (the lease, and the replicas read users' data from it) and a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from typing import Any

from sqlalchemy.engine import URL

from tickgate.config import Settings

log = logging.getLogger(__name__)


class SplitModeError(ValueError):
    """The split mode was asked for without what it needs (PostgreSQL, a broker)."""


def check_split_mode(settings: Settings, role: str) -> URL:
    """The database URL of the split mode, or why this configuration cannot run ``role``."""
    from tickgate.store.engine import database_url, normalize_url

    url = normalize_url(database_url(settings))
    if url.get_backend_name() != "postgresql":
        raise SplitModeError(
            f"tickgate {role} needs PostgreSQL (TICKGATE_DB_URL=postgresql://…): the lease and the replicas'"
            " reads live there; SQLite is for the all-in-one `tickgate serve`"
        )
    if settings.bus_url is None:
        raise SplitModeError(f"tickgate {role} needs a broker: TICKGATE_BUS_URL=nats://host:4222")
    return url


async def run_gateway(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Wait on the lease; while holding it, run the service, its publisher and its command server."""
    import nats

    from tickgate.api.app import create_app
    from tickgate.api.commands import CommandServer
    from tickgate.bus.plan import PlanPublisher
    from tickgate.instruments import InstrumentRegistry
    from tickgate.service import TickgateService
    from tickgate.service.app import resolve_master
    from tickgate.store import Store
    from tickgate.store.engine import pg_engine
    from tickgate.store.lease import LeaseKeeper

    url = check_split_mode(settings, "gateway")
    assert settings.bus_url is not None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    clock = settings.make_clock()
    await (await Store.from_settings(settings, clock=clock)).close()  # migrated: the lease table too
    path = await asyncio.to_thread(resolve_master, settings, clock.today())
    registry = await asyncio.to_thread(InstrumentRegistry.load, path, clock=clock)  # ready before the lease
    engine = pg_engine(url, settings.store)  # the store's schema: the lease sits beside the rest
    nc = await nats.connect(settings.bus_url, max_reconnect_attempts=-1, name="tickgate-gateway-commands")
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    running: dict[str, Any] = {}

    async def acquired(epoch: int) -> None:
        svc = TickgateService(settings, registry=registry, clock=clock)
        await svc.start()
        # The app is never served here: the replicas' forwarded requests run through it in process.
        server = CommandServer(svc, nc, prefix=settings.bus_prefix, app=create_app(svc))
        await server.start()
        plan = PlanPublisher(svc, nc, prefix=settings.bus_prefix)
        await plan.start()
        running.update(service=svc, commands=server, plan=plan)
        print(f"GATEWAY ACTIVE {holder} epoch {epoch}", flush=True)

    async def lost() -> None:
        server, svc, plan = (
            running.pop("commands", None),
            running.pop("service", None),
            running.pop("plan", None),
        )
        if plan is not None:
            await plan.stop()
        if server is not None:
            await server.stop()
        if svc is not None:
            await svc.stop()  # every socket closed, with Dhan's goodbye, before this returns
        print(f"GATEWAY STANDBY {holder}", flush=True)

    keeper = LeaseKeeper(
        engine, holder, ttl_s=settings.gateway_lease_ttl_s, on_acquired=acquired, on_lost=lost
    )
    print(f"GATEWAY WAITING {holder}", flush=True)
    keeper.start()
    try:
        await stop.wait()
    finally:
        await keeper.stop(release=True)
        await nc.close()
        await engine.dispose()
