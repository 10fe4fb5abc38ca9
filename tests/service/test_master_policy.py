"""Which scrip master a start loads. Against Dhan's own feed it is Dhan's master, downloaded (here from the
simulator's ``/master.csv``), or the newest cached copy when the download fails; never a generated one.
Offline (the simulator's feed) a generated master is the embedded default."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest

import pinned
from tickgate.config import MasterSettings, Settings
from tickgate.instruments.fetch import MasterFetchError, cached_master_path
from tickgate.service.app import resolve_master
from tickgate.sim import Simulator

REAL_FEED = "wss://api-feed.dhan.co"
TODAY = pinned.TODAY


def _settings(tmp_path: Path, master_url: str, instruments: str | None = None) -> Settings:
    master = MasterSettings(url=master_url, fetch_timeout_s=5.0, retry_pauses_s=(0.0, 0.0, 0.0))
    return Settings(data_dir=tmp_path, master=master, instruments=instruments)


async def test_against_dhan_s_feed_the_master_is_downloaded(simulator: Simulator, tmp_path: Path) -> None:
    path = await _resolve(_settings(tmp_path, simulator.master_url), REAL_FEED)
    assert path == cached_master_path(tmp_path, TODAY)
    assert path.read_bytes() == simulator.master_bytes


async def test_a_failed_download_falls_back_to_the_newest_copy_and_says_how_old(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    earlier = TODAY - dt.timedelta(days=3)
    old = cached_master_path(tmp_path, earlier)
    old.parent.mkdir(parents=True)
    assert simulator.master_bytes is not None
    old.write_bytes(simulator.master_bytes)
    with caplog.at_level(logging.ERROR):
        path = await _resolve(_settings(tmp_path, "http://127.0.0.1:9/nothing.csv"), REAL_FEED)
    assert path == old
    assert "3 day(s) ago" in caplog.text


async def test_a_configured_url_is_retried_then_falls_back_to_the_cached_copy(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``TICKGATE_INSTRUMENTS`` naming a URL (the simulator's, as `make week` runs it) takes the same path as
    Dhan's: two failed attempts are retried, three fall back to yesterday's copy with its age."""
    settings = _settings(tmp_path, "http://127.0.0.1:9/unused.csv", instruments=simulator.master_url)
    yesterday = TODAY - dt.timedelta(days=1)
    first = await asyncio.to_thread(resolve_master, settings, yesterday, feed_url="ws://127.0.0.1:1")
    assert first == cached_master_path(tmp_path, yesterday)
    simulator.faults.fail_master(3)
    with caplog.at_level(logging.WARNING):
        stale = await _resolve(settings, "ws://127.0.0.1:1")
    assert stale == first
    assert "1 day(s) ago" in caplog.text
    assert simulator.stats.master_failed == 3
    cached_master_path(tmp_path, TODAY).unlink(missing_ok=True)
    simulator.faults.fail_master(2)
    fresh = await _resolve(settings, "ws://127.0.0.1:1")
    assert fresh == cached_master_path(tmp_path, TODAY)
    assert simulator.stats.master_failed == 5


async def test_never_a_generated_master_against_dhan_s_feed(tmp_path: Path) -> None:
    with pytest.raises(MasterFetchError, match="never uses a generated master"):
        await _resolve(_settings(tmp_path, "http://127.0.0.1:9/nothing.csv"), REAL_FEED)
    assert not list((tmp_path / "masters").glob("generated-*"))


async def test_offline_a_generated_master_is_the_default(tmp_path: Path) -> None:
    path = await _resolve(_settings(tmp_path, "http://127.0.0.1:9/nothing.csv"), "ws://127.0.0.1:1")
    assert path.name == f"generated-{TODAY.isoformat()}.csv"


async def _resolve(settings: Settings, feed_url: str) -> Path:
    return await asyncio.to_thread(resolve_master, settings, TODAY, feed_url=feed_url)
