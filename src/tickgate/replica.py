"""``tickgate api``: a stateless API replica (issue 20).

It serves the same REST API, push channel and dashboard as ``tickgate serve``, from the same code, over a
service that holds no Dhan socket and no plan of its own:

- **quotes** follow the active gateway's store over the broker (:class:`~tickgate.bus.follower.QuoteFollower`:
  snapshot, then deltas; stale the moment the broker or the gateway goes);
- **the plan** is the gateway's digest (:class:`~tickgate.bus.plan.PlanMirror`), and each watched chain's
  window is rebuilt from it with the replica's own registry;
- **analytics** are computed here, from those quotes, by the same engine: it is lazy (only the chains the
  replica's clients look at, at most at the push rate), so each replica computes what its own clients
  need; decision 0008 says why this is not published by the gateway;
- **users' reads** (API keys, watchlists, the audit log) come from PostgreSQL;
- **the process** runs under the same latency policy as the gateway's
  (:class:`~tickgate.service.runtime.RuntimePolicy`: what start-up built frozen out of the cyclic GC's
  walks, 1 ms GIL slices), with the one full walk of everything at each session's close that the gateway
  makes at its end of day;
- **everything else** (writes, status of the sockets) goes to the gateway as a command
  (:mod:`tickgate.api.forward`), and the chains users look at are sent to it as uses (its planner's LRU).

Nothing here is kept that a restart could not rebuild from the broker and the database, so replicas come
and go freely, and any number run behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nats

from tickgate.api.commands import CommandClient, CommandTimeoutError
from tickgate.bus.follower import QuoteFollower
from tickgate.bus.plan import HEARTBEAT_S, PlanFollower, PlanMirror, WindowSpec, rebuild_window
from tickgate.config import Settings
from tickgate.feed.manager import SessionMask
from tickgate.instruments import InstrumentRegistry
from tickgate.orchestrator import Orchestrator
from tickgate.schedule.eod import EodScheduler
from tickgate.service.app import TickgateService
from tickgate.store import Store

log = logging.getLogger(__name__)

TOUCH_EVERY_S = 2.0  # how often the chains looked at here are sent to the gateway as uses
SNAPSHOT_WAIT_S = 10.0  # how long a start waits for the first snapshot before serving without quotes


class ReplicaService(TickgateService):
    """The service an API replica's app runs over (see the module docstring)."""

    replica = True

    def __init__(self, settings: Settings, *, registry: InstrumentRegistry | None = None) -> None:
        if settings.bus_url is None:
            raise ValueError("an API replica needs a broker (TICKGATE_BUS_URL)")
        super().__init__(settings, registry=registry, scheduler=False)
        self.bus_url: str = settings.bus_url
        self.mirror = PlanMirror(settings.limits)
        self.planner = self.mirror  # what the routes and the push channel read
        self.orchestrator = Orchestrator(self.planner)  # never applied to: the API's subscribers attach here
        self.follower = QuoteFollower(
            self.quotes,
            self.bus_url,
            prefix=settings.bus_prefix,
            in_session=SessionMask(self.trading_markets),
        )
        self.commands: CommandClient | None = None
        self.plan: PlanFollower | None = None
        self._collector: EodScheduler | None = None
        self._nc: Any = None
        self._boot: str | None = None
        self._silent = False
        self.touches_sent = 0

    async def start(self) -> None:
        started = time.perf_counter()
        await self._load_chains()
        if self._store is None:
            self._store = await Store.from_settings(self.settings, clock=self.clock)
        self._nc = await nats.connect(
            self.bus_url, max_reconnect_attempts=-1, reconnect_time_wait=0.3, name="tickgate-api"
        )
        prefix = self.settings.bus_prefix
        self.commands = CommandClient(self._nc, prefix=prefix, patience_s=self.settings.command_patience_s)
        self.plan = PlanFollower(
            self.mirror, self._nc, self._rebuild_window, self._forget_window, prefix=prefix
        )
        await self.plan.start()
        await self.follower.start(wait=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SNAPSHOT_WAIT_S):
                while not self.follower.live:
                    await asyncio.sleep(0.05)
        self._tasks = [
            asyncio.create_task(self._touch_loop(), name="replica-touches"),
            asyncio.create_task(self._gateway_watch(), name="replica-gateway-watch"),
        ]
        # The registry, the store and the windows live for the process: out of the cyclic GC's walks, as in
        # the gateway (a full walk of them was a pause every push client and request waited through). What
        # freezing keeps from the collector is walked once a day, at each session's close, when the
        # gateway's Tier A (and so most of the windows rebuilt here) has just gone.
        self.runtime.install()
        self._collector = EodScheduler(self.calendar, self._collect_at_close, _no_pre_open, clock=self.clock)
        self._collector.start()
        self.started_at = self.clock.utcnow()
        self._started_mono = time.monotonic()
        log.info("tickgate api replica started in %.2fs", time.perf_counter() - started)

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.shutdown()
            self._collector = None
        self.runtime.uninstall()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.follower.stop()
        if self._nc is not None:
            await self._nc.close()
            self._nc = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        self.started_at = None

    async def _collect_at_close(self, session: str, _exchanges: object, _close: object) -> None:
        freed = self.runtime.collect_all()
        log.info("%s closed: a full collection freed %d objects", session, freed)

    # -- the plan's windows ----------------------------------------------------------------------------

    def _rebuild_window(self, group: str, spec: WindowSpec) -> None:
        self.tracker.track(group, rebuild_window(self.atm, spec, self.today()), self.clock.timestamp())

    def _forget_window(self, group: str) -> None:
        self.tracker.untrack(group)
        self.watchlists.forget([group])

    # -- loops -------------------------------------------------------------------------------------------

    async def _touch_loop(self) -> None:
        """The chains looked at here, sent to the gateway as uses (its planner keeps the LRU)."""
        mirror = self.mirror
        assert self.commands is not None
        while True:
            await asyncio.sleep(TOUCH_EVERY_S)
            if not mirror.touched:
                continue
            groups, mirror.touched = list(mirror.touched), {}
            try:
                await self.commands.call("touch", None, {"groups": groups}, key="")
                self.touches_sent += len(groups)
            except CommandTimeoutError:
                self.loop_failures["replica-touches"] += 1
                log.warning("no gateway took %d chain uses; they are dropped", len(groups))
            except Exception:
                self.loop_failures["replica-touches"] += 1
                log.exception("sending chain uses failed")

    def _check_master(self, gateways: str) -> None:
        """The registry must be the gateway's: the same security ids. A replica set up with another master
        (a generated one beside a gateway on Dhan's) is an operator's error, said loudly and counted."""
        mine = self.master_path.name if self.master_path else ""
        if gateways and mine and gateways != mine:
            self.loop_failures["replica-master-mismatch"] += 1
            log.error(
                "this replica loaded the scrip master %s but the gateway runs on %s: set TICKGATE_INSTRUMENTS"
                " (and TICKGATE_FEED_URL) as on the gateway",
                mine,
                gateways,
            )

    async def _gateway_watch(self) -> None:
        """A new gateway (failover) means a new snapshot; a gateway silent for three heartbeats (seconds)
        means every live price turns stale: never a quote served as live from a gateway that is gone."""
        assert self.plan is not None
        while True:
            await asyncio.sleep(0.5)
            try:
                digest = self.mirror.digest
                if digest is not None and digest.boot != self._boot:
                    self._check_master(digest.master)
                    if self._boot is not None:
                        log.warning("a new gateway (%s): taking a snapshot", digest.boot)
                        self.follower.resync()
                    self._boot = digest.boot
                silent = time.monotonic() - self.plan.received_at > 3 * HEARTBEAT_S
                if silent and not self._silent:
                    log.warning("no gateway heard for %.0f s: live prices are stale", 3 * HEARTBEAT_S)
                    self.follower.resync()
                self._silent = silent
            except Exception:
                self.loop_failures["replica-gateway-watch"] += 1
                log.exception("watching the gateway failed")


async def _no_pre_open(_day: object) -> None:
    """A replica has nothing to do before the open: the gateway rolls the plan, and its digest follows."""


async def run_api(settings: Settings) -> None:
    """Serve the replica's app (uvicorn) until stopped."""
    import uvicorn

    from tickgate.api.app import create_app, uvicorn_config
    from tickgate.gateway import check_split_mode

    check_split_mode(settings, "api")
    app = create_app(ReplicaService(settings))
    await uvicorn.Server(uvicorn_config(app, settings)).serve()
