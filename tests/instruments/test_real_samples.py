"""The three real Dhan extracts load, and the registry agrees with what the files say.

Every expected value is looked up in the file with the stdlib csv module, independently of the loader.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.instruments import AmbiguousSecurityIdError, InstrumentRegistry

from .conftest import parse_date, read_rows

COMPACT = "compact-equity-index-2026.csv"
DETAILED = "detailed-nse-equity-index-2026.csv"
BANKNIFTY = "detailed-banknifty-options-2025.tsv"


@pytest.fixture(scope="module")
def compact_rows(samples_dir: Path) -> list[dict[str, str]]:
    return read_rows(samples_dir / COMPACT)


@pytest.fixture(scope="module")
def detailed_rows(samples_dir: Path) -> list[dict[str, str]]:
    return read_rows(samples_dir / DETAILED)


@pytest.fixture(scope="module")
def bn_rows(samples_dir: Path) -> list[dict[str, str]]:
    return read_rows(samples_dir / BANKNIFTY)


@pytest.fixture(scope="module")
def bn_today(bn_rows: list[dict[str, str]]) -> dt.date:
    """A day before the sample's first expiry (its 2025 expiries are in the past now)."""
    first = min(parse_date(r["SM_EXPIRY_DATE"]) for r in bn_rows if r["INSTRUMENT"] == "OPTIDX")
    return first - dt.timedelta(days=10)


@pytest.fixture(scope="module")
def compact(samples_dir: Path) -> InstrumentRegistry:
    return InstrumentRegistry.load(samples_dir / COMPACT)


@pytest.fixture(scope="module")
def detailed(samples_dir: Path) -> InstrumentRegistry:
    return InstrumentRegistry.load(samples_dir / DETAILED)


@pytest.fixture(scope="module")
def banknifty(samples_dir: Path, bn_today: dt.date) -> InstrumentRegistry:
    return InstrumentRegistry.load(samples_dir / BANKNIFTY, today=bn_today)


def _test_symbol_count(rows: list[dict[str, str]], exch: str, symbol_col: str) -> int:
    return sum(1 for r in rows if r[exch] == "NSE" and r[symbol_col].endswith("NSETEST"))


def test_all_three_samples_load_with_every_row_accounted_for(
    *,
    compact: InstrumentRegistry,
    detailed: InstrumentRegistry,
    banknifty: InstrumentRegistry,
    compact_rows: list[dict[str, str]],
    detailed_rows: list[dict[str, str]],
    bn_rows: list[dict[str, str]],
) -> None:
    cases = [
        (compact, compact_rows, "SEM_EXM_EXCH_ID", "SEM_TRADING_SYMBOL", "compact", ","),
        (detailed, detailed_rows, "EXCH_ID", "UNDERLYING_SYMBOL", "detailed", ","),
        (banknifty, bn_rows, "EXCH_ID", "UNDERLYING_SYMBOL", "detailed", "\t"),
    ]
    for reg, rows, exch_col, sym_col, fmt, sep in cases:
        tests = _test_symbol_count(rows, exch_col, sym_col)
        assert reg.stats.format == fmt
        assert reg.stats.separator == sep
        assert reg.stats.rows_read == len(rows)
        assert reg.stats.skipped.get("nse_test_symbol", 0) == tests
        assert len(reg) == len(rows) - tests == reg.stats.rows_loaded
    assert _test_symbol_count(compact_rows, "SEM_EXM_EXCH_ID", "SEM_TRADING_SYMBOL") > 0  # filter exercised


def test_composition_matches_the_file(
    compact: InstrumentRegistry, compact_rows: list[dict[str, str]]
) -> None:
    kept = [r for r in compact_rows if not r["SEM_TRADING_SYMBOL"].endswith("NSETEST")]
    expected = Counter((r["SEM_EXM_EXCH_ID"], r["SEM_SEGMENT"], r["SEM_INSTRUMENT_NAME"]) for r in kept)
    assert compact.stats.by_exchange_segment_instrument == dict(expected)


def _index_id(rows: list[dict[str, str]], symbol: str, exch: str, sym_col: str, id_col: str) -> int:
    (sid,) = {
        int(r[id_col])
        for r in rows
        if r[sym_col] == symbol
        and r.get("SEM_INSTRUMENT_NAME", r.get("INSTRUMENT")) == "INDEX"
        and r.get("SEM_EXM_EXCH_ID", r.get("EXCH_ID")) == exch
    }
    return sid


