"""Admin pins: a Tier A chain an administrator marks as never evicted to make room for another user's chain.

The planner already orders evictions and suspensions by pin (unpinned least recently used first; a pinned
chain goes only to make room for Tier B, which outranks every user). This module is the feature around it:
the admin's request goes through the orchestrator like every change of plan (audited as PIN / UNPIN), the
set of pinned chains is kept in the database (``meta["pinned_groups"]``) so a restart pins them again, and a
chain that leaves the plan (removed by its owners, cleared at end of day) takes its pin with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable

from tickgate.orchestrator import Orchestrator
from tickgate.planner import GroupInfo, Planner, Tier
from tickgate.service.errors import InvalidInput, NotFound
from tickgate.store.meta import Meta

log = logging.getLogger(__name__)

META_KEY = "pinned_groups"


class Pins:
    """``service.pins``: pin and unpin chains; persisted, restored, forgotten with their chain."""

    def __init__(self, orchestrator: Orchestrator, planner: Planner, failures: Counter[str]) -> None:
        """``failures``: the service's background-failure counters (a failed save counts as ``pins``)."""
        self._orchestrator = orchestrator
        self._planner = planner
        self._failures = failures
        self._meta: Meta | None = None
        self._known: set[str] = set()  # pinned chains as last saved
        self._saving: asyncio.Task[None] | None = None

    async def set(self, group_id: str, pinned: bool, meta: Meta) -> GroupInfo:
        """Pin (``pinned``) or unpin a chain in the plan; 404 if it is not in the plan, 400 for Tier B
        (never evicted: a pin would mean nothing)."""
        self._meta = meta
        if not self._planner.has_group(group_id):
            raise NotFound(f"no chain {group_id!r} in the plan", group=group_id)
        if self._planner.group(group_id).tier is not Tier.A:
            raise InvalidInput(
                f"{group_id!r} is Tier B, which is never evicted: only Tier A chains are pinned"
            )
        call = Planner.pin if pinned else Planner.unpin
        self._orchestrator.apply(f"admin {'pin' if pinned else 'unpin'}", call, group_id)
        await self._save()
        return self._planner.group(group_id)

    async def restore(self, meta: Meta) -> int:
        """After a restart's restore: pin again the chains still in the plan; returns how many."""
        self._meta = meta
        stored = await meta.get(META_KEY)
        wanted = [g for g in stored if isinstance(g, str)] if isinstance(stored, list) else []
        pinned = 0
        for group in wanted:
            if self._planner.has_group(group) and self._planner.group(group).tier is Tier.A:
                self._orchestrator.apply("restore pin", Planner.pin, group)
                pinned += 1
        await self._save()
        return pinned

    def pinned(self) -> list[str]:
        return [g.group for g in self._planner.groups() if g.pinned]

    def forget(self, groups: Iterable[str]) -> None:
        """Chains that left the plan: their pins go with them (saved in the background)."""
        if self._meta is None or self._known.isdisjoint(groups):
            return
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save(), name="tickgate-pins-save")

    async def flush(self) -> None:
        """Wait for a save in progress (the service's stop, before the store closes)."""
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)

    async def _save(self) -> None:
        if self._meta is None:
            return
        pinned = sorted(self.pinned())
        try:
            await self._meta.set(META_KEY, pinned)
        except Exception:  # logged and counted: the next pin, unpin or restart writes the set again
            self._failures["pins"] += 1
            log.exception("saving the pinned chains failed")
        else:
            self._known = set(pinned)
