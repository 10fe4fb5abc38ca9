"""Registry queries: ids, chains, expiries, underlyings, search ranking — on generated and tiny masters."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest

from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.instruments import Expiry, InstrumentRegistry
from tickgate.instruments.generator import COMPACT_HEADER

from .conftest import TODAY

TUESDAY, THURSDAY = 1, 3


def _master(rows: list[str]) -> bytes:
    return ("\n".join([COMPACT_HEADER, *rows]) + "\n").encode()


def _opt(
    sid: int, sym: str, expiry: str, strike: float, opt: str, *, flag: str = "M", exch: str = "NSE"
) -> str:
    seg = "D" if exch != "MCX" else "M"
    k = f"{strike:g}"
    return (f"{exch},{seg},{sid},OPTIDX,0,{sym}-Dec2026-{k}-{opt},50.0,{sym} {k} {opt},{expiry} 14:30:00,"
            f"{strike:.5f},{opt},5.0000,{flag},OP,,")  # fmt: skip


# ------------------------------------------------------------------------------------------ lookups


def test_by_id_get_and_get_many(detailed: InstrumentRegistry) -> None:
    nifty = detailed.get(InstrumentKey(ExchangeSegment.IDX_I, 13))
    assert nifty is not None
    assert nifty.symbol == "NIFTY"
    keys = [InstrumentKey(ExchangeSegment.IDX_I, 13), InstrumentKey(ExchangeSegment.NSE_EQ, 2885),
            InstrumentKey(ExchangeSegment.MCX_COMM, 1), InstrumentKey(ExchangeSegment.IDX_I, 25)]  # fmt: skip
    got = detailed.get_many(keys)
    assert [g.key if g else None for g in got] == [keys[0], keys[1], None, keys[3]]
    assert got[0] is nifty  # materialised once, then cached
    assert detailed.get_many([]) == []


def test_both_formats_answer_the_same(small_registries: dict[str, InstrumentRegistry]) -> None:
    c, d = small_registries["compact"], small_registries["detailed"]
    assert len(c) == len(d)
    for sym in ("NIFTY", "SENSEX", "BANKNIFTY", "RELIANCE", "CRUDEOIL", "USDINR"):
        assert c.option_expiries(sym) == d.option_expiries(sym)
        first = c.option_expiries(sym)[0]
        assert c.strikes(sym, first) == d.strikes(sym, first)
        cf, df = c.nearest_future(sym), d.nearest_future(sym)
        assert cf is not None
        assert df is not None
        assert cf.key == df.key
        assert cf.trading_symbol == df.trading_symbol
        assert cf.expiry == df.expiry
        cu, du = c.underlying(sym), d.underlying(sym)
        assert cu is not None
        assert du is not None
        assert cu.key == du.key
    assert [i.key for i in c.search("bank")] == [i.key for i in d.search("bank")]


# ------------------------------------------------------------------------------------------- chains


def test_nifty_weeklies_on_tuesdays_and_monthly_kinds(detailed: InstrumentRegistry) -> None:
    expiries = detailed.option_expiries("NIFTY")
    dates = [e.date for e in expiries]
    assert dates == sorted(dates)
    assert dates[0] >= TODAY
    weekly = [e.date for e in expiries if e.kind == "weekly"]
    assert len(weekly) >= 6
    assert all(d.weekday() <= TUESDAY for d in weekly)
    monthly = [e.date for e in expiries if e.kind == "monthly"]
    assert len(monthly) == 3
    for d in monthly:  # the last Tuesday of its month (or the trading day before it)
        assert (d + dt.timedelta(days=7)).month != d.month or d.weekday() != TUESDAY
    quarterly = [e.date for e in expiries if e.kind == "quarterly"]
    assert quarterly
    assert all(d.month in (3, 6, 9, 12) for d in quarterly)
    assert min(quarterly) > max(monthly)


def test_sensex_weeklies_are_thursdays(detailed: InstrumentRegistry) -> None:
    expiries = detailed.option_expiries("SENSEX")
    assert {e.date.weekday() for e in expiries if e.kind == "weekly"} <= {THURSDAY, THURSDAY - 1}
    under = detailed.underlying("SENSEX")
    assert under is not None
    assert under.key == InstrumentKey(ExchangeSegment.IDX_I, 51)


def test_expiries_are_future_only(detailed: InstrumentRegistry) -> None:
    all_exp = detailed.option_expiries("NIFTY")
    later = detailed.option_expiries("NIFTY", today=all_exp[2].date)
    assert later == all_exp[2:]
    assert detailed.option_expiries("NIFTY", today=dt.date(2040, 1, 1)) == []
    assert detailed.option_expiries("NOSUCH") == []
    assert detailed.future_expiries("nifty") == detailed.future_expiries("NIFTY")  # case-insensitive


def test_strike_rows_resolve_to_matching_contracts(detailed: InstrumentRegistry) -> None:
    exp = detailed.option_expiries("BANKNIFTY")[0]
    rows = detailed.strikes("BANKNIFTY", exp)
    assert len(rows) >= 101
    assert [r.strike for r in rows] == sorted({r.strike for r in rows})
    for r in rows[::25]:
        for key, kind in ((r.ce, "CE"), (r.pe, "PE")):
            assert key is not None
            inst = detailed.get(key)
            assert inst is not None
            assert (inst.strike, inst.option_type, inst.expiry, inst.symbol) == (
                r.strike,
                kind,
                exp.date,
                "BANKNIFTY",
            )
    assert detailed.strikes("BANKNIFTY", exp.date) == rows  # a date works as well as an Expiry
    assert detailed.strikes("BANKNIFTY", dt.date(2001, 1, 1)) == []


def test_non_uniform_strike_grid_uses_the_most_common_gap() -> None:
    exp = "2026-12-29"
    fine = [25000 + 50 * i for i in range(11)]  # 10 gaps of 50
    wide = [24000, 24500, 26000, 26500, 27000]  # coarser far from the money
    rows = [
        _opt(1000 + i, "NIFTY", exp, k, t)
        for i, (k, t) in enumerate((k, t) for k in fine + wide for t in ("CE", "PE"))
    ]
    tie = [_opt(2000 + i, "TIE", exp, k, "CE") for i, k in enumerate([100, 110, 120, 140, 160])]  # 2×10, 2×20
    reg = InstrumentRegistry.load(_master(rows + tie), today=dt.date(2026, 12, 1))
    assert reg.strike_step("NIFTY", dt.date(2026, 12, 29)) == 50.0
    assert reg.strike_step("TIE", dt.date(2026, 12, 29)) == 10.0  # ties go to the finer gap
    strikes = reg.strikes("TIE", dt.date(2026, 12, 29))
    assert all(r.pe is None and r.ce is not None for r in strikes)  # a missing side is None
    with pytest.raises(LookupError):
        reg.strike_step("NIFTY", dt.date(2030, 1, 1))


def test_generated_index_chains_are_wide_and_non_uniform(detailed: InstrumentRegistry) -> None:
    for sym in ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50", "SENSEX", "BANKEX", "SENSEX50"):
        expiries = detailed.option_expiries(sym)
        assert expiries, sym
        for exp in expiries:
            strikes = [r.strike for r in detailed.strikes(sym, exp)]
            assert len(strikes) >= 101, (sym, exp)
            gaps = {round(b - a, 6) for a, b in itertools.pairwise(strikes)}
            assert len(gaps) > 1  # coarser far from the money
            assert detailed.strike_step(sym, exp) == min(gaps)
    assert len([e for e in detailed.option_expiries("NIFTY") if e.kind == "weekly"]) >= 6


def test_expiry_kind_without_flags() -> None:
    rows = [
        _opt(i, "X", d, 100, "CE", flag="")
        for i, d in enumerate(("2026-12-01", "2026-12-08", "2026-12-29"), 1)
    ]
    reg = InstrumentRegistry.load(_master(rows), today=dt.date(2026, 11, 25))
    assert reg.option_expiries("X") == [
        Expiry(dt.date(2026, 12, 1), "weekly"), Expiry(dt.date(2026, 12, 8), "weekly"),
        Expiry(dt.date(2026, 12, 29), "monthly"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- underlyings, MCX


def test_commodity_underlying_is_the_nearest_future(detailed: InstrumentRegistry) -> None:
    futs = detailed.futures("CRUDEOIL")
    assert len(futs) >= 4
    assert [f.expiry for f in futs] == sorted(f.expiry for f in futs)
    assert all(f.exchange == "MCX" and f.instrument == "FUTCOM" and f.strike is None for f in futs)
    assert detailed.underlying("CRUDEOIL") == futs[0] == detailed.nearest_future("crudeoil")
    assert futs[0].expiry is not None
    after = detailed.nearest_future("CRUDEOIL", today=futs[0].expiry + dt.timedelta(days=1))
    assert after == futs[1]


@pytest.mark.parametrize("fmt", ["compact", "detailed"])
def test_options_on_futures_link_to_their_future(
    small_registries: dict[str, InstrumentRegistry], fmt: str
) -> None:
    reg = small_registries[fmt]
    for sym in ("CRUDEOIL", "GOLD", "NATURALGAS"):
        futures = reg.futures(sym)
        for exp in reg.option_expiries(sym):
            key = reg.strikes(sym, exp)[0].ce
            assert key is not None
            option = reg.get(key)
            assert option is not None
            assert option.instrument == "OPTFUT"
            linked = reg.underlying_of(option)
            assert linked is not None
            assert linked.instrument == "FUTCOM"
            assert linked.symbol == sym
            # the future the option is written on: the first one expiring on or after it
            assert linked == next(f for f in futures if f.expiry is not None and f.expiry >= exp.date)
            if fmt == "detailed":
                assert option.underlying_security_id == linked.key.security_id


def test_stock_and_index_derivatives_link_by_symbol(detailed: InstrumentRegistry) -> None:
    fut = detailed.nearest_future("RELIANCE")
    assert fut is not None
    assert fut.instrument == "FUTSTK"
    under = detailed.underlying_of(fut)
    assert under is not None
    assert under.key == InstrumentKey(ExchangeSegment.NSE_EQ, 2885)
    exp = detailed.option_expiries("NIFTY")[0]
    key = detailed.strikes("NIFTY", exp)[0].pe
    assert key is not None
    option = detailed.get(key)
    assert option is not None
    assert option.underlying_security_id == 26000
    index = detailed.underlying_of(option)
    assert index is not None
    assert index.key == InstrumentKey(ExchangeSegment.IDX_I, 13)
    assert detailed.underlying_of(index) is None
    assert detailed.underlying("RELIANCE", "BSE") is not None
    assert detailed.underlying("NOSUCH") is None


# ----------------------------------------------------------------------------------------- search

RANKING = [
    "NSE,E,1,EQUITY,0,BANKA,1,Banka Bioloo,,,,5,NA,ES,EQ,BANKA",  # rest, prefix
    "NSE,E,2,EQUITY,0,XBANKY,1,Xbanky Ltd,,,,5,NA,ES,EQ,XBANKY",  # rest, substring
    "NSE,E,3,EQUITY,0,BANK,1,Bank Ltd,,,,5,NA,ES,EQ,BANK",  # rest, exact
    "NSE,I,25,INDEX,0,BANKNIFTY,1.0,Nifty Bank,0001-01-01,,XX,0.0500,,INDEX,X,BANKNIFTY",  # index, prefix
    "NSE,I,33,INDEX,0,NIFTY PSU BANK,1.0,NIFTY PSU Bank,0001-01-01,,XX,0.0500,,INDEX,X,NIFTY PSU BANK",
    "NSE,E,4668,EQUITY,0,BANKBARODA,1,Bank of Baroda,,,,5,NA,ES,EQ,BANK OF BARODA",  # F&O stock
    "NSE,D,900,FUTSTK,0,BANKBARODA-Dec2026-FUT,2925.0,BANKBARODA DEC FUT,2026-12-29 14:30:00,-0.01,XX,5.0,"
    "M,FUT,,",
    "BSE,E,532134,EQUITY,0,BANKBARODA,1,Bank of Baroda,,,,5,NA,ES,A,BANK OF BARODA",  # BSE: not F&O there
    "NSE,E,5,EQUITY,0,ZZZ,1,Zed Bankers,,,,5,NA,ES,EQ,ZZZ",  # rest, substring in display name
]


def test_search_ranking() -> None:
    reg = InstrumentRegistry.load(_master(RANKING), today=TODAY)
    got = [(i.trading_symbol, i.exchange) for i in reg.search("bank")]
    assert got[0] == ("BANK", "NSE")  # exact symbol first, even from the "rest" tier
    prio = got[1:5]  # then indices / F&O stocks / futures, symbol prefix before substring
    assert prio == [("BANKBARODA", "NSE"), ("BANKBARODA-Dec2026-FUT", "NSE"), ("BANKNIFTY", "NSE"),
                    ("NIFTY PSU BANK", "NSE")]  # fmt: skip
    rest = got[5:]  # then everything else: prefix, then substring (symbol or display name)
    assert rest[:2] == [("BANKA", "NSE"), ("BANKBARODA", "BSE")]
    assert set(rest[2:]) == {("XBANKY", "NSE"), ("ZZZ", "NSE")}
    assert len(got) == len(RANKING)
    assert [i.trading_symbol for i in reg.search("BANK", limit=3)] == [
        "BANK",
        "BANKBARODA",
        "BANKBARODA-Dec2026-FUT",
    ]
    assert reg.search("zed bank")[0].trading_symbol == "ZZZ"  # multi-word, display name
    assert reg.search("") == []
    assert reg.search("bank", limit=0) == []
    assert reg.search("qqq") == []
    assert [i.trading_symbol for i in reg.search("x")] == ["XBANKY"]  # one character: substring still


def test_search_on_a_generated_master(detailed: InstrumentRegistry) -> None:
    hits = detailed.search("nifty")
    assert hits[0].key == InstrumentKey(ExchangeSegment.IDX_I, 13)
    assert len(hits) == 20
    assert all("NIFTY" in f"{h.trading_symbol} {h.display_name}".upper() for h in hits)
    assert [h.instrument for h in detailed.search("crude", limit=3)] == ["FUTCOM"] * 3
    hits = detailed.search("reliance")
    assert hits[0].key == InstrumentKey(ExchangeSegment.NSE_EQ, 2885)
    assert hits[1].instrument == "FUTSTK"


def test_stats(detailed: InstrumentRegistry, small_masters: dict) -> None:
    _, gen = small_masters["detailed"]
    stats = detailed.stats
    assert stats.rows_read == gen.rows
    assert stats.rows_loaded == len(detailed) == gen.rows - stats.skipped["nse_test_symbol"]
    assert sum(stats.by_instrument.values()) == len(detailed)
    assert (
        stats.by_exchange_segment["NSE/I"] + stats.by_exchange_segment["BSE/I"]
        == stats.by_instrument["INDEX"]
    )
    assert "1" not in repr(detailed) or "instruments" in repr(detailed)


@pytest.mark.parametrize("entries", [3, 70_000])
def test_trigram_index_lists_every_entry_once_per_bucket(entries: int) -> None:
    """The chunked index build against a direct one, past 2^16 entries (wider entry numbers) and with
    non-ASCII text (character vs byte offsets); trigrams across separators are left out."""
    from tickgate.instruments import registry as registry_module

    rng = random.Random(entries)
    texts = [
        "".join(rng.choice("ABCDÉ ") for _ in range(rng.randint(1, 6)))
        + "\x1f"
        + rng.choice(["X", "ÜBER", ""])
        for _ in range(entries)
    ]
    hay = "\n".join(texts)
    offsets = [0, *itertools.accumulate(len(t) + 1 for t in texts)]
    starts, rows = registry_module._trigram_index(hay, offsets)
    expected: dict[int, set[int]] = {}
    for row, text in enumerate(texts):
        for part in text.split("\x1f"):
            data = part.encode()
            for b in registry_module._trigram_buckets(data).tolist():
                expected.setdefault(b, set()).add(row)
    got = {
        b: rows[starts[b] : starts[b + 1]].tolist()
        for b in range(len(starts) - 1)
        if starts[b + 1] > starts[b]
    }
    assert {b: sorted(r) for b, r in expected.items()} == got
