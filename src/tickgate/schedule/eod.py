"""End of day, per exchange session, on the one clock (:mod:`tickgate.clock`).

Tier A is cleared when its exchange's session ends — NSE/BSE at 15:30, MCX at 23:30 or 23:55 depending on
US daylight saving, 17:00 on a morning-only holiday — and only on days that exchange traded. Tier B is never
touched. Before the open, the master is refreshed and Tier B rolled to today's contracts.

Each job sleeps on the clock until the calendar's next fire time, so a virtual clock running 120× through a
day fires every close at its market minute, and a test's manual clock fires them when it is moved. (An
earlier version used APScheduler's cron jobs: they read the host's clock, which a virtual day cannot move;
see docs/decisions/0001-one-clock.md.)

A run missed while tickgate was down is not lost: every completed run is recorded (by the caller, in the
database), and on start :func:`missed_sessions` compares that record with the calendar's last close, so the
cleanup happens once on restart. A job that wakes late (a suspended host) runs late rather than not at all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tickgate.clock import IST, Clock
from tickgate.schedule.calendar import EXCHANGES, Exchange, TradingCalendar

log = logging.getLogger(__name__)

# Sessions whose Tier A is cleared together: NSE and BSE close at the same time.
SESSIONS: dict[str, tuple[Exchange, ...]] = {"NSE_BSE": ("NSE", "BSE"), "MCX": ("MCX",)}
PRE_OPEN_TIME = dt.time(8, 30)
LOOKAHEAD_DAYS = 30  # no exchange is shut for longer (the longest Indian market closures are a few days)

Cleanup = Callable[[str, tuple[Exchange, ...], dt.datetime], Awaitable[Any]]
PreOpen = Callable[[dt.date], Awaitable[Any]]
NextFire = Callable[[dt.datetime], dt.datetime | None]
Action = Callable[[dt.datetime], Awaitable[None]]


def session_close(calendar: TradingCalendar, session: str, day: dt.date) -> dt.datetime | None:
    """When ``session`` closed on ``day`` (the latest of its exchanges), ``None`` if none traded."""
    closes = [c for ex in SESSIONS[session] if (c := calendar.session_close(ex, day)) is not None]
    return max(closes) if closes else None


def missed_sessions(
    calendar: TradingCalendar, now: dt.datetime, last_runs: Mapping[str, dt.datetime | None]
) -> dict[str, dt.datetime]:
    """Sessions whose most recent close (before ``now``) has no completed cleanup after it."""
    due: dict[str, dt.datetime] = {}
    for session, exchanges in SESSIONS.items():
        closes = [c for ex in exchanges if (c := calendar.last_close_before(ex, now)) is not None]
        if not closes:
            continue
        close = max(closes)
        last = last_runs.get(session)
        if last is None or last < close:
            due[session] = close
    return due


def next_session_close(calendar: TradingCalendar, session: str, after: dt.datetime) -> dt.datetime | None:
    """The first close of ``session`` strictly after ``after``."""
    local = after.astimezone(IST)
    for ahead in range(LOOKAHEAD_DAYS + 1):
        close = session_close(calendar, session, local.date() + dt.timedelta(days=ahead))
        if close is not None and close > local:
            return close
    return None


def next_pre_open(
    calendar: TradingCalendar, after: dt.datetime, at: dt.time = PRE_OPEN_TIME
) -> dt.datetime | None:
    """The first ``at`` (08:30 IST) strictly after ``after`` on a day some exchange trades."""
    local = after.astimezone(IST)
    for ahead in range(LOOKAHEAD_DAYS + 1):
        day = local.date() + dt.timedelta(days=ahead)
        fire = dt.datetime.combine(day, at, tzinfo=IST)
        if fire > local and any(calendar.is_trading_day(ex, day) for ex in EXCHANGES):
            return fire
    return None


class EodScheduler:
    """The day's jobs, each a task sleeping on the clock until its next fire time.

    ``cleanup(session, exchanges, close)`` and ``pre_open(day)`` are the service's. A job that raises is
    logged and counted (:attr:`failures`), and its loop goes on to the next fire time."""

    def __init__(
        self,
        calendar: TradingCalendar,
        cleanup: Cleanup,
        pre_open: PreOpen,
        *,
        clock: Clock,
        pre_open_time: dt.time = PRE_OPEN_TIME,
    ) -> None:
        self.calendar = calendar
        self.clock = clock
        self._cleanup = cleanup
        self._pre_open = pre_open
        self._pre_open_time = pre_open_time
        self._tasks: list[asyncio.Task[None]] = []
        self.next_runs: dict[str, dt.datetime | None] = {}
        self.runs: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def start(self, since: dt.datetime | None = None) -> None:
        """Run every job from ``since`` (default: now) on: a close after it fires, even if it has already
        passed by the time the jobs' tasks first run."""
        if self.running:
            return
        jobs: dict[str, tuple[NextFire, Action]] = {
            f"eod-{session.lower().replace('_', '-')}": (
                functools.partial(next_session_close, self.calendar, session),
                functools.partial(self._session_action, session),
            )
            for session in SESSIONS
        }
        jobs["pre-open"] = (
            functools.partial(next_pre_open, self.calendar, at=self._pre_open_time),
            self._pre_open_action,
        )
        since = since or self.clock.now()  # not from when each task first runs
        for job_id, (next_fire, action) in jobs.items():
            self.next_runs[job_id] = next_fire(since)
            self._tasks.append(asyncio.create_task(self._loop(job_id, next_fire, action, since), name=job_id))

    def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    def jobs(self) -> list[dict[str, Any]]:
        return [
            {"id": job_id, "next_run": at.isoformat() if at else None, "runs": self.runs.get(job_id, 0)}
            for job_id, at in self.next_runs.items()
        ]

    async def _session_action(self, session: str, close: dt.datetime) -> None:
        await self._cleanup(session, SESSIONS[session], close)

    async def _pre_open_action(self, fire: dt.datetime) -> None:
        await self._pre_open(fire.date())

    async def _loop(self, job_id: str, next_fire: NextFire, action: Action, after: dt.datetime) -> None:
        while True:
            fire = next_fire(after)
            self.next_runs[job_id] = fire
            if fire is None:  # nothing trades for a month: look again tomorrow
                await self.clock.sleep(86_400)
                after = self.clock.now()
                continue
            await self.clock.sleep_until(fire)
            try:
                await action(fire)
            except Exception:
                self.failures[job_id] = self.failures.get(job_id, 0) + 1
                log.exception("scheduled job %s for %s failed; it runs again at its next time", job_id, fire)
            else:
                self.runs[job_id] = self.runs.get(job_id, 0) + 1
            after = fire
