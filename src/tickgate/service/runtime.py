"""Process settings for a latency-bound event loop: CPython's cyclic GC and its GIL hand-over interval.

**The GIL.** The event loop shares one interpreter lock with the threads that remain: the database's
readers (aiosqlite), WAL checkpoints, and a SQLite write waiting out another process's lock
(``store.engine``). By default a thread that wants the lock waits up to 5 ms for the holder to let go, and
whatever waits on that thread waits with it. 1 ms slices cost little and bound that wait.

**The cyclic GC.** Reference counting frees almost everything tickgate drops; the cyclic collector is only
for cycles. Its *full* collections, though, walk every tracked object, and a plan at 25,000 instruments
holds a few hundred thousand of them, so a full collection is a long pause (measured: decision 0002),
several a second while watchlists churn. Every tick, push and HTTP request in flight waits that long.

So what survives a full collection (long-lived by then: the registry, the plan, the quote store) is frozen
right after it (``gc.freeze``: the permanent generation, never walked again), and the next full collection
walks only what survived since: a short pause. A cycle frozen and later dropped is not reclaimed until
:meth:`RuntimePolicy.collect_all` unfreezes and walks everything; the service does that at the end of each
trading session, once, when its Tier A has just been cleared.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class GcStats:
    full_collections: int = 0
    last_full_ms: float = 0.0
    max_full_ms: float = 0.0
    daily_collections: int = 0
    daily_collected: int = 0
    last_daily_ms: float = 0.0


class RuntimePolicy:
    """Installed by a running service (a gc callback, the switch interval); :meth:`uninstall` undoes both."""

    SWITCH_INTERVAL_S = 0.001

    def __init__(self) -> None:
        self.stats = GcStats()
        self._started = 0.0
        self._installed = False
        self._switch_interval = sys.getswitchinterval()

    def install(self) -> None:
        """Collect and freeze what start-up built, then freeze the survivors of every full collection."""
        gc.collect()
        gc.freeze()
        if not self._installed:
            gc.callbacks.append(self._on_gc)
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.SWITCH_INTERVAL_S)
            self._installed = True

    def uninstall(self) -> None:
        """The service stopped: the collector walks everything again (what was frozen may be garbage now)."""
        if self._installed:
            gc.callbacks.remove(self._on_gc)
            sys.setswitchinterval(self._switch_interval)
            gc.unfreeze()
            self._installed = False

    def collect_all(self) -> int:
        """A full collection of everything, frozen objects included (end of day); returns what it freed."""
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        s = self.stats
        s.daily_collections += 1
        s.daily_collected += freed
        s.last_daily_ms = (time.perf_counter() - started) * 1000
        return freed

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        # A full collection just ended: the younger generations are empty, everything tracked survived it.
        gc.freeze()
        s = self.stats
        s.full_collections += 1
        s.last_full_ms = (time.perf_counter() - self._started) * 1000
        s.max_full_ms = max(s.max_full_ms, s.last_full_ms)
