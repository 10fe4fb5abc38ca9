"""A small TTL cache with the clock passed in.

The ATM engine is pure, so the cache never reads a clock: callers pass ``now`` (monotonic seconds or any
other consistent scale) and tests step time by hand. Bounded, oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live ``ttl`` seconds from their ``put``; at most ``max_entries`` are kept (oldest evicted).
    ``ttl <= 0`` disables caching (every ``get`` misses), which keeps callers free of special cases."""

    def __init__(self, ttl: float, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K, now: float) -> V | None:
        """The value stored under ``key`` if it is younger than the TTL at ``now``, else ``None``."""
        entry = self._data.get(key)
        if entry is None or self.ttl <= 0 or now - entry[0] >= self.ttl or now < entry[0]:
            if entry is not None:
                del self._data[key]
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, key: K, value: V, now: float) -> None:
        if self.ttl <= 0:
            return
        self._data[key] = (now, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def purge(self, now: float) -> int:
        """Drop expired entries (a periodic sweep; ``get`` also drops what it finds stale)."""
        stale = [k for k, (t, _) in self._data.items() if now - t >= self.ttl or now < t]
        for k in stale:
            del self._data[k]
        return len(stale)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