@pytest.mark.parametrize(("symbol", "exch"), [("NIFTY", "NSE"), ("BANKNIFTY", "NSE"), ("SENSEX", "BSE")])
def test_indices_are_idx_i_with_the_file_s_ids(
    compact: InstrumentRegistry, compact_rows: list[dict[str, str]], symbol: str, exch: str
) -> None:
    sid = _index_id(compact_rows, symbol, exch, "SEM_TRADING_SYMBOL", "SEM_SMST_SECURITY_ID")
    index = compact.underlying(symbol)
    assert index is not None
    assert index.key == InstrumentKey(ExchangeSegment.IDX_I, sid)
    assert index.exchange == exch
    assert index.instrument == "INDEX"
    assert compact.get(InstrumentKey(ExchangeSegment.IDX_I, sid)) == index


def test_the_fact_sheet_ids_hold_in_the_real_files(
    compact_rows: list[dict[str, str]], detailed_rows: list[dict[str, str]]
) -> None:
    # The ids the rest of tickgate relies on (fact sheet): the real files must agree.
    assert _index_id(compact_rows, "NIFTY", "NSE", "SEM_TRADING_SYMBOL", "SEM_SMST_SECURITY_ID") == 13
    assert _index_id(compact_rows, "SENSEX", "BSE", "SEM_TRADING_SYMBOL", "SEM_SMST_SECURITY_ID") == 51
    assert _index_id(detailed_rows, "NIFTY", "NSE", "UNDERLYING_SYMBOL", "SECURITY_ID") == 13
    reliance = {r["SECURITY_ID"] for r in detailed_rows if r["UNDERLYING_SYMBOL"] == "RELIANCE"}
    assert reliance == {"2885"}


@pytest.mark.parametrize("fixture", ["compact", "detailed"])
def test_reliance_on_nse(
    request: pytest.FixtureRequest, fixture: str, compact_rows: list[dict[str, str]]
) -> None:
    reg: InstrumentRegistry = request.getfixturevalue(fixture)
    (row,) = [
        r for r in compact_rows if r["SEM_EXM_EXCH_ID"] == "NSE" and r["SEM_TRADING_SYMBOL"] == "RELIANCE"
    ]
    stock = reg.underlying("RELIANCE", "NSE")
    assert stock is not None
    assert stock.key == InstrumentKey(ExchangeSegment.NSE_EQ, int(row["SEM_SMST_SECURITY_ID"]))
    assert stock.tick_size == pytest.approx(float(row["SEM_TICK_SIZE"]) / 100)  # paise → rupees
    assert stock.lot_size == int(float(row["SEM_LOT_UNITS"]))
    assert stock.display_name == row["SEM_CUSTOM_SYMBOL"]
    assert stock.expiry is None
    assert stock.strike is None
    assert stock.option_type is None


def test_index_tick_stays_in_rupees(compact: InstrumentRegistry, compact_rows: list[dict[str, str]]) -> None:
    (row,) = [r for r in compact_rows if r["SEM_SEGMENT"] == "I" and r["SEM_TRADING_SYMBOL"] == "NIFTY"]
    nifty = compact.underlying("NIFTY")
    assert nifty is not None
    assert nifty.tick_size == pytest.approx(float(row["SEM_TICK_SIZE"]))
    assert nifty.expiry is None  # 0001-01-01 means "none"


def test_ids_are_unique_per_segment_not_globally(
    compact: InstrumentRegistry, compact_rows: list[dict[str, str]]
) -> None:
    by_id: dict[str, set[tuple[str, str]]] = {}
    for r in compact_rows:
        by_id.setdefault(r["SEM_SMST_SECURITY_ID"], set()).add((r["SEM_EXM_EXCH_ID"], r["SEM_SEGMENT"]))
    sid = next(int(k) for k, v in sorted(by_id.items()) if {("NSE", "I"), ("NSE", "E")} <= v)
    with pytest.raises(AmbiguousSecurityIdError, match="IDX_I"):
        compact.by_security_id(sid)
    index = compact.by_security_id(sid, ExchangeSegment.IDX_I)
    stock = compact.by_security_id(sid, ExchangeSegment.NSE_EQ)
    assert index is not None
    assert index.instrument == "INDEX"
    assert stock is not None
    assert stock.instrument == "EQUITY"
    assert compact.by_security_id(sid, ExchangeSegment.MCX_COMM) is None


def test_banknifty_options_lot_size_from_file(
    banknifty: InstrumentRegistry, bn_rows: list[dict[str, str]]
) -> None:
    lots = {int(float(r["LOT_SIZE"])) for r in bn_rows if r["INSTRUMENT"] == "OPTIDX"}
    assert len(lots) == 1
    (lot,) = lots
    assert lot == 35  # the fact; the file above says so too
    first = banknifty.option_expiries("BANKNIFTY")[0]
    for row in banknifty.strikes("BANKNIFTY", first):
        for key in (row.ce, row.pe):
            assert key is not None
            opt = banknifty.get(key)
            assert opt is not None
            assert opt.lot_size == lot
            assert opt.tick_size == pytest.approx(0.05)


