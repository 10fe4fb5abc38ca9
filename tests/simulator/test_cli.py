"""``tickgate simulate`` as another process runs it: the SIMULATOR line, the control API, clean SIGTERM."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys
from pathlib import Path

import httpx
import pytest

import pinned
from tickgate.dhan.protocol import FeedMode, Ticker
from tickgate.instruments import generate_master

from .helpers import NIFTY, FeedClient

TODAY = pinned.TODAY


@pytest.fixture
def small_master(tmp_path: Path) -> Path:
    path = tmp_path / "master.csv"
    generate_master(path, today=TODAY, rows_target=1_000, fno_stocks=5)
    return path


async def test_simulate_command_runs_and_stops_cleanly(small_master: Path, open_client) -> None:
    script = "import sys; from tickgate.cli import app; sys.exit(app())"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, "simulate", "--master", str(small_master), "--rate", "500",
        "--ping-interval", "0.2", "--token", "cli-token", "--client-id", "42",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert line.startswith("SIMULATOR ws://127.0.0.1:")
        url = line.split()[1]
        client: FeedClient = await open_client(f"{url}/?version=2&token=cli-token&clientId=42&authType=2")
        await client.subscribe(FeedMode.TICKER, [NIFTY])
        await client.wait(lambda: len(client.of(Ticker)) > 10, 5.0)
        async with httpx.AsyncClient(base_url=url.replace("ws://", "http://"), timeout=10) as http:
            state = (await http.get("/control/state")).json()
            assert state["sockets"]["1"]["subscriptions"] == {"IDX_I:13": "TICKER"}
            assert (await http.get("/master.csv")).content == small_master.read_bytes()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        await client.wait_closed()
        assert client.close_exc is None or client.close_exc.rcvd is not None  # closed politely (1001)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_simulate_on_a_virtual_clock_reports_it_and_another_process_can_join(
    small_master: Path,
) -> None:
    """``--clock-start``/``--clock-speed``: the control API reports the clock, the packets' LTT follows it,
    and the printed CLOCK line makes another process's clock read the same time."""
    from tickgate.config import Settings

    start = "2026-12-08T09:10:00+05:30"
    script = "import sys; from tickgate.cli import app; sys.exit(app())"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, "simulate", "--master", str(small_master), "--rate", "500",
        "--clock-start", start, "--clock-speed", "120",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip() for _ in range(5)]
        url = lines[0].split()[1]
        [clock_line] = [line for line in lines if line.startswith("CLOCK ")]
        env = dict(item.split("=", 1) for item in clock_line.split()[1:])
        assert env["TICKGATE_CLOCK_START"] == dt.datetime.fromisoformat(start).isoformat()
        assert env["TICKGATE_CLOCK_SPEED"] == "120"
        joined = Settings(
            clock_start=dt.datetime.fromisoformat(env["TICKGATE_CLOCK_START"]),
            clock_speed=float(env["TICKGATE_CLOCK_SPEED"]),
            clock_anchor=float(env["TICKGATE_CLOCK_ANCHOR"]),
        ).make_clock()
        async with httpx.AsyncClient(base_url=url.replace("ws://", "http://"), timeout=10) as http:
            reported = (await http.get("/control/clock")).json()["clock"]
            mine = joined.now()
        assert reported["virtual"] is True
        assert reported["speed"] == 120
        theirs = dt.datetime.fromisoformat(reported["now"])
        assert abs((mine - theirs).total_seconds()) < 120 * 0.5  # half a real second of HTTP round trip
        assert (
            dt.datetime.fromisoformat(start)
            <= theirs
            < dt.datetime.fromisoformat(start) + dt.timedelta(hours=1)
        )
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)
