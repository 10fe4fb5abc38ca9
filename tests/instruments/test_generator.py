"""The generated master: Dhan's exact formats, real ids, realistic structure, deterministic, loads back."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.instruments.generator import COMPACT_HEADER, DETAILED_HEADER, FULL_SIZE_ROWS, GeneratorStats

from .conftest import SMALL, TODAY, parse_date, read_rows

Masters = dict[str, tuple[Path, GeneratorStats]]


def test_headers_are_the_real_ones(samples_dir: Path) -> None:
    with open(samples_dir / "compact-equity-index-2026.csv") as fh:
        assert fh.readline().rstrip("\r\n") == COMPACT_HEADER
    with open(samples_dir / "detailed-nse-equity-index-2026.csv") as fh:
        assert fh.readline().rstrip("\r\n") == DETAILED_HEADER


def test_same_seed_and_day_give_identical_bytes(tmp_path: Path) -> None:
    kw = {"today": TODAY, "rows_target": 1, "fno_stocks": 2}
    a, b, c, d = (tmp_path / f"{n}.csv" for n in "abcd")
    generate_master(a, fmt="compact", seed=5, **kw)  # type: ignore[arg-type]
    generate_master(b, fmt="compact", seed=5, **kw)  # type: ignore[arg-type]
    generate_master(c, fmt="compact", seed=6, **kw)  # type: ignore[arg-type]
    generate_master(d, fmt="compact", seed=5, **{**kw, "today": TODAY + dt.timedelta(days=7)})  # type: ignore[arg-type]
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # the seed drives the cash universe
    assert a.read_bytes() != d.read_bytes()  # expiries follow the day
    with pytest.raises(ValueError, match="format"):
        generate_master(a, fmt="xml")  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["compact", "detailed"])
def test_loads_back_with_the_expected_counts(small_masters: Masters, fmt: str) -> None:
    path, gen = small_masters[fmt]
    reg = InstrumentRegistry.load(path, today=TODAY)
    rows = read_rows(path)
    assert gen.rows == len(rows) == reg.stats.rows_read
    assert gen.rows >= SMALL["rows_target"]
    test_rows = reg.stats.skipped.pop("nse_test_symbol")
    assert test_rows > 0
    assert reg.stats.skipped == {}
    expected = Counter(gen.by_instrument)
    expected["EQUITY"] -= test_rows
    assert reg.stats.by_instrument == dict(expected)
    by_es = Counter(gen.by_exchange_segment)
    by_es["NSE/E"] -= test_rows
    assert reg.stats.by_exchange_segment == dict(by_es)


def test_real_ids_as_in_dhans_files(small_masters: Masters, samples_dir: Path) -> None:
    path, _ = small_masters["compact"]
    gen = {
        (r["SEM_SEGMENT"], r["SEM_TRADING_SYMBOL"]): r["SEM_SMST_SECURITY_ID"]
        for r in read_rows(path)
        if r["SEM_SEGMENT"] == "I" or (r["SEM_SEGMENT"] == "E" and r["SEM_EXM_EXCH_ID"] == "NSE")
    }
    real = read_rows(samples_dir / "compact-equity-index-2026.csv")
    real_idx = {r["SEM_TRADING_SYMBOL"]: r["SEM_SMST_SECURITY_ID"] for r in real if r["SEM_SEGMENT"] == "I"}
    for sym in (
        "NIFTY",
        "BANKNIFTY",
        "FINNIFTY",
        "MIDCPNIFTY",
        "NIFTYNXT50",
        "INDIA VIX",
        "SENSEX",
        "BANKEX",
    ):
        assert gen[("I", sym)] == real_idx[sym], sym
    assert gen[("I", "SENSEX50")] == real_idx["SNSX50"]  # Dhan calls the index SNSX50; derivatives SENSEX50
    real_eq = {r["SEM_TRADING_SYMBOL"]: r["SEM_SMST_SECURITY_ID"] for r in real
               if r["SEM_EXM_EXCH_ID"] == "NSE" and r["SEM_SEGMENT"] == "E"}  # fmt: skip
    for sym in ("RELIANCE", "HDFCBANK", "TCS", "INFY", "SBIN"):
        assert gen[("E", sym)] == real_eq[sym], sym


def test_file_level_conventions(small_masters: Masters) -> None:
    rows = read_rows(small_masters["compact"][0])
    futures = [r for r in rows if r["SEM_INSTRUMENT_NAME"].startswith("FUT")]
    assert futures
    assert {r["SEM_STRIKE_PRICE"] for r in futures} == {"-0.01000"}
    indices = [r for r in rows if r["SEM_SEGMENT"] == "I"]
    assert {r["SEM_EXPIRY_DATE"] for r in indices} == {"0001-01-01"}
    options = [r for r in rows if r["SEM_INSTRUMENT_NAME"] == "OPTIDX"]
    assert {r["SEM_TICK_SIZE"] for r in options} == {"5.0000"}  # paise
    assert {r["SEM_OPTION_TYPE"] for r in options} == {"CE", "PE"}
    assert any(r["SEM_TRADING_SYMBOL"] == "011NSETEST" for r in rows)
    mcx = {r["SEM_EXPIRY_DATE"][11:] for r in rows if r["SEM_EXM_EXCH_ID"] == "MCX"}
    assert mcx == {"23:30:00"}
    detailed = read_rows(small_masters["detailed"][0])
    fut_ids = {r["SECURITY_ID"] for r in detailed if r["INSTRUMENT"] == "FUTCOM"}
    optfut = [r for r in detailed if r["INSTRUMENT"] == "OPTFUT"]
    assert optfut
    assert all(r["UNDERLYING_SECURITY_ID"] in fut_ids for r in optfut)
    bn = {r["UNDERLYING_SECURITY_ID"] for r in detailed if r["UNDERLYING_SYMBOL"] == "BANKNIFTY"
          and r["INSTRUMENT"] == "OPTIDX"}  # fmt: skip
    assert bn == {"26009"}  # the exchange token, as in the real file


def test_stock_options_three_monthlies_on_last_tuesdays(small_masters: Masters) -> None:
    rows = read_rows(small_masters["detailed"][0])
    stocks = [r for r in rows if r["INSTRUMENT"] == "OPTSTK"]
    by_stock: dict[str, set[dt.date]] = {}
    strikes: Counter[tuple[str, dt.date]] = Counter()
    for r in stocks:
        d = parse_date(r["SM_EXPIRY_DATE"])
        by_stock.setdefault(r["UNDERLYING_SYMBOL"], set()).add(d)
        if r["OPTION_TYPE"] == "CE":
            strikes[(r["UNDERLYING_SYMBOL"], d)] += 1
    assert len(by_stock) == SMALL["fno_stocks"]
    for dates in by_stock.values():
        assert len(dates) == 3
        for d in dates:
            assert d.weekday() <= 1
            assert (d + dt.timedelta(days=7)).month != d.month
    assert min(strikes.values()) >= 25


def test_mcx_futures_and_options(small_masters: Masters) -> None:
    rows = read_rows(small_masters["compact"][0])
    futs: dict[str, set[str]] = {}
    for r in rows:
        if r["SEM_INSTRUMENT_NAME"] == "FUTCOM":
            futs.setdefault(r["SEM_TRADING_SYMBOL"].split("-")[0], set()).add(r["SEM_EXPIRY_DATE"])
    for sym in ("GOLD", "GOLDM", "SILVER", "SILVERM", "CRUDEOIL", "CRUDEOILM", "NATURALGAS", "COPPER", "ZINC",
                "ALUMINIUM", "LEAD", "NICKEL"):  # fmt: skip
        assert len(futs[sym]) >= 3, sym
    optfut = {r["SEM_TRADING_SYMBOL"].split("-")[0] for r in rows if r["SEM_INSTRUMENT_NAME"] == "OPTFUT"}
    assert {"CRUDEOIL", "NATURALGAS", "GOLD", "SILVER"} <= optfut


@pytest.mark.slow
def test_full_size_master_loads_fast_enough_to_be_the_default(tmp_path: Path) -> None:
    path = tmp_path / "full.csv"
    gen = generate_master(path, fmt="detailed", today=TODAY)
    assert gen.rows == FULL_SIZE_ROWS
    reg = InstrumentRegistry.load(path, today=TODAY)
    assert len(reg) == FULL_SIZE_ROWS - reg.stats.skipped["nse_test_symbol"]
    assert reg.stats.by_instrument["EQUITY"] > 10_000  # thousands of cash rows
    fno = {i for i in reg.frame.filter(reg.frame["instrument"] == "OPTSTK")["symbol"].unique().to_list()}
    assert len(fno) > 200
    assert len([e for e in reg.option_expiries("NIFTY") if e.kind == "weekly"]) >= 8
