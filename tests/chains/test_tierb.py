"""Tier B universe: the shipped defaults on a generated master (size, selector semantics, shortfalls),
the daily roll, the file format's errors, and ``tickgate tierb plan``."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tickgate.chains import AtmEngine, TierBConfigError, TierBPlan, TierBUniverse
from tickgate.cli import app
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.instruments import InstrumentRegistry

from .conftest import TODAY, chain_settings

NEXT_DAY = TODAY + dt.timedelta(days=1)
NIFTY = InstrumentKey(ExchangeSegment.IDX_I, 13)
MCX_FUTURES = [
    *("GOLD", "GOLDM", "SILVER", "SILVERM", "CRUDEOIL", "CRUDEOILM", "NATURALGAS", "NATGASMINI"),
    *("COPPER", "ZINC", "ALUMINIUM", "LEAD", "NICKEL"),
]


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


@pytest.fixture(scope="module")
def shipped() -> TierBUniverse:
    return TierBUniverse.load(settings=chain_settings())


@pytest.fixture(scope="module")
def plan(shipped: TierBUniverse, registry: InstrumentRegistry) -> TierBPlan:
    return shipped.resolve(registry, TODAY, engine=AtmEngine(registry, chain_settings()))


def dates(p: TierBPlan, symbol: str) -> list[dt.date]:
    return [g.expiry.date for g in p.groups if g.entry == symbol and g.expiry is not None]


# ------------------------------------------------------------------------------------ shipped defaults


def test_shipped_universe_matches_the_seed(shipped: TierBUniverse):
    sel = {o.symbol: str(o.expiries) for o in shipped.options}
    assert sel == {
        "NIFTY": "next 8 weekly + next 4 quarterly",
        "BANKNIFTY": "next 1 monthly + next 4 quarterly",
        "SENSEX": "next 4 weekly + next 1 monthly",
        "FINNIFTY": "next 1 monthly + next 3 quarterly",
        "MIDCPNIFTY": "next 1 monthly + next 3 quarterly",
        "BANKEX": "next 1 monthly + next 3 quarterly",
        "CRUDEOIL": "next 2 expiries",
        "NATURALGAS": "next 2 expiries",
    }
    assert shipped.defaults.mode is FeedMode.QUOTE
    assert shipped.defaults.strikes == 101
    [fut] = shipped.futures
    assert fut.symbols == MCX_FUTURES
    assert fut.contracts == 1
    assert shipped.source == "tickgate/data/tier_b.toml"


def test_total_is_about_seven_and_a_half_thousand(plan: TierBPlan):
    assert 7_000 <= plan.total <= 8_200, plan.total
    assert plan.total == len(set(plan.keys()))
    assert plan.summed > plan.total  # the index key of each NIFTY chain etc. counts once in the total
    assert plan.shortfalls() == []
    by_entry = {r.entry: r for r in plan.reports}
    assert by_entry["NIFTY"].size == 12 * 202 + 1
    assert by_entry["BANKNIFTY"].size == 5 * 202 + 1
    assert by_entry["SENSEX"].size == 5 * 202 + 1
    for sym in ("FINNIFTY", "MIDCPNIFTY", "BANKEX"):
        assert by_entry[sym].size == 4 * 202 + 1
    assert by_entry["MCX futures"].size == len(MCX_FUTURES)
    assert plan.total == sum(r.size for r in plan.reports) - _shared_mcx_underlyings(plan)


def _shared_mcx_underlyings(p: TierBPlan) -> int:
    """MCX option chains subscribe the future they settle into, which the futures group may also hold."""
    futures = set(p.group("B:MCX:FUT").keys)
    return len({g.keys[0] for g in p.groups if g.window is not None and g.keys[0] in futures})


def test_groups_are_one_per_chain_with_ids_keys_and_mode(plan: TierBPlan, registry: InstrumentRegistry):
    g = plan.group("B:NIFTY:2026-07-14")
    assert g.mode is FeedMode.QUOTE
    assert g.keys[0] == NIFTY
    assert g.size == 203
    assert g.window is not None
    assert g.window.returned == 101
    assert g.window.ltp_source == "reference"
    assert "NIFTY 2026-07-14 (weekly): 101 strikes" in g.description
    for grp in plan.groups:
        assert re.fullmatch(r"B:[A-Z]+:(\d{4}-\d{2}-\d{2}|FUT)", grp.group)
    assert len({grp.group for grp in plan.groups}) == len(plan.groups)
    fut = plan.group("B:MCX:FUT")
    nearest = [registry.nearest_future(s, TODAY, exchange="MCX") for s in MCX_FUTURES]
    assert list(fut.keys) == [n.key for n in nearest if n is not None]
    crude = plan.group("B:CRUDEOIL:2026-07-16")
    crude_entry = next(o for o in TierBUniverse.load().options if o.symbol == "CRUDEOIL")
    assert crude_entry.strikes is not None
    assert crude.size == 1 + 2 * crude_entry.strikes  # the window's strikes, CE and PE, plus the future
    assert crude.window is not None
    assert crude.window.underlying.trading_symbol == "CRUDEOIL-17Jul2026-FUT"


def test_selector_semantics_on_the_generated_master(plan: TierBPlan):
    nifty = dates(plan, "NIFTY")
    weekly, quarterly = nifty[:8], nifty[8:]
    assert all(x.weekday() == 1 for x in nifty)  # NSE: Tuesdays
    assert d("2026-07-28") not in nifty  # the July monthly is neither weekly nor quarterly
    # quarterly = quarter-month month-ends: September counts although the registry calls it monthly
    assert quarterly == [d("2026-09-29"), d("2026-12-29"), d("2027-03-30"), d("2027-06-29")]
    assert len(weekly) == 8
    assert weekly[-1] < quarterly[0]
    # "next 1 monthly + next 4 quarterly": the quarterly term starts after the month the first one took
    assert dates(plan, "BANKNIFTY") == [
        d("2026-07-28"), d("2026-09-29"), d("2026-12-29"), d("2027-03-30"), d("2027-06-29"),
    ]  # fmt: skip
    sensex = dates(plan, "SENSEX")
    assert all(x.weekday() == 3 for x in sensex)  # BSE: Thursdays
    assert d("2026-07-30") in sensex  # the monthly
    assert dates(plan, "BANKEX") == [d("2026-07-30"), d("2026-09-24"), d("2026-12-31"), d("2027-03-25")]
    assert dates(plan, "NATURALGAS") == [d("2026-07-23"), d("2026-08-25")]


def test_shortfall_is_reported_not_fatal(registry: InstrumentRegistry):
    uni = TierBUniverse.parse(
        """
        [[options]]
        symbol = "BANKNIFTY"
        expiries = "next 4 weekly + next 1 monthly"
        strikes = 11

        [[options]]
        symbol = "NOSUCH"
        expiries = "next 1 monthly"

        [[futures]]
        name = "MCX"
        symbols = ["GOLD", "UNOBTANIUM"]
        """
    )
    p = uni.resolve(registry, TODAY)
    bank, nosuch, fut = p.reports
    assert (bank.asked, bank.found, bank.shortfall) == (5, 1, 4)
    assert bank.chosen == ("2026-07-28 monthly",)
    assert bank.shortfalls == ("next 4 weekly: found 0 of 4 (no weekly expiries listed)",)
    assert bank.size == 1 + 2 * 11
    assert (nosuch.found, nosuch.groups, nosuch.size) == (0, (), 0)
    assert nosuch.shortfalls[0] == "no NOSUCH options listed from 2026-07-14"
    assert (fut.asked, fut.found) == (2, 1)
    assert fut.shortfalls == ("UNOBTANIUM: no contract listed from 2026-07-14 (asked 1)",)
    assert p.shortfalls()[0] == "BANKNIFTY: next 4 weekly: found 0 of 4 (no weekly expiries listed)"
    assert [g.group for g in p.groups] == ["B:BANKNIFTY:2026-07-28", "B:MCX:FUT"]


def test_truncated_windows_are_noted(registry: InstrumentRegistry):
    uni = TierBUniverse.parse(
        '[[options]]\nsymbol = "NATURALGAS"\nexpiries = "next 1 expiry"\nstrikes = 201\n'
    )
    [report] = uni.resolve(registry, TODAY).reports
    assert report.shortfall == 0
    [note] = report.notes
    assert "window truncated" in note
    assert "83 of 201" in note


def test_live_prices_centre_the_windows(shipped: TierBUniverse, registry: InstrumentRegistry):
    p = shipped.resolve(registry, TODAY, ltp_of={NIFTY: 26_130.0}.get)
    w = p.group("B:NIFTY:2026-07-14").window
    assert w is not None
    assert (w.atm_strike, w.ltp_source) == (26_150.0, "live")
    other = p.group("B:BANKNIFTY:2026-07-28").window
    assert other is not None
    assert other.ltp_source == "reference"


def test_a_restart_centres_each_window_where_it_last_sat(
    shipped: TierBUniverse, registry: InstrumentRegistry
):
    """Without a price, a window goes back on the ATM it last sat on (the ATM cache), not on the middle of
    the listing that the first live price would move it from; a live price still wins."""
    day = dt.date(2026, 7, 14)
    placed = {("NIFTY", day): 25_500.0}
    p = shipped.resolve(registry, TODAY, placed=lambda s, d: placed.get((s, d)))
    w = p.group("B:NIFTY:2026-07-14").window
    assert w is not None
    assert (w.atm_strike, w.ltp_source) == (25_500.0, "given")
    other = p.group("B:BANKNIFTY:2026-07-28").window
    assert other is not None
    assert other.ltp_source == "reference"  # nothing placed before
    live = shipped.resolve(
        registry, TODAY, ltp_of={NIFTY: 26_130.0}.get, placed=lambda s, d: placed.get((s, d))
    ).group("B:NIFTY:2026-07-14")
    assert live.window is not None
    assert live.window.atm_strike == 26_150.0


# ---------------------------------------------------------------------------------------------- roll


def test_expired_contracts_roll_to_the_next(
    shipped: TierBUniverse, registry: InstrumentRegistry, plan: TierBPlan
):
    nxt = shipped.resolve(registry, NEXT_DAY)
    assert d("2026-07-14") not in dates(nxt, "NIFTY")
    assert len(dates(nxt, "NIFTY")) == 12
    diff = nxt.diff(plan)
    assert "B:NIFTY:2026-07-14" in diff.removed
    assert "B:NIFTY:2026-09-22" in [g.group for g in diff.added]  # the next weekly comes in
    assert nxt.diff(nxt).empty
    # four days on: the SENSEX weekly and the CRUDEOIL July options (16th) and future (17th) have expired
    day3 = shipped.resolve(registry, TODAY + dt.timedelta(days=4))
    assert d("2026-07-16") not in dates(day3, "SENSEX")
    assert dates(day3, "CRUDEOIL") == [d("2026-08-18"), d("2026-09-17")]
    fut_before, fut_after = plan.group("B:MCX:FUT"), day3.group("B:MCX:FUT")
    rolled = set(fut_before.keys) - set(fut_after.keys)
    crude_jul = registry.nearest_future("CRUDEOIL", TODAY, exchange="MCX")
    assert crude_jul is not None
    assert crude_jul.key in rolled
    assert fut_after in day3.diff(plan).changed
    assert len(fut_after.keys) == len(MCX_FUTURES)


# ----------------------------------------------------------------------------------------- the file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[options]]\nsymbol = "NIFTY"\nexpiries = "next eight weekly"\n',
            "options.0.expiries: bad expiry selector",
        ),
        (
            '[[options]]\nsymbol = "NIFTY"\nexpiries = "next 1 monthly"\nstrike = 5\n',
            "options.0.strike: Extra inputs",
        ),
        (
            '[[options]]\nsymbol = "NIFTY"\nexpiries = "next 1 monthly"\nmode = "depth"\n',
            "mode must be ticker",
        ),
        ('[[options]]\nsymbol = "NIFTY"\nexpiries = "next 1 monthly"\nstrikes = 0\n', "options.0.strikes"),
        ('[[options]]\nsymbol = "NIFTY"\n', "options.0.expiries: Field required"),
        ('[[futures]]\nname = "MCX"\nsymbols = []\n', "futures.0.symbols"),
        ("[[options]\n", "not valid TOML"),
        (
            '[[options]]\nsymbol = "NIFTY"\nexpiries = "next 1 monthly"\n'
            '[[options]]\nsymbol = "nifty"\nexpiries = "next 1 weekly"\n',
            "options for NIFTY are declared twice",
        ),
    ],
)
def test_bad_files_say_where(text: str, message: str):
    with pytest.raises(TierBConfigError) as exc:
        TierBUniverse.parse(text, "my.toml")
    assert str(exc.value).startswith("my.toml: ")
    assert message in str(exc.value)


def test_load_from_settings_and_path(tmp_path: Path):
    path = tmp_path / "tb.toml"
    path.write_text('[defaults]\nmode = "full"\n[[options]]\nsymbol = "nifty"\nexpiries = "next 1 weekly"\n')
    uni = TierBUniverse.load(settings=chain_settings(tier_b=path))
    assert uni.source == str(path)
    assert uni.defaults.mode is FeedMode.FULL
    assert uni.options[0].symbol == "NIFTY"
    assert TierBUniverse.load(path).options == uni.options
    with pytest.raises(TierBConfigError, match="cannot read Tier B universe"):
        TierBUniverse.load(tmp_path / "missing.toml")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_plan_on_a_given_master(master_path: Path):
    result = CliRunner().invoke(app, ["tierb", "plan", "--master", str(master_path), "--today", str(TODAY)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "B:NIFTY:2026-07-14" in out
    assert "B:MCX:FUT" in out
    m = re.search(r"Tier B total: ([\d,]+) distinct instruments in (\d+) groups", out)
    assert m is not None
    assert 7_000 <= int(m.group(1).replace(",", "")) <= 8_200
    assert m.group(2) == "39"


def test_cli_plan_on_a_generated_master_reports_shortfalls(tmp_path: Path):
    universe = tmp_path / "u.toml"
    universe.write_text('[[options]]\nsymbol = "BANKNIFTY"\nexpiries = "next 2 weekly + next 1 monthly"\n')
    result = CliRunner().invoke(app, ["tierb", "plan", "--today", "2026-03-02", "--universe", str(universe)])
    assert result.exit_code == 0, result.output
    assert "generated master (seed 0, 2026-03-02)" in result.output
    # the last Tuesday of March 2026 is a holiday (Shri Mahavir Jayanti): the monthly expires on Monday
    assert "B:BANKNIFTY:2026-03-30" in result.output
    assert "1 shortfall(s)" in result.output
    assert "  BANKNIFTY: next 2 weekly: found 0 of 2 (no weekly expiries listed)\n" in result.output


def test_cli_errors(tmp_path: Path):
    runner = CliRunner()
    bad_day = runner.invoke(app, ["tierb", "plan", "--today", "14-07-2026"])
    assert bad_day.exit_code == 2
    assert "YYYY-MM-DD" in bad_day.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[[options]]\nsymbol = "X"\nexpiries = "soon"\n')
    bad_file = runner.invoke(app, ["tierb", "plan", "--universe", str(bad), "--today", str(TODAY)])
    assert bad_file.exit_code == 2
    assert "bad expiry selector 'soon'" in bad_file.output
