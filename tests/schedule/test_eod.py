"""End-of-day jobs on a frozen clock: trading day, holiday, the MCX US-DST switch, catch-up after downtime."""

from __future__ import annotations

import datetime as dt

import pytest

from tickgate.schedule.calendar import IST, Exchange, TradingCalendar
from tickgate.schedule.eod import EodScheduler, missed_sessions, session_close


@pytest.fixture(scope="module")
def calendar() -> TradingCalendar:
    return TradingCalendar.load()


def _at(y: int, m: int, d: int, hh: int, mm: int) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=IST)


class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[str, tuple[Exchange, ...], dt.datetime]] = []
        self.pre_open: list[dt.date] = []

    async def cleanup(self, session: str, exchanges: tuple[Exchange, ...], close: dt.datetime) -> None:
        self.runs.append((session, exchanges, close))

    async def preopen(self, day: dt.date) -> None:
        self.pre_open.append(day)


def _scheduler(calendar: TradingCalendar, rec: Recorder, now: dt.datetime) -> EodScheduler:
    return EodScheduler(calendar, rec.cleanup, rec.preopen, clock=lambda: now)


def _fire_times(sched: EodScheduler, after: dt.datetime) -> dict[str, dt.datetime]:
    return {job.id: job.trigger.get_next_fire_time(None, after) for job in sched.scheduler.get_jobs()}


def test_triggers_are_ist_cron_times(calendar: TradingCalendar) -> None:
    sched = _scheduler(calendar, Recorder(), _at(2026, 11, 25, 9, 0))
    fires = _fire_times(sched, _at(2026, 11, 25, 9, 0))
    assert fires["eod-nse-bse"] == _at(2026, 11, 25, 15, 30)
    assert fires["eod-mcx-2330"] == _at(2026, 11, 25, 23, 30)
    assert fires["eod-mcx-2355"] == _at(2026, 11, 25, 23, 55)
    assert fires["pre-open"] == _at(2026, 11, 26, 8, 30)
    friday_night = _fire_times(sched, _at(2026, 11, 27, 23, 59))
    assert friday_night["eod-nse-bse"] == _at(2026, 11, 30, 15, 30)  # weekend skipped
    for job in sched.scheduler.get_jobs():
        assert job.coalesce is True
        assert job.misfire_grace_time >= 3600


async def test_trading_day_runs_nse_at_close(calendar: TradingCalendar) -> None:
    rec = Recorder()
    await _scheduler(calendar, rec, _at(2026, 11, 25, 15, 30))._session_job("NSE_BSE")
    assert rec.runs == [("NSE_BSE", ("NSE", "BSE"), _at(2026, 11, 25, 15, 30))]


async def test_holiday_does_nothing_for_nse_but_mcx_evening_trades(calendar: TradingCalendar) -> None:
    rec = Recorder()
    guru_nanak = (2026, 11, 24)
    await _scheduler(calendar, rec, _at(*guru_nanak, 15, 30))._session_job("NSE_BSE")
    assert rec.runs == []
    await _scheduler(calendar, rec, _at(*guru_nanak, 23, 55))._session_job("MCX")
    assert rec.runs == [("MCX", ("MCX",), _at(*guru_nanak, 23, 55))]
    await _scheduler(calendar, rec, _at(2026, 12, 25, 23, 55))._session_job("MCX")  # Christmas: closed
    assert len(rec.runs) == 1


@pytest.mark.parametrize(
    ("day", "close"),
    [((2026, 10, 30), (23, 30)), ((2026, 11, 2), (23, 55))],  # US DST ended 1 Nov 2026
)
async def test_mcx_close_switches_with_us_dst(
    calendar: TradingCalendar, day: tuple[int, int, int], close: tuple[int, int]
) -> None:
    rec = Recorder()
    # the 23:30 trigger acts only on a 23:30 day; the 23:55 one always finds the close passed
    await _scheduler(calendar, rec, _at(*day, 23, 30))._session_job("MCX")
    if close == (23, 30):
        assert rec.runs == [("MCX", ("MCX",), _at(*day, *close))]
    else:
        assert rec.runs == []
        await _scheduler(calendar, rec, _at(*day, 23, 55))._session_job("MCX")
        assert rec.runs == [("MCX", ("MCX",), _at(*day, *close))]
    assert session_close(calendar, "MCX", dt.date(*day)) == _at(*day, *close)


async def test_mcx_morning_only_holiday_closes_at_17(calendar: TradingCalendar) -> None:
    rec = Recorder()
    await _scheduler(calendar, rec, _at(2026, 1, 1, 17, 0))._session_job("MCX")
    assert rec.runs == [("MCX", ("MCX",), _at(2026, 1, 1, 17, 0))]


def test_missed_runs_are_caught_up_once(calendar: TradingCalendar) -> None:
    # down from Monday 15:00 until Wednesday 10:00 (Tuesday was an NSE holiday with an MCX evening)
    now = _at(2026, 11, 25, 10, 0)
    last = {"NSE_BSE": _at(2026, 11, 20, 15, 30), "MCX": _at(2026, 11, 20, 23, 55)}
    due = missed_sessions(calendar, now, last)
    assert due == {"NSE_BSE": _at(2026, 11, 23, 15, 30), "MCX": _at(2026, 11, 24, 23, 55)}
    done = {"NSE_BSE": _at(2026, 11, 23, 15, 30), "MCX": _at(2026, 11, 24, 23, 55)}
    assert missed_sessions(calendar, now, done) == {}
    assert set(missed_sessions(calendar, now, {})) == {"NSE_BSE", "MCX"}


async def test_real_scheduler_starts_and_lists_jobs(calendar: TradingCalendar) -> None:
    sched = _scheduler(calendar, Recorder(), _at(2026, 11, 25, 9, 0))
    sched.start()
    try:
        jobs = {j["id"]: j["next_run"] for j in sched.jobs()}
        assert set(jobs) == {"eod-nse-bse", "eod-mcx-1700", "eod-mcx-2330", "eod-mcx-2355", "pre-open"}
        assert all(v is not None for v in jobs.values())
    finally:
        sched.shutdown()
