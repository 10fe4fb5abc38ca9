"""A full-size, realistic Dhan scrip master, generated: the embedded default and the test/benchmark data.

No full master may be committed or downloaded in tests, yet the registry, the simulator and the planner
need one with the real shape: real index ids and spot levels, ~220 F&O stocks with three monthly expiries,
NIFTY weekly (Tuesday) and SENSEX weekly (Thursday) options, quarterlies, MCX futures with options on them,
currency derivatives, thousands of cash rows, NSE test symbols. Expiries are laid out relative to ``today``
with the exchanges' weekday rules (a few fixed holidays move an expiry to the previous trading day), strike
grids are wider near expiry and coarser far from the money. The same seed and ``today`` give a
byte-identical file in either format.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import functools
import io
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tickgate.instruments._seed_data import FNO_STOCKS_CSV, INDICES_CSV
from tickgate.instruments.model import MasterFormat, ist_today
from tickgate.schedule.calendar import TradingCalendar

COMPACT_HEADER = (
    "SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_EXPIRY_CODE,SEM_TRADING_SYMBOL,"
    "SEM_LOT_UNITS,SEM_CUSTOM_SYMBOL,SEM_EXPIRY_DATE,SEM_STRIKE_PRICE,SEM_OPTION_TYPE,SEM_TICK_SIZE,"
    "SEM_EXPIRY_FLAG,SEM_EXCH_INSTRUMENT_TYPE,SEM_SERIES,SM_SYMBOL_NAME"
)
# The 2026 header of the real detailed extract (its tail drifts between releases; this is one of them).
DETAILED_HEADER = (
    "EXCH_ID,SEGMENT,SECURITY_ID,ISIN,INSTRUMENT,UNDERLYING_SECURITY_ID,UNDERLYING_SYMBOL,SYMBOL_NAME,"
    "DISPLAY_NAME,INSTRUMENT_TYPE,SERIES,LOT_SIZE,SM_EXPIRY_DATE,STRIKE_PRICE,OPTION_TYPE,TICK_SIZE,"
    "EXPIRY_FLAG,BRACKET_FLAG,COVER_FLAG,ASM_GSM_FLAG,ASM_GSM_CATEGORY,BUY_SELL_INDICATOR,"
    "BUY_CO_MIN_MARGIN_PER,BUY_CO_SL_RANGE_MAX_PERC,BUY_CO_SL_RANGE_MIN_PERC,BUY_BO_MIN_MARGIN_PER,"
    "BUY_BO_PROFIT_RANGE_MAX_PERC,BUY_BO_PROFIT_RANGE_MIN_PERC,MTF_LEVERAGE,SM_UPPER_LIMIT,SM_LOWER_LIMIT"
)
FULL_SIZE_ROWS = 290_000

_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TUE, _THU, _FRI = 1, 3, 4
# Fixed-date exchange holidays (Republic Day, Independence Day, Gandhi Jayanti, Christmas): enough to make
# some expiries move to the previous trading day, as real ones do.
_HOLIDAYS = ((1, 26), (8, 15), (10, 2), (12, 25))


@dataclass(frozen=True, slots=True)
class GeneratorStats:
    """What was written."""

    path: Path
    format: MasterFormat
    rows: int
    bytes: int
    by_instrument: dict[str, int] = field(default_factory=dict)
    by_exchange_segment: dict[str, int] = field(default_factory=dict)


class _Row(NamedTuple):
    exch: str
    seg: str
    sid: int
    instrument: str
    trading_symbol: str
    lot: int
    display: str
    expiry: dt.date | None
    strike: float | None  # None: no strike column value; futures carry -0.01 like the real file
    opt: str  # CE / PE / XX / ""
    tick: float  # as written: paise for E/D/C/M rows, rupees for index rows
    flag: str
    exch_type: str
    series: str
    name: str  # compact SM_SYMBOL_NAME / detailed SYMBOL_NAME (company name for cash rows)
    underlying_sid: int | None
    underlying: str  # detailed UNDERLYING_SYMBOL
    isin: str
    price: float  # reference price level (cash rows: the price band is built around it)


class _Series(NamedTuple):
    """What the contracts of one derivative series share."""

    exch: str
    seg: str
    instrument: str
    symbol: str
    lot: int
    tick: float  # paise
    underlying_sid: int | None
    day_in_symbol: bool  # MCX/currency trading symbols carry the expiry day: GOLD-05Dec2026-FUT
    exch_type: str


# --------------------------------------------------------------------------------------------- calendar


@functools.cache
def _calendar() -> TradingCalendar:
    return TradingCalendar.load()


def _trading_day(d: dt.date) -> bool:
    """NSE's trading days from the shipped holiday list (the one the service's calendar uses, so a Tuesday
    holiday moves the generated NIFTY expiry to Monday as the exchange does); past the list's years, the
    fixed-date holidays only (no estimated festivals in a generated file)."""
    if d.weekday() >= 5:
        return False
    cal = _calendar()
    if d.year in cal.covered_years("NSE"):
        return cal.holiday("NSE", d) is None
    return (d.month, d.day) not in _HOLIDAYS


def _roll_back(d: dt.date) -> dt.date:
    """Expiry on a holiday/weekend moves to the previous trading day."""
    while not _trading_day(d):
        d -= dt.timedelta(days=1)
    return d


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    m = month - 1 + n
    return year + m // 12, m % 12 + 1


def _per_month(
    today: dt.date, count: int, months: frozenset[int] | None, day_in: Callable[[int, int], dt.date]
) -> list[dt.date]:
    """The next ``count`` dates ``day_in(year, month)`` not before ``today``, in ``months`` (None: all)."""
    out: list[dt.date] = []
    i = 0
    while len(out) < count:
        y, m = _add_months(today.year, today.month, i)
        i += 1
        if months is not None and m not in months:
            continue
        d = day_in(y, m)
        if d >= today:
            out.append(d)
    return out


def _monthly(today: dt.date, weekday: int, count: int, months: frozenset[int] | None = None) -> list[dt.date]:
    """The next ``count`` month-end expiries (last ``weekday`` of the month) not before ``today``."""
    return _per_month(today, count, months, lambda y, m: _roll_back(_last_weekday(y, m, weekday)))


def _weekly(today: dt.date, weekday: int, count: int) -> list[dt.date]:
    """The next ``count`` weekly expiries not before ``today`` (a holiday rolls one back a day or more, which
    can put this week's before ``today``: the exchange has expired it then, so the file does not list it)."""
    first = today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    rolled = (_roll_back(first + dt.timedelta(weeks=k)) for k in range(count + 1))
    return [d for d in rolled if d >= today][:count]


def _last_business_day(y: int, m: int) -> dt.date:
    return _roll_back(dt.date(y, m, calendar.monthrange(y, m)[1]))


def _minus_business_days(d: dt.date, n: int) -> dt.date:
    while n > 0:
        d = _roll_back(d - dt.timedelta(days=1))
        n -= 1
    return d


def _mcx_expiries(today: dt.date, rule: str, count: int) -> list[dt.date]:
    """MCX futures expiries by contract rule ("5:2,4,6,8,10,12" = 5th of those months, "ld" = last day)."""
    day_part, _, months_part = rule.partition(":")
    months = frozenset(int(x) for x in months_part.split(",")) if months_part else None

    def day_in(y: int, m: int) -> dt.date:
        return _last_business_day(y, m) if day_part == "ld" else _roll_back(dt.date(y, m, int(day_part)))

    return _per_month(today, count, months, day_in)


# ------------------------------------------------------------------------------------------ strike grids


def _grid(spot: float, step: float, inner: int, outer: int, outer_mult: int) -> list[float]:
    """``inner`` strikes each side at ``step``, then ``outer`` more at ``step * outer_mult`` (real grids
    are coarser far from the money, so the most common gap, not the first one, is the strike step).
    The fine band stays within ±40% of spot and the coarse one within another ±30%."""
    inner = max(1, min(inner, int(0.4 * spot / step)))
    outer = max(0, min(outer, int(0.3 * spot / (step * outer_mult))))
    atm = round(spot / step) * step
    strikes = {round(atm + k * step, 4) for k in range(-inner, inner + 1)}
    wide = step * outer_mult
    hi = (atm + inner * step) // wide * wide
    lo = -((-(atm - inner * step)) // wide) * wide
    for k in range(1, outer + 1):
        strikes.add(round(hi + k * wide, 4))
        strikes.add(round(lo - k * wide, 4))
    return sorted(s for s in strikes if s > 0)


_NICE_STEPS = (0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)


def _stock_step(price: float) -> float:
    """NSE sets stock strike intervals at roughly 0.5–1% of the price, on round numbers."""
    target = price * 0.006
    return min(_NICE_STEPS, key=lambda s: abs(math.log(s / target)))


def _stock_lot(price: float) -> int:
    raw = 650_000 / price
    for limit, unit in ((20, 1), (100, 5), (1000, 25), (10000, 100)):
        if raw < limit:
            return max(1, round(raw / unit) * unit)
    return round(raw / 500) * 500


def _fmt_strike(strike: float) -> str:
    return str(int(strike)) if strike == int(strike) else f"{strike:g}"


# ------------------------------------------------------------------------------------------- reference


class _Index(NamedTuple):
    symbol: str
    exch: str
    sid: int
    token: int  # the exchange's own index token, which the detailed file uses as UNDERLYING_SECURITY_ID
    spot: float
    step: float
    lot: int
    weekly: int  # number of weekly expiries listed (0: monthly only)
    monthly: int
    quarterly: int
    half_yearly: int


_INDEX_DERIVATIVES = (
    _Index("NIFTY", "NSE", 13, 26000, 26000.0, 50.0, 65, 11, 3, 3, 4),
    _Index("BANKNIFTY", "NSE", 25, 26009, 59000.0, 100.0, 30, 0, 3, 3, 0),
    _Index("FINNIFTY", "NSE", 27, 26037, 27500.0, 50.0, 60, 0, 3, 3, 0),
    _Index("MIDCPNIFTY", "NSE", 442, 26074, 13500.0, 25.0, 120, 0, 3, 3, 0),
    _Index("NIFTYNXT50", "NSE", 38, 26013, 70500.0, 100.0, 25, 0, 3, 0, 0),
    _Index("SENSEX", "BSE", 51, 1, 85000.0, 100.0, 20, 8, 3, 0, 0),
    _Index("BANKEX", "BSE", 69, 12, 66000.0, 100.0, 30, 0, 3, 3, 0),
    _Index("SENSEX50", "BSE", 83, 47, 27000.0, 50.0, 60, 0, 3, 0, 0),
)


class _Commodity(NamedTuple):
    symbol: str
    name: str
    spot: float
    lot: int
    tick: float  # futures tick, paise
    rule: str
    contracts: int
    opt_step: float  # 0: no options on this commodity
    opt_tick: float
    opt_lead: int  # business days between option expiry and its future's expiry


_COMMODITIES = (
    _Commodity("GOLD", "Gold", 128000.0, 100, 100, "5:2,4,6,8,10,12", 4, 500.0, 50, 7),
    _Commodity("GOLDM", "Gold Mini", 128000.0, 10, 100, "5", 5, 500.0, 50, 7),
    _Commodity("GOLDGUINEA", "Gold Guinea", 102000.0, 1, 100, "ld", 3, 0.0, 0, 0),
    _Commodity("GOLDPETAL", "Gold Petal", 12800.0, 1, 100, "ld", 3, 0.0, 0, 0),
    _Commodity("GOLDTEN", "Gold Ten", 128000.0, 1, 100, "ld", 3, 0.0, 0, 0),
    _Commodity("SILVER", "Silver", 152000.0, 30, 100, "5:3,5,7,9,12", 4, 1000.0, 50, 7),
    _Commodity("SILVERM", "Silver Mini", 152000.0, 5, 100, "ld:2,4,6,8,11", 4, 1000.0, 50, 7),
    _Commodity("SILVERMIC", "Silver Micro", 152000.0, 1, 100, "ld:2,4,6,8,11", 4, 0.0, 0, 0),
    _Commodity("CRUDEOIL", "Crude Oil", 5650.0, 100, 100, "19", 6, 50.0, 10, 1),
    _Commodity("CRUDEOILM", "Crude Oil Mini", 5650.0, 10, 100, "19", 6, 50.0, 10, 1),
    _Commodity("NATURALGAS", "Natural Gas", 385.0, 1250, 10, "26", 6, 5.0, 5, 1),
    _Commodity("NATGASMINI", "Natural Gas Mini", 385.0, 250, 10, "26", 6, 5.0, 5, 1),
    _Commodity("COPPER", "Copper", 1005.0, 2500, 5, "ld", 4, 5.0, 5, 2),
    _Commodity("ZINC", "Zinc", 292.0, 5000, 5, "ld", 4, 2.5, 5, 2),
    _Commodity("ZINCMINI", "Zinc Mini", 292.0, 1000, 5, "ld", 4, 0.0, 0, 0),
    _Commodity("ALUMINIUM", "Aluminium", 262.0, 5000, 5, "ld", 4, 2.5, 5, 2),
    _Commodity("ALUMINI", "Aluminium Mini", 262.0, 1000, 5, "ld", 4, 0.0, 0, 0),
    _Commodity("LEAD", "Lead", 182.0, 5000, 5, "ld", 4, 2.5, 5, 2),
    _Commodity("LEADMINI", "Lead Mini", 182.0, 1000, 5, "ld", 4, 0.0, 0, 0),
    _Commodity("NICKEL", "Nickel", 1420.0, 250, 10, "ld", 4, 0.0, 0, 0),
    _Commodity("COTTONCNDY", "Cotton Candy", 55800.0, 48, 1000, "ld", 3, 0.0, 0, 0),
    _Commodity("MENTHAOIL", "Mentha Oil", 915.0, 360, 10, "ld", 3, 0.0, 0, 0),
)


class _Currency(NamedTuple):
    symbol: str
    spot: float
    step: float
    strikes_each_side: int
    weekly: int


_CURRENCIES = (
    _Currency("USDINR", 88.6, 0.25, 80, 6),
    _Currency("EURINR", 103.5, 0.5, 40, 0),
    _Currency("GBPINR", 118.4, 0.5, 40, 0),
    _Currency("JPYINR", 58.9, 0.5, 40, 0),
)


class _Stock(NamedTuple):
    symbol: str
    nse_id: int
    bse_id: int | None
    display: str
    company: str
    isin: str
    price: float
    tick: float


def _stocks() -> list[_Stock]:
    out = []
    for rec in csv.reader(io.StringIO(FNO_STOCKS_CSV)):
        sym, nid, bid, disp, comp, isin, price, tick = rec
        out.append(
            _Stock(sym, int(nid), int(bid) if bid else None, disp, comp, isin, float(price), float(tick))
        )
    return out


# --------------------------------------------------------------------------------------------- builder


_SYLLABLES = (
    "AR",
    "BA",
    "CO",
    "DE",
    "EL",
    "FI",
    "GA",
    "HI",
    "IN",
    "JA",
    "KA",
    "LO",
    "MA",
    "NE",
    "OR",
    "PA",
    "QU",
    "RA",
    "SA",
    "TA",
    "UN",
    "VI",
    "WE",
    "XE",
    "YA",
    "ZE",
    "TRI",
    "VEN",
    "MOR",
    "SHA",
    "KRI",
    "DHA",
    "NAV",
)
_NAME_WORDS = (
    "Industries",
    "Pharma",
    "Textiles",
    "Finance",
    "Infra",
    "Chemicals",
    "Agro",
    "Foods",
    "Steel",
    "Power",
    "Technologies",
    "Capital",
    "Motors",
    "Polymers",
    "Cements",
    "Realty",
    "Logistics",
    "Ventures",
    "Energy",
)
_NSE_SERIES = (
    ("EQ", 30),
    ("BE", 6),
    ("SM", 6),
    ("ST", 2),
    ("SG", 30),
    ("GS", 3),
    ("N0", 10),
    ("N1", 3),
    ("MF", 3),
    ("IV", 1),
)
_BSE_SERIES = (
    ("A", 4),
    ("B", 14),
    ("X", 9),
    ("T", 3),
    ("XT", 3),
    ("M", 2),
    ("Z", 1),
    ("F", 40),
    ("G", 9),
    ("IF", 1),
)


class _Builder:
    """Accumulates rows; every security id is unique within its (exchange, segment)."""

    def __init__(self, seed: int, today: dt.date) -> None:
        self.rng = random.Random(seed)
        self.today = today
        self.rows: list[_Row] = []
        self._next_id: dict[tuple[str, str], int] = {
            ("NSE", "D"): 35000,
            ("BSE", "D"): 800000,
            ("MCX", "M"): 420000,
            ("NSE", "C"): 1000,
            ("BSE", "C"): 1500,
            ("NSE", "E"): 30000,
            ("BSE", "E"): 545000,
        }
        self._used: dict[tuple[str, str], set[int]] = {}

    def new_id(self, exch: str, seg: str) -> int:
        """Next free id of the segment. Ids are handed out upwards, so only ids claimed explicitly
        (the real ones of named stocks) can collide and need the set lookup."""
        sid = self._next_id[(exch, seg)]
        used = self._used.get((exch, seg))
        if used:
            while sid in used:
                sid += 1
        self._next_id[(exch, seg)] = sid + 1
        return sid

    def claim_id(self, exch: str, seg: str, sid: int) -> int:
        used = self._used.setdefault((exch, seg), set())
        if sid in used:
            raise AssertionError(f"generator reused {exch}/{seg} id {sid}")
        used.add(sid)
        return sid

    # -- cash & indices --------------------------------------------------------------------------------

    def indices(self) -> None:
        spots = {i.symbol: i.spot for i in _INDEX_DERIVATIVES}
        for rec in csv.reader(io.StringIO(INDICES_CSV)):
            exch, sid, sym, disp, tick = rec
            self.claim_id("IDX", "I", int(sid))
            self.rows.append(
                _Row(
                    exch,
                    "I",
                    int(sid),
                    "INDEX",
                    sym,
                    1,
                    disp,
                    None,
                    None,
                    "XX",
                    float(tick),
                    "",
                    "INDEX",
                    "X",
                    sym,
                    int(sid),
                    sym,
                    "NA",
                    spots.get(sym, 0.0),
                )
            )

    def fno_cash(self, stocks: list[_Stock]) -> None:
        for s in stocks:
            self.rows.append(
                _Row(
                    "NSE",
                    "E",
                    self.claim_id("NSE", "E", s.nse_id),
                    "EQUITY",
                    s.symbol,
                    1,
                    s.display,
                    None,
                    None,
                    "",
                    s.tick,
                    "NA",
                    "ES",
                    "EQ",
                    s.company,
                    None,
                    s.symbol,
                    s.isin,
                    s.price,
                )
            )
            if s.bse_id is not None:
                self.rows.append(
                    _Row(
                        "BSE",
                        "E",
                        self.claim_id("BSE", "E", s.bse_id),
                        "EQUITY",
                        s.symbol,
                        1,
                        s.display,
                        None,
                        None,
                        "",
                        5.0,
                        "NA",
                        "ES",
                        "A",
                        s.company.upper(),
                        None,
                        s.symbol,
                        s.isin,
                        s.price,
                    )
                )

    def test_symbols(self) -> None:
        """NSE publishes dummy ``…NSETEST`` scrips in the cash segment; the loader must drop them."""
        for i, prefix in enumerate(("011", "021", "031", "041", "11", "G1", "N1", "V1", "141", "151", "161")):
            sid = self.claim_id("NSE", "E", 14747 + i * 2 if i < 4 else 12841 + i)
            sym = f"{prefix}NSETEST"
            self.rows.append(
                _Row(
                    "NSE",
                    "E",
                    sid,
                    "EQUITY",
                    sym,
                    1,
                    sym,
                    None,
                    None,
                    "",
                    5.0,
                    "NA",
                    "Other",
                    "EQ",
                    sym,
                    None,
                    sym,
                    f"DUMMYSAN{i + 1:03d}",
                    100.0,
                )
            )

    def other_cash(self, count: int) -> None:
        """Non-F&O cash rows (equities, bonds, ETFs …) with made-up but well-formed names."""
        rng = self.rng
        seen = {r.trading_symbol for r in self.rows if r.seg == "E"}
        nse_count = round(count * 0.36)
        for exch, n, series_w in (("NSE", nse_count, _NSE_SERIES), ("BSE", count - nse_count, _BSE_SERIES)):
            series_names = [s for s, _ in series_w]
            weights = [w for _, w in series_w]
            for _ in range(n):
                series = rng.choices(series_names, weights)[0]
                while True:
                    base = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
                    if series in ("SG", "GS", "G", "F") or series.startswith("N"):
                        sym = f"{rng.randint(600, 999)}{base[:4]}{rng.randint(26, 45)}"
                        kind = "DBT" if series in ("SG", "GS", "G") else "DEB"
                    else:
                        sym = base[:12]
                        kind = "ETF" if series == "MF" else "ES"
                    if sym not in seen:
                        seen.add(sym)
                        break
                word = rng.choice(_NAME_WORDS)
                disp = (
                    f"{base.title()} {word}"
                    if kind in ("ES", "ETF")
                    else f"{base.title()} {word} NCD {sym[:3]}"
                )
                price = round(rng.lognormvariate(5.0, 1.3), 2)
                tick = 1.0 if price < 250 else (5.0 if price < 2500 else 10.0)
                lot = 1 if kind != "DBT" else 100
                isin = f"INE{rng.randint(0, 999999):06d}{rng.choice(_SYLLABLES)[:1]}{rng.randint(1000, 9999)}"
                self.rows.append(
                    _Row(
                        exch,
                        "E",
                        self.new_id(exch, "E"),
                        "EQUITY",
                        sym,
                        lot,
                        disp,
                        None,
                        None,
                        "",
                        tick,
                        "NA",
                        kind,
                        series,
                        disp.upper(),
                        None,
                        sym,
                        isin[:12],
                        price,
                    )
                )

    # -- derivatives ----------------------------------------------------------------------------------

    def _options(self, c: _Series, expiry: dt.date, flag: str, strikes: list[float]) -> None:
        mon = _MONTHS[expiry.month]
        tag = f"{expiry.day:02d}{mon}{expiry.year}" if c.day_in_symbol else f"{mon}{expiry.year}"
        head = f"{c.symbol}-{tag}-"
        disp_head = f"{c.symbol} {expiry.day:02d} {mon.upper()} "
        rows, new_id = self.rows, self.new_id
        for strike in strikes:
            k = _fmt_strike(strike)
            for opt, word in (("CE", "CALL"), ("PE", "PUT")):
                rows.append(
                    _Row(c.exch, c.seg, new_id(c.exch, c.seg), c.instrument, f"{head}{k}-{opt}", c.lot,
                         f"{disp_head}{k} {word}", expiry, strike, opt, c.tick, flag, c.exch_type, "", "",
                         c.underlying_sid, c.symbol, "NA", 0.0)
                )  # fmt: skip

    def _future(self, c: _Series, expiry: dt.date) -> int:
        mon = _MONTHS[expiry.month]
        tag = f"{expiry.day:02d}{mon}{expiry.year}" if c.day_in_symbol else f"{mon}{expiry.year}"
        sid = self.new_id(c.exch, c.seg)
        self.rows.append(
            _Row(c.exch, c.seg, sid, c.instrument, f"{c.symbol}-{tag}-FUT", c.lot,
                 f"{c.symbol} {mon.upper()} FUT", expiry, -0.01, "XX", c.tick, "M", c.exch_type, "", "",
                 c.underlying_sid, c.symbol, "NA", 0.0)
        )  # fmt: skip
        return sid

    def index_derivatives(self) -> None:
        for ix in _INDEX_DERIVATIVES:
            weekday = _TUE if ix.exch == "NSE" else _THU
            monthly = _monthly(self.today, weekday, ix.monthly)
            quarter_ends = _monthly(self.today, weekday, ix.quarterly + 1, frozenset({3, 6, 9, 12}))
            quarterly = [d for d in quarter_ends if d > monthly[-1]][: ix.quarterly]
            after = quarterly[-1] if quarterly else monthly[-1]
            half_ends = _monthly(self.today, weekday, ix.half_yearly + 2, frozenset({6, 12}))
            half = [d for d in half_ends if d > after][: ix.half_yearly]
            weekly = _weekly(self.today, weekday, ix.weekly)
            options = _Series(ix.exch, "D", "OPTIDX", ix.symbol, ix.lot, 5.0, ix.token, False, "OP")
            for rank, exp in enumerate(sorted(set(weekly) | set(monthly) | set(quarterly) | set(half))):
                flag = "M" if exp == _roll_back(_last_weekday(exp.year, exp.month, weekday)) else "W"
                if rank < 5:  # near expiries list the widest grids
                    strikes = _grid(ix.spot, ix.step, 100, 25, 2)
                elif exp <= monthly[-1]:
                    strikes = _grid(ix.spot, ix.step, 70, 15, 2)
                else:  # long-dated: coarser, narrower
                    strikes = _grid(ix.spot, ix.step * 2, 40, 10, 5)
                self._options(options, exp, flag, strikes)
            futures = _Series(ix.exch, "D", "FUTIDX", ix.symbol, ix.lot, 10.0, ix.token, False, "FUT")
            for exp in monthly:
                self._future(futures, exp)

    def stock_derivatives(self, stocks: list[_Stock]) -> None:
        expiries = _monthly(self.today, _TUE, 3)
        widths = ((66, 22), (55, 18), (45, 14))
        for s in stocks:
            step = _stock_step(s.price)
            lot = _stock_lot(s.price)
            futures = _Series("NSE", "D", "FUTSTK", s.symbol, lot, 10.0 if s.price >= 1000 else 5.0, s.nse_id,
                              False, "FUT")  # fmt: skip
            options = _Series("NSE", "D", "OPTSTK", s.symbol, lot, 5.0, s.nse_id, False, "OP")
            for exp, (inner, outer) in zip(expiries, widths, strict=True):
                self._future(futures, exp)
                self._options(options, exp, "M", _grid(s.price, step, inner, outer, 2))

    def commodities(self) -> None:
        for code, c in enumerate(_COMMODITIES, start=200):
            futures = _Series("MCX", "M", "FUTCOM", c.symbol, c.lot, c.tick, code, True, "FUTCOM")
            for n, exp in enumerate(_mcx_expiries(self.today, c.rule, c.contracts)):
                fut_sid = self._future(futures, exp)
                opt_exp = _minus_business_days(exp, c.opt_lead)
                if not c.opt_step or n >= 5 or opt_exp < self.today:
                    continue
                # Options on futures: expire before their future, linked to it by UNDERLYING_SECURITY_ID.
                options = _Series("MCX", "M", "OPTFUT", c.symbol, c.lot, c.opt_tick, fut_sid, True, "OPTFUT")
                inner, outer = ((120, 25), (100, 20), (80, 15), (60, 12), (50, 10))[n]
                self._options(options, opt_exp, "M", _grid(c.spot, c.opt_step, inner, outer, 2))

    def currencies(self) -> None:
        t = self.today
        fut_expiries: list[dt.date] = []
        for i in range(14):  # two business days before the month's last business day
            y, m = _add_months(t.year, t.month, i)
            d = _minus_business_days(_last_business_day(y, m), 2)
            if d >= t:
                fut_expiries.append(d)
        fut_expiries = fut_expiries[:12]
        for exch in ("NSE", "BSE"):
            for cur in _CURRENCIES if exch == "NSE" else _CURRENCIES[:1]:
                futures = _Series(exch, "C", "FUTCUR", cur.symbol, 1, 0.25, None, False, "FUTCUR")
                for exp in fut_expiries:
                    self._future(futures, exp)
                monthly = fut_expiries[:6]
                weekly = _weekly(t, _FRI, cur.weekly + 1) if exch == "NSE" else []
                options = _Series(exch, "C", "OPTCUR", cur.symbol, 1, 0.25, None, True, "OPTCUR")
                for exp in sorted(set(monthly) | {w for w in weekly if w not in monthly}):
                    strikes = _grid(cur.spot, cur.step, cur.strikes_each_side, 10, 2)
                    self._options(options, exp, "M" if exp in monthly else "W", strikes)


# ------------------------------------------------------------------------------------------- formatting


def _num(x: float, places: int) -> str:
    return f"{x:.{places}f}"


def _compact_line(r: _Row) -> str:
    if r.seg == "I":
        expiry, strike, tick = "0001-01-01", "", f"{r.tick:.4f}"
    elif r.expiry is None:
        expiry, strike, tick = "", "", f"{r.tick:.4f}"
    else:
        clock = "23:30:00" if r.exch == "MCX" else ("17:00:00" if r.seg == "C" else "14:30:00")
        expiry = f"{r.expiry.isoformat()} {clock}"
        strike = _num(r.strike, 5) if r.strike is not None else ""
        tick = f"{r.tick:.4f}"
    name = r.name if r.expiry is None else ""
    return (
        f"{r.exch},{r.seg},{r.sid},{r.instrument},0,{r.trading_symbol},{r.lot:.1f},{r.display},{expiry},"
        f"{strike},{r.opt},{tick},{r.flag},{r.exch_type},{r.series},{name}"
    )


_DETAILED_TAIL_DERIV = "N,N,N,NA,A,0,0,0,0,0,0,0,0,0"


def _detailed_line(r: _Row) -> str:
    if r.seg == "I":
        return (
            f"{r.exch},I,{r.sid},NA,INDEX,{r.sid},{r.trading_symbol},{r.trading_symbol},{r.display},INDEX,NA,"
            f"1,0001-01-01,,XX,{r.tick:g},N,N,N,N,NA,A,0,0,0,0,0,0,0,0,0"
        )
    if r.expiry is None:
        band = 0.2 if r.series in ("SM", "B", "X", "T", "XT", "M", "Z") else 0.1
        up, down = round(r.price * (1 + band), 2), round(r.price * (1 - band), 2)
        mtf = "4.545455" if r.series in ("EQ", "A") else "0"
        return (
            f"{r.exch},E,{r.sid},{r.isin},EQUITY,,{r.trading_symbol},{r.name},{r.display},{r.exch_type},"
            f"{r.series},{r.lot},,,,{r.tick:g},NA,N,N,N,NA,A,0,0,0,0,0,0,{mtf},{up:g},{down:g}"
        )
    usid = "" if r.underlying_sid is None else str(r.underlying_sid)
    strike = _num(r.strike, 5) if r.strike is not None else ""
    kind = "OP" if r.instrument.startswith("OPT") else "FUT"
    return (
        f"{r.exch},{r.seg},{r.sid},NA,{r.instrument},{usid},{r.underlying},{r.trading_symbol},{r.display},"
        f"{kind},NA,{r.lot:.1f},{r.expiry.isoformat()},{strike},{r.opt},{r.tick:.4f},{r.flag},"
        f"{_DETAILED_TAIL_DERIV}"
    )


def _lines(rows: list[_Row], line: Callable[[_Row], str]) -> Iterator[str]:
    for r in rows:
        yield line(r)


# ------------------------------------------------------------------------------------------------ public


def generate_rows(
    *,
    seed: int = 0,
    today: dt.date | None = None,
    rows_target: int = FULL_SIZE_ROWS,
    fno_stocks: int | None = None,
) -> list[_Row]:
    """The rows of a master (format-independent). Cash rows fill up to ``rows_target``."""
    today = today or ist_today()
    b = _Builder(seed, today)
    stocks = _stocks()
    if fno_stocks is not None:
        keep = {"RELIANCE", "HDFCBANK", "TCS", "INFY", "SBIN"}
        stocks = [s for s in stocks if s.symbol in keep] + [s for s in stocks if s.symbol not in keep]
        stocks = sorted(stocks[: max(fno_stocks, 0)], key=lambda s: s.symbol)
    b.indices()
    b.fno_cash(stocks)
    b.test_symbols()
    b.index_derivatives()
    b.stock_derivatives(stocks)
    b.commodities()
    b.currencies()
    b.other_cash(max(rows_target - len(b.rows), 500))
    # Real masters are not sorted by segment: interleave blocks the way Dhan's file mixes them.
    order = {
        ("NSE", "E"): 0,
        ("BSE", "E"): 1,
        ("NSE", "I"): 2,
        ("BSE", "I"): 2,
        ("NSE", "D"): 3,
        ("BSE", "D"): 4,
        ("MCX", "M"): 5,
        ("NSE", "C"): 6,
        ("BSE", "C"): 7,
    }
    b.rows.sort(key=lambda r: order[(r.exch, r.seg)])
    return b.rows


def generate_master(
    out: Path,
    *,
    fmt: MasterFormat = "detailed",
    seed: int = 0,
    today: dt.date | None = None,
    rows_target: int = FULL_SIZE_ROWS,
    fno_stocks: int | None = None,
) -> GeneratorStats:
    """Write a realistic master in Dhan's exact ``compact`` or ``detailed`` format to ``out``.

    ``rows_target`` is met by the number of non-F&O cash rows; ``fno_stocks`` (default: all ~220) trims the
    F&O stock list for small test masters.
    """
    if fmt not in ("compact", "detailed"):
        raise ValueError(f"format must be 'compact' or 'detailed', got {fmt!r}")
    rows = generate_rows(seed=seed, today=today, rows_target=rows_target, fno_stocks=fno_stocks)
    header, line = (COMPACT_HEADER, _compact_line) if fmt == "compact" else (DETAILED_HEADER, _detailed_line)
    text = header + "\n" + "\n".join(_lines(rows, line)) + "\n"
    data = text.encode("utf-8")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return GeneratorStats(
        path=out,
        format=fmt,
        rows=len(rows),
        bytes=len(data),
        by_instrument=dict(Counter(r.instrument for r in rows)),
        by_exchange_segment=dict(Counter(f"{r.exch}/{r.seg}" for r in rows)),
    )
