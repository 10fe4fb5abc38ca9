"""``tickgate simulate`` as another process runs it: the SIMULATOR line, the control API, clean SIGTERM."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tickgate.dhan.protocol import FeedMode, Ticker
from tickgate.instruments import generate_master

from .helpers import NIFTY, FeedClient


@pytest.fixture
def small_master(tmp_path: Path) -> Path:
    path = tmp_path / "master.csv"
    generate_master(path, today=dt.date.today(), rows_target=1_000, fno_stocks=5)
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
