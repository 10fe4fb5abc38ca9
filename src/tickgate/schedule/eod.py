"""End of day, per exchange session, on a real scheduler (APScheduler 3, Asia/Kolkata).

Tier A is cleared when its exchange's session ends — NSE/BSE at 15:30, MCX at 23:30 or 23:55 depending on
US daylight saving — and only on days that exchange traded. Tier B is never touched. Before the open, the
master is refreshed and Tier B rolled to today's contracts.

A run missed while tickgate was down is not lost: every completed run is recorded (by the caller, in the
database), and on start :func:`missed_sessions` compares that record with the calendar's last close, so the
cleanup happens once on restart. While running, APScheduler's ``coalesce`` + ``misfire_grace_time`` cover a
blocked or suspended process.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from tickgate.schedule.calendar import IST, Exchange, TradingCalendar

log = logging.getLogger(__name__)

# Sessions whose Tier A is cleared together: NSE and BSE close at the same time.
SESSIONS: dict[str, tuple[Exchange, ...]] = {"NSE_BSE": ("NSE", "BSE"), "MCX": ("MCX",)}
MISFIRE_GRACE_S = 6 * 3600

Cleanup = Callable[[str, tuple[Exchange, ...], dt.datetime], Awaitable[Any]]
PreOpen = Callable[[dt.date], Awaitable[Any]]


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


class EodScheduler:
    """The cron jobs. ``cleanup(session, exchanges, close)`` and ``pre_open(day)`` are the service's."""

    def __init__(
        self,
        calendar: TradingCalendar,
        cleanup: Cleanup,
        pre_open: PreOpen,
        *,
        pre_open_time: dt.time = dt.time(8, 30),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(IST),
    ) -> None:
        self.calendar = calendar
        self._cleanup = cleanup
        self._pre_open = pre_open
        self._clock = clock
        self.scheduler = AsyncIOScheduler(timezone=IST)
        common: dict[str, Any] = {
            "coalesce": True,
            "misfire_grace_time": MISFIRE_GRACE_S,
            "max_instances": 1,
            "replace_existing": True,
        }
        self.scheduler.add_job(
            self._session_job,
            CronTrigger(day_of_week="mon-fri", hour=15, minute=30, timezone=IST),
            args=["NSE_BSE"],
            id="eod-nse-bse",
            **common,
        )
        # MCX closes at 23:30 or 23:55 (or 17:00 on a morning-only holiday): fire at each candidate and
        # let the calendar say whether this is today's close.
        for hour, minute in ((17, 0), (23, 30), (23, 55)):
            self.scheduler.add_job(
                self._session_job,
                CronTrigger(day_of_week="mon-fri", hour=hour, minute=minute, timezone=IST),
                args=["MCX"],
                id=f"eod-mcx-{hour:02d}{minute:02d}",
                **common,
            )
        self.scheduler.add_job(
            self._pre_open_job,
            CronTrigger(
                day_of_week="mon-fri", hour=pre_open_time.hour, minute=pre_open_time.minute, timezone=IST
            ),
            id="pre-open",
            **common,
        )

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def jobs(self) -> list[dict[str, Any]]:
        return [
            {"id": job.id, "next_run": job.next_run_time.isoformat() if job.next_run_time else None}
            for job in self.scheduler.get_jobs()
        ]

    async def _session_job(self, session: str) -> None:
        """Fires at every candidate closing minute; acts once today's real close has passed. The cleanup
        itself is idempotent per close (the service records the close it last cleaned)."""
        now = self._clock().astimezone(IST)
        close = session_close(self.calendar, session, now.date())
        if close is None or now < close:
            return
        await self._cleanup(session, SESSIONS[session], close)

    async def _pre_open_job(self) -> None:
        await self._pre_open(self._clock().astimezone(IST).date())
