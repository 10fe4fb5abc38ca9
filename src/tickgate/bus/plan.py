"""The gateway's plan, as the API replicas see it (issue 20).

A replica answers reads that depend on the plan (is this chain watched and placed, which keys does it
subscribe, where does its window sit, how full is the capacity) without a round trip to the gateway. So
the gateway publishes a *digest* of its planner on ``tg.plan`` after every change of plan (coalesced), and
again every few seconds; a replica that starts or reconnects asks for it on ``tg.plan.get``. Each digest is
whole (not a delta): at most a few hundred kilobytes compressed at full capacity, a few times a second at
most, and a replica that missed one simply takes the next.

What it carries is the gateway's own answers, not inputs to recompute them: every group's
:class:`GroupInfo`, the :class:`CapacityPlan`, the keys of Tier A chains (what a push client watches) and
each tracked chain's window as (symbol, exchange, expiry, strikes, the price it is centred on), which the
replica rebuilds with its own registry: the same listing and the same price give the same strikes.

Digests are ordered by (boot, number): a new gateway (failover) starts a new boot, and its first digest
replaces whatever the replica held. Between changes the gateway sends a heartbeat every second (a few
bytes: its boot and the number of its last digest, not the digest again): a replica that has not heard
one for three seconds knows the gateway is gone, and one that hears of a digest it does not hold asks for
it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tickgate.chains.atm import AtmEngine, ChainWindow
from tickgate.config import FeedLimits
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.planner import Planner, Tier
from tickgate.planner.types import CapacityPlan, GroupId, GroupInfo, PlanResult

if TYPE_CHECKING:
    from tickgate.service import TickgateService

log = logging.getLogger(__name__)

PLAN = "tg.plan"
PLAN_GET = "tg.plan.get"
HEARTBEAT_S = 1.0  # "alive, at digest N" without a change: how fast a replica notices a gateway is gone
HEARTBEAT = b"tgHB"  # a heartbeat's first bytes (a digest is zlib, whose first byte is 0x78)
COALESCE_S = 0.2  # changes within this are one digest


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Where a chain's window sits: enough to rebuild it from the registry."""

    symbol: str
    exchange: str
    expiry: dt.date
    strikes: int
    ltp: float


def rebuild_window(atm: AtmEngine, spec: WindowSpec, today: dt.date) -> ChainWindow:
    """The gateway's window, exactly: centred on the price the gateway centred it on, not on this
    process's live price (which the gateway's hysteresis may not have followed yet)."""
    return atm.window(
        spec.symbol,
        spec.expiry,
        spec.strikes,
        ltp=spec.ltp,
        quotes=lambda _key: None,
        exchange=spec.exchange,
        today=today,
    )


@dataclasses.dataclass
class PlanDigest:
    boot: str
    number: int
    capacity: CapacityPlan
    groups: dict[GroupId, GroupInfo]
    keys: dict[GroupId, tuple[InstrumentKey, ...]]
    windows: dict[GroupId, WindowSpec]
    master: str = ""  # the scrip master the gateway loaded (its file name): a replica's must be the same


def encode_digest(
    planner: Planner,
    window_of: Callable[[GroupId], ChainWindow | None],
    boot: str,
    number: int,
    master: str = "",
) -> bytes:
    """The gateway's plan now, compressed JSON (see the module docstring)."""
    groups = planner.groups()
    keys: dict[str, list[int]] = {}
    windows: dict[str, list[Any]] = {}
    for g in groups:
        if g.tier is not Tier.A:
            continue
        flat: list[int] = []
        for k in planner.group_keys(g.group):
            flat += (int(k.segment), k.security_id)
        keys[g.group] = flat
        w = window_of(g.group)
        if w is not None:
            windows[g.group] = [w.symbol, w.exchange, w.expiry.date.isoformat(), w.requested, w.ltp]
    doc = {
        "boot": boot,
        "n": number,
        "master": master,
        "capacity": dataclasses.asdict(planner.plan_capacity()),
        "groups": [
            [g.group, g.tier.value, g.owner, g.mode.name, g.size, g.pinned, g.suspended, *_times(g)]
            for g in groups
        ],
        "keys": keys,
        "windows": windows,
    }
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)


def _times(g: GroupInfo) -> tuple[float, float, float]:
    return g.created, g.last_used, g.updated