def _file_chain(bn_rows: list[dict[str, str]], expiry: dt.date) -> dict[float, dict[str, int]]:
    chain: dict[float, dict[str, int]] = {}
    for r in bn_rows:
        if r["INSTRUMENT"] == "OPTIDX" and parse_date(r["SM_EXPIRY_DATE"]) == expiry:
            chain.setdefault(float(r["STRIKE_PRICE"]), {})[r["OPTION_TYPE"]] = int(r["SECURITY_ID"])
    return chain


def test_banknifty_expiries_strikes_and_step_match_the_file(
    banknifty: InstrumentRegistry, bn_rows: list[dict[str, str]], bn_today: dt.date
) -> None:
    expected = sorted({parse_date(r["SM_EXPIRY_DATE"]) for r in bn_rows if r["INSTRUMENT"] == "OPTIDX"})
    expiries = banknifty.option_expiries("BANKNIFTY")
    assert [e.date for e in expiries] == expected
    assert all(e.kind in ("monthly", "quarterly") for e in expiries)  # every row is flagged M
    for exp in expected:
        chain = _file_chain(bn_rows, exp)
        rows = banknifty.strikes("BANKNIFTY", exp)
        assert [r.strike for r in rows] == sorted(chain)
        for r in rows:
            assert r.ce == InstrumentKey(ExchangeSegment.NSE_FNO, chain[r.strike]["CE"])
            assert r.pe == InstrumentKey(ExchangeSegment.NSE_FNO, chain[r.strike]["PE"])
        gaps = Counter(round(b - a, 6) for a, b in zip(sorted(chain), sorted(chain)[1:], strict=False))
        top = max(gaps.values())
        assert banknifty.strike_step("BANKNIFTY", exp) == min(g for g, n in gaps.items() if n == top)
    # the nearest monthly lists strikes at 100 and, further out, at 500: the step is the common one
    near = _file_chain(bn_rows, expected[0])
    near_gaps = {round(b - a, 6) for a, b in zip(sorted(near), sorted(near)[1:], strict=False)}
    assert len(near_gaps) > 1
    assert banknifty.strike_step("BANKNIFTY", expected[0]) == 100.0
    # nothing is listed from a later day on: expiries are future-only
    assert banknifty.option_expiries("BANKNIFTY", today=expected[-1] + dt.timedelta(days=1)) == []
    assert [e.date for e in banknifty.option_expiries("BANKNIFTY", today=expected[1])] == expected[1:]


def test_banknifty_options_link_to_the_index_by_symbol_not_token(
    banknifty: InstrumentRegistry, bn_rows: list[dict[str, str]]
) -> None:
    tokens = {r["UNDERLYING_SECURITY_ID"] for r in bn_rows if r["INSTRUMENT"] == "OPTIDX"}
    (index_row,) = [r for r in bn_rows if r["INSTRUMENT"] == "INDEX"]
    assert tokens != {index_row["SECURITY_ID"]}  # the file points options at the exchange token
    first = banknifty.option_expiries("BANKNIFTY")[0]
    key = banknifty.strikes("BANKNIFTY", first)[0].ce
    assert key is not None
    option = banknifty.get(key)
    assert option is not None
    assert str(option.underlying_security_id) in tokens
    under = banknifty.underlying_of(option)
    assert under is not None
    assert under.key == InstrumentKey(ExchangeSegment.IDX_I, int(index_row["SECURITY_ID"]))


def test_banknifty_futures(banknifty: InstrumentRegistry, bn_rows: list[dict[str, str]]) -> None:
    futs = sorted(
        (parse_date(r["SM_EXPIRY_DATE"]), int(r["SECURITY_ID"]))
        for r in bn_rows
        if r["INSTRUMENT"] == "FUTIDX"
    )
    assert [e.date for e in banknifty.future_expiries("BANKNIFTY")] == [d for d, _ in futs]
    nearest = banknifty.nearest_future("BANKNIFTY")
    assert nearest is not None
    assert nearest.key.security_id == futs[0][1]
    assert nearest.strike is None  # the file's -0.01 placeholder is not a strike
    later = banknifty.nearest_future("BANKNIFTY", today=futs[0][0] + dt.timedelta(days=1))
    assert later is not None
    assert later.key.security_id == futs[1][1]


def test_search_on_the_real_compact_file(compact: InstrumentRegistry) -> None:
    hits = compact.search("reliance", limit=5)
    assert [h.trading_symbol for h in hits[:2]] == ["RELIANCE", "RELIANCE"]
    assert {h.exchange for h in hits[:2]} == {"NSE", "BSE"}
    assert hits[0].exchange == "NSE"
    assert len(hits) == 5
    assert all("RELIANCE" in (h.trading_symbol + " " + h.display_name).upper() for h in hits)
