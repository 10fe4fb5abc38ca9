"""The simulator on a real scrip master: registry-backed universe, prices from listed strikes, /master.csv."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import pytest

from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey, PrevClose, Quote, Ticker
from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.sim import RegistryUniverse, Simulator

from .helpers import FAST, NIFTY, FeedClient

TODAY = dt.date(2026, 3, 2)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("master") / "master.csv"
    generate_master(path, today=TODAY, rows_target=1_000, fno_stocks=5)
    return path


@pytest.fixture(scope="module")
def registry(master: Path) -> InstrumentRegistry:
    return InstrumentRegistry.load(master, today=TODAY)


async def test_master_is_served_with_content_length_and_etag(master: Path) -> None:
    simulator = Simulator(master=master, today=TODAY, **FAST)  # type: ignore[arg-type]
    async with simulator as sim, httpx.AsyncClient(timeout=10) as http:
        response = await http.get(sim.master_url)
        assert response.status_code == 200
        assert response.content == master.read_bytes()
        assert int(response.headers["content-length"]) == master.stat().st_size
        assert response.headers["content-type"].startswith("text/csv")
        etag = response.headers["etag"]
        again = await http.get(sim.master_url, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""


async def test_no_master_means_404(universe) -> None:
    async with Simulator(universe=universe, **FAST) as sim, httpx.AsyncClient() as http:  # type: ignore[arg-type]
        assert (await http.get(sim.master_url)).status_code == 404


async def test_registry_universe_accepts_only_listed_ids(
    master: Path, registry: InstrumentRegistry, open_client
) -> None:
    expiry = registry.option_expiries("NIFTY")[0]
    rows = registry.strikes("NIFTY", expiry)
    atm = min(rows, key=lambda row: abs(row.strike - 26_000))
    reliance = InstrumentKey(ExchangeSegment.NSE_EQ, 2885)
    listed = [NIFTY, reliance, atm.ce, atm.pe]
    unlisted = [InstrumentKey(ExchangeSegment.NSE_FNO, 1), InstrumentKey(ExchangeSegment.IDX_I, 777_777)]
    async with Simulator(master=master, today=TODAY, rate=2_000, **FAST) as sim:  # type: ignore[arg-type]
        assert isinstance(sim.universe, RegistryUniverse)
        client: FeedClient = await open_client(sim.feed_url())
        await client.subscribe(FeedMode.QUOTE, [*listed, *unlisted])
        await client.wait(lambda: len({(p.segment, p.security_id) for p in client.of(Quote)}) == 4, 5.0)
        assert set(next(iter(sim.view().values()))) == set(listed)
        assert sim.stats.unknown_instruments == 2
        assert {(p.segment, p.security_id) for p in client.of(PrevClose)} == set(listed)
        sim.set_rate(0)
        await asyncio.sleep(0.05)
        spot = sim.last_values(NIFTY)["ltp"]  # type: ignore[index]
        call = sim.last_values(atm.ce)["ltp"]  # type: ignore[index]
        put = sim.last_values(atm.pe)["ltp"]  # type: ignore[index]
        assert 25_000 < spot < 27_000
        assert 1_000 < sim.last_values(reliance)["ltp"] < 2_000  # type: ignore[index]  # ≈ its strikes
        assert abs((call - put) - (spot - atm.strike)) < 0.01 * spot  # a consistent chain


async def test_registry_universe_on_a_real_extract(samples_dir: Path, open_client) -> None:
    """The real BANKNIFTY extract (tab-separated, spreadsheet dates, 2025 expiries: long expired)."""
    universe = RegistryUniverse.load(samples_dir / "detailed-banknifty-options-2025.tsv")
    key = InstrumentKey(ExchangeSegment.NSE_FNO, 35000)  # BANKNIFTY 32000 CE, July 2025
    [spec] = universe.lookup_many([key])
    assert spec is not None
    assert spec.underlying == "BANKNIFTY"
    assert spec.strike == 32_000
    assert spec.lot_size == 35
    async with Simulator(universe=universe, rate=500, **FAST) as sim:  # type: ignore[arg-type]
        client: FeedClient = await open_client(sim.feed_url())
        await client.subscribe(FeedMode.TICKER, [key])
        await client.wait(lambda: client.of(Ticker))
        spot = sim.model.underlying_price("BANKNIFTY")
        assert client.of(Ticker)[-1].ltp == pytest.approx(spot - 32_000, abs=100)  # expired: intrinsic