def decode_digest(data: bytes) -> PlanDigest:
    """The inverse of :func:`encode_digest`; ``ValueError`` on anything else."""
    try:
        doc = json.loads(zlib.decompress(data))
        groups = {
            g[0]: GroupInfo(g[0], Tier(g[1]), g[2], FeedMode[g[3]], g[4], g[5], g[6], g[7], g[8], g[9])
            for g in doc["groups"]
        }
        keys = {
            gid: tuple(InstrumentKey(ExchangeSegment(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2))
            for gid, flat in doc["keys"].items()
        }
        windows = {
            gid: WindowSpec(w[0], w[1], dt.date.fromisoformat(w[2]), int(w[3]), float(w[4]))
            for gid, w in doc["windows"].items()
        }
        return PlanDigest(
            str(doc["boot"]),
            int(doc["n"]),
            CapacityPlan(**doc["capacity"]),
            groups,
            keys,
            windows,
            str(doc.get("master", "")),
        )
    except (zlib.error, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"not a plan digest: {type(exc).__name__}: {exc}") from None


class PlanPublisher:
    """The gateway's side: a digest after each change of plan (coalesced), every ``HEARTBEAT_S`` anyway,
    and to whoever asks."""

    def __init__(self, service: TickgateService, nc: Any, *, prefix: str = "") -> None:
        self.service = service
        self._nc = nc
        self.subject = prefix + PLAN
        self.get_subject = prefix + PLAN_GET
        self.boot = uuid.uuid4().hex[:12]
        self.number = 0
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self.published = self.failures = 0

    async def start(self) -> None:
        self.service.orchestrator.subscribe("bus-plan", lambda _change: self._dirty.set())
        self._sub = await self._nc.subscribe(self.get_subject, cb=self._on_get)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="bus-plan")

    async def stop(self) -> None:
        self.service.orchestrator.unsubscribe("bus-plan")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def digest(self) -> bytes:
        self.number += 1
        svc = self.service
        master = svc.master_path.name if svc.master_path else ""
        return encode_digest(svc.planner, svc.tracker.window, self.boot, self.number, master)

    async def _on_get(self, msg: Any) -> None:
        await msg.respond(self.digest())

    def heartbeat(self) -> bytes:
        return HEARTBEAT + json.dumps([self.boot, self.number]).encode()

    async def _loop(self) -> None:
        while True:
            try:
                try:
                    await asyncio.wait_for(self._dirty.wait(), HEARTBEAT_S)
                    await asyncio.sleep(COALESCE_S)
                except TimeoutError:
                    await self._nc.publish(self.subject, self.heartbeat())
                    continue
                self._dirty.clear()
                await self._nc.publish(self.subject, self.digest())
                self.published += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # a loop never dies silently: counted, logged, and it goes on
                self.failures += 1
                log.exception("publishing the plan digest failed")
                await asyncio.sleep(1.0)


class PlanMirror(Planner):
    """A replica's planner: holds no plan of its own, and answers the reads the API makes from the
    gateway's latest digest. Why a :class:`Planner`: the routes and the push channel read the plan through
    the service's ``planner``, and a replica serves them unchanged. Its writes are not plan changes: a
    ``touch`` (a user looked at a chain) is queued for the gateway, whose planner owns the LRU."""

    def __init__(self, limits: FeedLimits) -> None:
        super().__init__(limits)
        self.digest: PlanDigest | None = None
        self.touched: dict[GroupId, float] = {}

    def has_group(self, group_id: GroupId) -> bool:
        return self.digest is not None and group_id in self.digest.groups

    def group(self, group_id: GroupId) -> GroupInfo:
        if self.digest is None or group_id not in self.digest.groups:
            return super().group(group_id)  # the planner's own KeyError, with its message
        return self.digest.groups[group_id]

    def group_keys(self, group_id: GroupId) -> tuple[InstrumentKey, ...]:
        if self.digest is None or group_id not in self.digest.keys:
            return ()
        return self.digest.keys[group_id]

    def groups(self) -> list[GroupInfo]:
        return [] if self.digest is None else list(self.digest.groups.values())

    def suspended(self) -> list[GroupId]:
        return [g.group for g in self.groups() if g.suspended]

    def plan_capacity(self) -> CapacityPlan:
        if self.digest is None:
            return super().plan_capacity()
        return self.digest.capacity

    def touch(self, group_id: GroupId, now: float) -> PlanResult:
        self.touched[group_id] = now
        return PlanResult(accepted=True)


class PlanFollower:
    """A replica's side: keeps ``mirror`` on the newest digest and the tracker's windows on its windows."""

    def __init__(
        self,
        mirror: PlanMirror,
        nc: Any,
        rebuild: Callable[[GroupId, WindowSpec], None],
        forget: Callable[[GroupId], None],
        *,
        prefix: str = "",
    ) -> None:
        self.mirror = mirror
        self._nc = nc
        self._rebuild = rebuild
        self._forget = forget
        self.subject = prefix + PLAN
        self.get_subject = prefix + PLAN_GET
        self._windows: dict[GroupId, WindowSpec] = {}
        self.applied = self.unreadable = 0
        self.received_at = 0.0

    async def start(self) -> None:
        await self._nc.subscribe(self.subject, cb=self._on_digest)
        await self.refresh()

    async def refresh(self, timeout: float = 3.0) -> bool:
        """Ask the gateway for its plan now; False when none answered (the next publication will do)."""
        try:
            reply = await self._nc.request(self.get_subject, b"", timeout=timeout)
        except Exception as exc:
            log.warning("no plan digest from a gateway (%s)", type(exc).__name__)
            return False
        self.apply(reply.data)
        return True

    async def _on_digest(self, msg: Any) -> None:
        if msg.data.startswith(HEARTBEAT):
            if self.heard(msg.data):
                await self.refresh()
            return
        self.apply(msg.data)

    def heard(self, beat: bytes) -> bool:
        """A heartbeat: the gateway is alive. True when it speaks of a digest this replica does not hold
        (a new gateway, or a digest missed): then ask for it."""
        self.received_at = time.monotonic()
        try:
            boot, number = json.loads(beat[len(HEARTBEAT) :])
        except ValueError:
            self.unreadable += 1
            return False
        held = self.mirror.digest
        return held is None or held.boot != boot or held.number < int(number)

    def apply(self, data: bytes) -> None:
        try:
            digest = decode_digest(data)
        except ValueError:
            self.unreadable += 1
            log.exception("an unreadable plan digest; skipped")
            return
        held = self.mirror.digest
        if held is not None and held.boot == digest.boot and digest.number <= held.number:
            return  # older than what is held (a reply and a publication crossed)
        for gid in [g for g in self._windows if g not in digest.windows]:
            del self._windows[gid]
            self._forget(gid)
        for gid, spec in digest.windows.items():
            if self._windows.get(gid) != spec:
                try:
                    self._rebuild(gid, spec)
                except Exception:
                    log.exception("could not rebuild the window of %s", gid)
                    continue
                self._windows[gid] = spec
        self.mirror.digest = digest
        self.applied += 1
        self.received_at = time.monotonic()
