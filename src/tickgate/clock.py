"""The one clock: market time (IST wall clock, trading date) and monotonic time, injected everywhere.

Why one module: sessions, expiries, end of day, token lifetimes and cache ages all depend on "now", and a
product whose "now" is scattered over ``date.today()`` calls behaves differently on a Sunday, on an expiry
Tuesday and on the 31st of December — and cannot be run through a whole trading day in minutes. Everything
in ``src/`` that needs market time takes a :class:`Clock`; nothing else calls ``datetime.now()``,
``date.today()`` or ``time.time()`` (``tests/test_clock_guard.py`` walks the source and fails on a new call).

Three clocks:

- :class:`SystemClock`: the host's time. The default, and the only clock allowed against the real feed.
- :class:`VirtualClock`: starts at a given instant and runs ``speed`` times faster than real time
  (``TICKGATE_CLOCK_START`` / ``TICKGATE_CLOCK_SPEED``). Two processes agree on it when they share its
  *anchor*, the real epoch second at which virtual time was ``start`` (``TICKGATE_CLOCK_ANCHOR``); the
  simulator's control API reports all three so a second process can join it.
- :class:`ManualClock`: stands still until a test moves it; sleepers wake when it passes their deadline.

What is *not* market time stays on the host: socket keepalives, backoff, benchmarks' elapsed times
(``time.monotonic``/``time.perf_counter``). A ping every 10 s is a network fact, not a market one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from abc import ABC, abstractmethod
from typing import Any

IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
"""India has no daylight saving, so a fixed offset is exact and needs no tz database."""

SLEEP_SLICE_S = 30.0
"""A long sleep on a running clock wakes at least this often (real seconds) and re-reads the clock, so a
clock that is reset (``ManualClock.set``) or a host whose wall clock steps is noticed within one slice."""


class Clock(ABC):
    """Market time. ``timestamp`` is epoch seconds of the market's "now"; the rest derive from it."""

    virtual: bool = False
    speed: float = 1.0

    @abstractmethod
    def timestamp(self) -> float:
        """Epoch seconds (UTC-based, as ``time.time()``) of the market's now."""

    @abstractmethod
    def monotonic(self) -> float:
        """Seconds of market time that never go backwards (for ages, TTLs and cooldowns)."""

    def now(self) -> dt.datetime:
        """The IST wall clock, timezone-aware."""
        return dt.datetime.fromtimestamp(self.timestamp(), IST)

    def utcnow(self) -> dt.datetime:
        """The same instant in UTC (what the database stores)."""
        return dt.datetime.fromtimestamp(self.timestamp(), dt.UTC)

    def today(self) -> dt.date:
        """Today's date on Indian exchanges: expiries and trading days are IST dates, not the host's."""
        return self.now().date()

    def real_seconds(self, market_seconds: float) -> float:
        """How long ``market_seconds`` of this clock take in real time."""
        return market_seconds / self.speed

    async def sleep(self, market_seconds: float) -> None:
        """Sleep for ``market_seconds`` of this clock's time."""
        await self.sleep_until(self.timestamp() + market_seconds)

    async def sleep_until(self, at: dt.datetime | float) -> None:
        """Return once the clock reads ``at`` (an aware datetime or epoch seconds) or later."""
        target = at.timestamp() if isinstance(at, dt.datetime) else at
        while (remaining := target - self.timestamp()) > 0:
            await asyncio.sleep(min(self.real_seconds(remaining), SLEEP_SLICE_S))

    def describe(self) -> dict[str, Any]:
        """What the clock is, for status pages and the simulator's control API (no secrets here)."""
        return {"now": self.now().isoformat(), "virtual": self.virtual, "speed": self.speed}


class SystemClock(Clock):
    """The host's clock."""

    def timestamp(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class VirtualClock(Clock):
    """``start`` at real epoch ``anchor`` (default: now), then ``speed`` market seconds per real second."""

    virtual = True

    def __init__(self, start: dt.datetime, speed: float = 1.0, anchor: float | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError(f"the clock's start {start.isoformat()} needs a UTC offset (e.g. +05:30)")
        if not speed > 0:
            raise ValueError(f"the clock's speed must be positive, not {speed}")
        self.start = start
        self.speed = float(speed)
        self.anchor = time.time() if anchor is None else float(anchor)
        self._start_ts = start.timestamp()
        self._mono0 = time.monotonic()

    def timestamp(self) -> float:
        return self._start_ts + (time.time() - self.anchor) * self.speed

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono0) * self.speed

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "start": self.start.isoformat(),
            "anchor": self.anchor,
        }


class ManualClock(Clock):
    """A clock that moves only when told (tests). Sleepers are woken by :meth:`advance` and :meth:`set`."""

    virtual = True

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"the clock's start {start.isoformat()} needs a UTC offset (e.g. +05:30)")
        self._ts = start.timestamp()
        self._mono = 0.0
        self._moved: asyncio.Event | None = None

    def timestamp(self) -> float:
        return self._ts

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a manual clock only moves forward; use set() to jump")
        self._ts += seconds
        self._mono += seconds
        self._wake()

    def set(self, at: dt.datetime) -> None:
        """Jump to ``at`` (forward or back); monotonic time only ever moves forward."""
        delta = at.timestamp() - self._ts
        self._ts = at.timestamp()
        self._mono += max(delta, 0.0)
        self._wake()

    def _wake(self) -> None:
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def sleep_until(self, at: dt.datetime | float) -> None:
        target = at.timestamp() if isinstance(at, dt.datetime) else at
        while self._ts < target:
            if self._moved is None:
                self._moved = asyncio.Event()
            await self._moved.wait()


SYSTEM_CLOCK = SystemClock()

_shared: dict[tuple[str, float, float | None], VirtualClock] = {}


def clock_for(start: dt.datetime | None, speed: float = 1.0, anchor: float | None = None) -> Clock:
    """The clock that settings describe: the system clock when no start is given (and speed is 1), else a
    virtual one. Within a process the same description gives the same object, so the simulator and the
    service built from one configuration agree to the microsecond; across processes, share the anchor."""
    if start is None:
        if speed != 1.0:
            raise ValueError("TICKGATE_CLOCK_SPEED needs TICKGATE_CLOCK_START (a virtual clock's start)")
        return SYSTEM_CLOCK
    key = (start.isoformat(), float(speed), anchor)
    clock = _shared.get(key)
    if clock is None:
        clock = _shared[key] = VirtualClock(start, speed, anchor)
    return clock
