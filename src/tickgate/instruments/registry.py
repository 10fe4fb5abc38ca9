"""The instrument registry: a loaded scrip master and the queries the planner, ATM engine and API need.

The master stays one columnar polars frame. Each query family gets its own small index, built on first
use from vectorised operations (so a process that only resolves ids never pays for search structures):

* by id — the frame's ``segment << 32 | security id`` keys, argsorted at load (the same sort finds
  duplicate ids), searched with numpy;
* chains — option rows sorted by (segment, symbol, expiry, strike) into flat numpy arrays plus a dict of
  group boundaries; futures as short per-symbol lists;
* search/underlyings — the ~40k underlying-level rows (indices, cash, futures): sorted symbol lists for
  exact/prefix matches, a joined uppercase text for substring scans of the small priority tier (C-speed
  ``str.find``), and a hashed trigram index for the large tier of other cash rows.

Instrument objects are only built for rows a caller asks for, and cached.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.instruments.loader import LoadedMaster, Source, composition, load_frame
from tickgate.instruments.model import (
    AmbiguousSecurityIdError,
    Expiry,
    ExpiryKind,
    Instrument,
    RegistryStats,
    StrikeRow,
    ist_today,
)

_EXCHANGE_ORDER = {"NSE": 0, "BSE": 1, "MCX": 2}
_QUARTER_MONTHS = frozenset({3, 6, 9, 12})
# Exchanges list three serial monthly contracts; later quarter-month monthlies are the quarterlies.
_SERIAL_MONTHLIES = 3
_SEGMENTS = tuple(ExchangeSegment)
_VERIFY_MAX = 300  # trigram candidates checked directly before narrowing by the query's other trigrams
_GATHER_MIN = 64  # materialise more rows than this with one polars gather


@dataclass(frozen=True, slots=True)
class _KeyIndex:
    keys: npt.NDArray[np.int64]  # sorted
    rows: npt.NDArray[np.int64]  # frame row of each sorted key


@dataclass(frozen=True, slots=True)
class _Chains:
    strike: npt.NDArray[np.float64]
    is_ce: npt.NDArray[np.bool_]
    fseg: npt.NDArray[np.uint8]
    sid: npt.NDArray[np.int64]
    groups: dict[tuple[str, str, dt.date], tuple[int, int]]  # (exchange, symbol, expiry) → slice
    option_expiries: dict[tuple[str, str], list[tuple[dt.date, str | None]]]
    futures: dict[tuple[str, str], list[tuple[dt.date, int, str | None]]]  # (expiry, frame row, flag)
    exchanges: dict[str, list[str]]  # symbol → exchanges with derivatives on it, preferred first


@dataclass(frozen=True, slots=True)
class _Universe:
    """Search structures. "prio" = indices, F&O stocks and futures (a few thousand rows: a substring scan
    of one joined string is cheap). "rest" = other cash rows (~40k): a hashed trigram index (built with
    numpy in one pass) gives, for a query of three or more characters, the few rows that can contain it;
    only those are checked."""

    prio_syms: list[str]  # sorted uppercase symbols, for exact and prefix matches
    prio_rows: list[int]
    rest_syms: list[str]
    rest_rows: list[int]
    prio_hay: str  # "TSYM\x1fDISPLAY" per row, newline-joined, ranked order
    prio_offsets: list[int]
    prio_hay_rows: list[int]
    rest_text: list[str]  # "TSYM\x1fDISPLAY" per rest row, in rest_syms order
    # trigram bucket b's rest rows are tri_rows[tri_starts[b]:tri_starts[b + 1]], ascending, may repeat
    tri_starts: npt.NDArray[np.int64]
    tri_rows: npt.NDArray[np.int32]
    rest_hay: str  # rest_text newline-joined, scanned for queries too short for trigrams
    rest_offsets: list[int]


def _normalise(symbol: str) -> str:
    return symbol.strip().upper()


def _expiry_date(expiry: dt.date | Expiry) -> dt.date:
    return expiry.date if isinstance(expiry, Expiry) else expiry


class InstrumentRegistry:
    """A loaded scrip master. Build with :meth:`load`; every query is read-only."""

    def __init__(self, loaded: LoadedMaster, *, today: dt.date | None = None) -> None:
        self._df = loaded.frame
        self._stats = loaded.stats
        self._key_index = _KeyIndex(loaded.sorted_keys, loaded.key_rows)
        self._today = today
        self._cache: dict[int, Instrument] = {}

    # ------------------------------------------------------------------------------------------ load

    @classmethod
    def load(
        cls, source: Source, *, today: dt.date | None = None, max_bad_fraction: float | None = None
    ) -> InstrumentRegistry:
        """Load a compact or detailed master (path or bytes; comma or tab separated, detected from the
        header). ``today`` fixes the date that "future only" queries count from (default: the IST date
        at query time). Raises :class:`MasterFormatError` for an unusable file."""
        if max_bad_fraction is None:
            from tickgate.config import get_settings

            max_bad_fraction = get_settings().master.max_bad_row_fraction
        if isinstance(source, str):
            source = Path(source)
        return cls(load_frame(source, max_bad_fraction=max_bad_fraction), today=today)

    def __len__(self) -> int:
        return self._df.height

    def __repr__(self) -> str:
        return f"<InstrumentRegistry {self._df.height} instruments ({self._stats.format})>"

    @property
    def frame(self) -> pl.DataFrame:
        """The normalised master, columnar (treat as read-only). For bulk work other layers may need."""
        return self._df

    @cached_property
    def stats(self) -> RegistryStats:
        """Rows read/loaded, skipped by reason, and counts per exchange/segment/instrument."""
        by_esi = composition(self._df)
        by_es: Counter[str] = Counter()
        by_i: Counter[str] = Counter()
        for (e, g, i), n in by_esi.items():
            by_es[f"{e}/{g}"] += n
            by_i[i] += n
        return replace(
            self._stats,
            by_exchange_segment=dict(sorted(by_es.items())),
            by_instrument=dict(sorted(by_i.items())),
            by_exchange_segment_instrument=by_esi,
        )

    def warm(self) -> None:
        """Build every lazy index now (e.g. at start-up, so the first request does not pay for it)."""
        _ = self._chains, self._universe

    # ------------------------------------------------------------------------------- materialisation

    def _instruments(self, rows: Sequence[int]) -> list[Instrument]:
        cache = self._cache
        missing = [r for r in dict.fromkeys(rows) if r not in cache]
        if len(missing) > _GATHER_MIN:
            for r, t in zip(missing, self._df[missing].iter_rows(), strict=True):
                cache[r] = _make(t)
        else:  # a few rows: direct row reads, no thread-pool round trip (steadier latency)
            for r in missing:
                cache[r] = _make(self._df.row(r))
        return [cache[r] for r in rows]

    def _instrument(self, row: int) -> Instrument:
        return self._instruments([row])[0]

    # ------------------------------------------------------------------------------------------ by id

    def _row_of(self, key: int) -> int | None:
        idx = self._key_index
        i = int(np.searchsorted(idx.keys, key))
        if i < len(idx.keys) and idx.keys[i] == key:
            return int(idx.rows[i])
        return None

    def by_security_id(self, security_id: int, segment: ExchangeSegment | None = None) -> Instrument | None:
        """The instrument with this id. Ids are unique per segment only: without ``segment`` an id
        present in several segments raises :class:`AmbiguousSecurityIdError` rather than guessing."""
        if segment is not None:
            row = self._row_of((int(segment) << 32) | int(security_id))
            return None if row is None else self._instrument(row)
        hits = [
            (s, r) for s in _SEGMENTS if (r := self._row_of((int(s) << 32) | int(security_id))) is not None
        ]
        if len(hits) > 1:
            names = ", ".join(s.name for s, _ in hits)
            raise AmbiguousSecurityIdError(f"security id {security_id} exists in {names}: pass segment=")
        return self._instrument(hits[0][1]) if hits else None

    def get(self, key: InstrumentKey) -> Instrument | None:
        """The instrument for a feed key, or ``None``."""
        return self.by_security_id(key.security_id, key.segment)

    def get_many(self, keys: Iterable[InstrumentKey]) -> list[Instrument | None]:
        """Vectorised :meth:`get` for bulk resolution (a planner resolving thousands of keys)."""
        wanted = np.fromiter(((int(k.segment) << 32) | int(k.security_id) for k in keys), dtype=np.int64)
        idx = self._key_index
        pos = np.minimum(np.searchsorted(idx.keys, wanted), max(len(idx.keys) - 1, 0))
        found = idx.keys[pos] == wanted if len(idx.keys) else np.zeros(len(wanted), dtype=bool)
        made = iter(self._instruments(idx.rows[pos][found].tolist()))
        return [next(made) if f else None for f in found.tolist()]

    # ----------------------------------------------------------------------------------------- chains

    @cached_property
    def _instrument_names(self) -> list[str]:
        return [n for n in self._df["instrument"].unique().to_list() if n]

    def _instrument_mask(self, prefix: str) -> pl.Expr:
        """Rows whose instrument name starts with ``prefix``, tested on the few distinct names only."""
        return pl.col("instrument").is_in([n for n in self._instrument_names if n.startswith(prefix)])

    @cached_property
    def _chains(self) -> _Chains:
        c = pl.col
        # ~265k option rows, sorted on numbers only (segment, symbol code, expiry day, strike, CE first);
        # group boundaries come from numpy, and only one row per group goes back to Python.
        opts = (
            self._df.with_row_index("row")
            .filter(self._instrument_mask("OPT"))
            .select(
                "row", "fseg", c("symbol").to_physical().alias("sym_code"),
                c("expiry").cast(pl.Int32).alias("day"), "strike", (c("opt") == "CE").alias("is_ce"), "sid",
            )
            .sort("fseg", "sym_code", "day", "strike", "is_ce", descending=[False, False, False, False, True])
        )  # fmt: skip
        n = opts.height
        fseg, code, day = (opts[name].to_numpy() for name in ("fseg", "sym_code", "day"))
        change = np.ones(n, dtype=bool)
        if n:
            change[1:] = (fseg[1:] != fseg[:-1]) | (code[1:] != code[:-1]) | (day[1:] != day[:-1])
        starts = np.flatnonzero(change)
        stops = np.append(starts[1:], n) if n else starts
        heads = opts["row"].to_numpy()[starts].tolist()
        meta = self._df[heads].select("exch", "symbol", "expiry", "flag").iter_rows() if heads else iter(())
        groups: dict[tuple[str, str, dt.date], tuple[int, int]] = {}
        option_expiries: dict[tuple[str, str], list[tuple[dt.date, str | None]]] = {}
        for (exch, sym, exp, flag), start, stop in zip(meta, starts.tolist(), stops.tolist(), strict=True):
            groups.setdefault((exch, sym, exp), (start, stop))
            option_expiries.setdefault((exch, sym), []).append((exp, flag))
        for entries in option_expiries.values():
            entries.sort(key=lambda e: e[0])
        futs = (
            self._df.with_row_index("row")
            .filter(self._instrument_mask("FUT"))
            .select("exch", "symbol", "expiry", "row", "flag")
        )
        futures: dict[tuple[str, str], list[tuple[dt.date, int, str | None]]] = {}
        for exch, sym, exp, row, flag in futs.iter_rows():
            futures.setdefault((exch, sym), []).append((exp, row, flag))
        for contracts in futures.values():
            contracts.sort(key=lambda f: (f[0], f[1]))
        exchanges: dict[str, set[str]] = {}
        for exch, sym in (*option_expiries, *futures):
            exchanges.setdefault(sym, set()).add(exch)
        return _Chains(
            strike=opts["strike"].to_numpy(),
            is_ce=opts["is_ce"].to_numpy(),
            fseg=opts["fseg"].to_numpy(),
            sid=opts["sid"].to_numpy(),
            groups=groups,
            option_expiries=option_expiries,
            futures=futures,
            exchanges={s: sorted(e, key=lambda x: _EXCHANGE_ORDER.get(x, 9)) for s, e in exchanges.items()},
        )

    def _derivative_exchange(self, symbol: str, exchange: str | None) -> str | None:
        if exchange is not None:
            return exchange.upper()
        found = self._chains.exchanges.get(symbol)
        return found[0] if found else None

    def _day(self, today: dt.date | None) -> dt.date:
        return today or self._today or ist_today()

    def option_expiries(
        self, symbol: str, today: dt.date | None = None, *, exchange: str | None = None
    ) -> list[Expiry]:
        """Expiries of the symbol's options from ``today`` on (an expiry today still trades), sorted,
        with their kind: the file's W/M flag, and ``quarterly`` for a quarter-month monthly beyond the
        three serial monthlies (the flag itself has no such value)."""
        symbol = _normalise(symbol)
        exch = self._derivative_exchange(symbol, exchange)
        entries = self._chains.option_expiries.get((exch or "", symbol), [])
        return _kinds([e for e in entries if e[0] >= self._day(today)])

    def future_expiries(
        self, symbol: str, today: dt.date | None = None, *, exchange: str | None = None
    ) -> list[Expiry]:
        """Expiries of the symbol's futures from ``today`` on, sorted, with their kind."""
        symbol = _normalise(symbol)
        exch = self._derivative_exchange(symbol, exchange)
        entries = self._chains.futures.get((exch or "", symbol), [])
        day = self._day(today)
        by_date = {e: f for e, _, f in entries if e >= day}
        return _kinds(sorted(by_date.items()))

    def strikes(
        self, symbol: str, expiry: dt.date | Expiry, *, exchange: str | None = None
    ) -> list[StrikeRow]:
        """The listed strikes of (symbol, expiry), ascending, with the keys of their CE and PE."""
        symbol = _normalise(symbol)
        exch = self._derivative_exchange(symbol, exchange)
        ch = self._chains
        bounds = ch.groups.get((exch or "", symbol, _expiry_date(expiry)))
        if bounds is None:
            return []
        lo, hi = bounds
        strikes = ch.strike[lo:hi].tolist()
        is_ce = ch.is_ce[lo:hi].tolist()
        segs = ch.fseg[lo:hi].tolist()
        sids = ch.sid[lo:hi].tolist()
        out: list[StrikeRow] = []
        i, n = 0, hi - lo
        while i < n:
            k = strikes[i]
            ce = pe = None
            while i < n and strikes[i] == k:
                key = InstrumentKey(_SEGMENTS_BY_VALUE[segs[i]], sids[i])
                if is_ce[i]:
                    ce = ce or key
                else:
                    pe = pe or key
                i += 1
            out.append(StrikeRow(k, ce, pe))
        return out

    def strike_step(self, symbol: str, expiry: dt.date | Expiry, *, exchange: str | None = None) -> float:
        """The most common gap between adjacent listed strikes (grids widen away from the money, so the
        smallest or the first gap would be wrong); ties go to the smaller gap. ``LookupError`` when fewer
        than two strikes are listed."""
        symbol = _normalise(symbol)
        exch = self._derivative_exchange(symbol, exchange)
        ch = self._chains
        bounds = ch.groups.get((exch or "", symbol, _expiry_date(expiry)))
        if bounds is None:
            raise LookupError(f"no options listed for {symbol} expiring {_expiry_date(expiry)}")
        uniq = np.unique(ch.strike[bounds[0] : bounds[1]])
        if len(uniq) < 2:
            raise LookupError(f"fewer than two strikes listed for {symbol} expiring {_expiry_date(expiry)}")
        gaps, counts = np.unique(np.round(np.diff(uniq), 6), return_counts=True)
        return float(gaps[int(np.argmax(counts))])  # argmax takes the first (smallest) gap among ties

    def futures(
        self, symbol: str, today: dt.date | None = None, *, exchange: str | None = None
    ) -> list[Instrument]:
        """The symbol's futures contracts from ``today`` on, nearest first."""
        symbol = _normalise(symbol)
        exch = self._derivative_exchange(symbol, exchange)
        day = self._day(today)
        rows = [row for e, row, _ in self._chains.futures.get((exch or "", symbol), []) if e >= day]
        return self._instruments(rows)

    def nearest_future(
        self, symbol: str, today: dt.date | None = None, *, exchange: str | None = None
    ) -> Instrument | None:
        """The nearest futures contract not yet expired (e.g. the MCX contract to track a commodity)."""
        found = self.futures(symbol, today, exchange=exchange)
        return found[0] if found else None

    # -------------------------------------------------------------------------- search and underlyings

    @cached_property
    def _universe(self) -> _Universe:
        c = pl.col
        df = self._df.with_row_index("row")
        inst = c("instrument").cast(pl.String)
        exch_sym = pl.concat_str(c("exch").cast(pl.String), c("symbol").cast(pl.String), separator="\x1f")
        # F&O-enabled stocks: distinct (exchange, symbol) of stock derivatives, deduplicated on the
        # categorical codes before any string is built
        fno = (
            df.filter(self._instrument_mask("OPTSTK") | self._instrument_mask("FUTSTK"))
            .select("exch", "symbol")
            .unique()
            .select(exch_sym)
        )
        u = df.filter(
            self._instrument_mask("INDEX") | self._instrument_mask("EQUITY") | self._instrument_mask("FUT")
        ).select(
            "row",
            "expiry",
            c("symbol").cast(pl.String).str.to_uppercase().alias("sym"),
            c("exch")
            .cast(pl.String)
            .replace_strict(_EXCHANGE_ORDER, default=9, return_dtype=pl.UInt8)
            .alias("xo"),
            pl.when(inst == "INDEX")
            .then(0)
            .when(inst.str.starts_with("FUT"))
            .then(2)
            .when(exch_sym.is_in(fno.to_series().to_list()))
            .then(1)
            .otherwise(3)
            .alias("cat"),
            pl.concat_str(
                c("tsym").str.to_uppercase(), c("display").fill_null("").str.to_uppercase(), separator="\x1f"
            )
            .str.replace_all("\n", " ", literal=True)
            .alias("hay"),
        )
        prio = u.filter(c("cat") < 3)
        p_sorted = prio.sort("sym", "cat", "xo", "expiry", "row")
        p_hay = prio.sort("cat", "xo", "sym", "expiry", "row")
        # the rest: one order (symbol, NSE before BSE) serves both prefix bisection and substring scans
        rest = u.filter(c("cat") == 3).sort("sym", "xo", "row")
        ph, po = _haystack(p_hay["hay"])
        rh, ro = _haystack(rest["hay"])
        tri_starts, tri_rows = _trigram_index(rest["hay"], rh)
        rest_rows = rest["row"].to_list()
        return _Universe(
            prio_syms=p_sorted["sym"].to_list(),
            prio_rows=p_sorted["row"].to_list(),
            rest_syms=rest["sym"].to_list(),
            rest_rows=rest_rows,
            prio_hay=ph,
            prio_offsets=po,
            prio_hay_rows=p_hay["row"].to_list(),
            rest_text=rest["hay"].to_list(),
            tri_starts=tri_starts,
            tri_rows=tri_rows,
            rest_hay=rh,
            rest_offsets=ro,
        )

    def search(self, q: str, limit: int = 20) -> list[Instrument]:
        """Case-insensitive search over symbols and display names of underlying-level instruments
        (indices, cash, futures). Ranked: exact symbol; then indices, F&O stocks and futures (symbol
        prefix, then substring); then other cash rows (symbol prefix, then substring)."""
        query = " ".join(q.upper().replace("\x1f", " ").split())
        if not query or limit <= 0:
            return []
        u = self._universe
        found: dict[int, None] = {}

        def full() -> bool:
            return len(found) >= limit

        def exact(syms: list[str], rows: list[int]) -> None:
            i = bisect_left(syms, query)
            while i < len(syms) and syms[i] == query and not full():
                found.setdefault(rows[i])
                i += 1

        def prefix(syms: list[str], rows: list[int]) -> None:
            i = bisect_left(syms, query)
            while i < len(syms) and syms[i].startswith(query) and not full():
                found.setdefault(rows[i])
                i += 1

        exact(u.prio_syms, u.prio_rows)
        exact(u.rest_syms, u.rest_rows)
        prefix(u.prio_syms, u.prio_rows)
        if not full():
            hay, offsets, rows = u.prio_hay, u.prio_offsets, u.prio_hay_rows
            pos = hay.find(query)
            while pos != -1 and not full():
                entry = bisect_right(offsets, pos) - 1
                found.setdefault(rows[entry])
                pos = hay.find(query, offsets[entry + 1])
        prefix(u.rest_syms, u.rest_rows)
        if not full():
            self._search_rest(query, found, limit)
        return self._instruments(list(found)[:limit])

    def _search_rest(self, query: str, found: dict[int, None], limit: int) -> None:
        """Substring matches among the other cash rows, in symbol order: candidates from the trigram
        index (the rarest of the query's trigrams, narrowed by the next ones while still large), each
        checked for the whole query; queries under three characters scan the joined text instead."""
        u = self._universe
        if not u.rest_text:
            return
        rows = u.rest_rows
        buckets = _trigram_buckets(query.encode())
        if len(buckets):
            text = u.rest_text

            def check(cands: npt.NDArray[np.int32]) -> bool:
                last = -1
                for i in cands.tolist():
                    if i != last and query in text[i]:
                        found.setdefault(rows[i])
                        if len(found) >= limit:
                            return True
                    last = i
                return False

            lists = sorted(
                (u.tri_rows[u.tri_starts[b] : u.tri_starts[b + 1]] for b in set(buckets.tolist())), key=len
            )
            # Common queries fill up from the first candidates; only rare ones need the narrowing
            # (a sorted-list intersection by binary search, no sorting).
            if check(lists[0][:_VERIFY_MAX]) or len(lists[0]) <= _VERIFY_MAX:
                return
            cands = lists[0][_VERIFY_MAX:]
            for more in lists[1:]:
                at = np.minimum(np.searchsorted(more, cands), len(more) - 1)
                cands = cands[more[at] == cands]
                if len(cands) <= _VERIFY_MAX:
                    break
            check(cands)
            return
        hay, offsets = u.rest_hay, u.rest_offsets
        pos = hay.find(query)
        while pos != -1 and len(found) < limit:
            entry = bisect_right(offsets, pos) - 1
            found.setdefault(rows[entry])
            pos = hay.find(query, offsets[entry + 1])

    def _exact_rows(self, symbol: str) -> list[int]:
        u = self._universe
        rows: list[int] = []
        for syms, rws in ((u.prio_syms, u.prio_rows), (u.rest_syms, u.rest_rows)):
            i = bisect_left(syms, symbol)
            while i < len(syms) and syms[i] == symbol:
                rows.append(rws[i])
                i += 1
        return rows

    def underlying(self, symbol: str, exchange: str | None = None) -> Instrument | None:
        """The underlying an F&O symbol refers to: the index or cash stock of that symbol (on the exchange
        its derivatives trade on, else NSE before BSE), or — for commodities and currencies, which have
        no spot row — the nearest futures contract."""
        symbol = _normalise(symbol)
        exch = exchange.upper() if exchange else None
        cands = [
            i
            for i in self._instruments(self._exact_rows(symbol))
            if i.instrument in ("INDEX", "EQUITY") and (exch is None or i.exchange == exch)
        ]
        if cands:
            deriv_exchanges = self._chains.exchanges.get(symbol, [])

            def rank(i: Instrument) -> tuple[int, int, int]:
                return (
                    0 if i.instrument == "INDEX" else 1,
                    0 if i.exchange in deriv_exchanges else 1,
                    _EXCHANGE_ORDER.get(i.exchange, 9),
                )

            return min(cands, key=rank)
        return self.nearest_future(symbol, exchange=exch)

    def underlying_of(self, instrument: Instrument) -> Instrument | None:
        """What a derivative is written on. Index and stock derivatives link by symbol (the detailed
        file's UNDERLYING_SECURITY_ID can be the exchange's index token, e.g. 26009 for BANKNIFTY, not
        Dhan's IDX_I id 25). Options on futures (MCX) link to their future: the id the file gives when it
        is a future of that symbol, else the first future expiring on or after the option."""
        if not instrument.is_derivative:
            return None
        kind = instrument.instrument
        if kind in ("OPTIDX", "FUTIDX", "OPTSTK", "FUTSTK"):
            return self.underlying(instrument.symbol, instrument.exchange) or self.underlying(
                instrument.symbol
            )
        if not instrument.is_option:
            return None  # a commodity/currency future has no spot row
        if instrument.underlying_security_id is not None:
            linked = self.by_security_id(instrument.underlying_security_id, instrument.key.segment)
            if linked is not None and linked.is_future and linked.symbol == instrument.symbol:
                return linked
        expiry = instrument.expiry or dt.date.min
        return self.nearest_future(instrument.symbol, expiry, exchange=instrument.exchange)


# ------------------------------------------------------------------------------------------------ helpers

_SEGMENTS_BY_VALUE = {int(s): s for s in ExchangeSegment}


def _make(t: tuple[Any, ...]) -> Instrument:
    """Frame row (loader.FRAME_COLUMNS order) → Instrument."""
    (
        _key,
        fseg,
        sid,
        exch,
        seg,
        instrument,
        symbol,
        tsym,
        display,
        lot,
        tick,
        expiry,
        strike,
        opt,
        flag,
        usid,
    ) = t
    derivative = instrument.startswith(("OPT", "FUT"))
    return Instrument(
        key=InstrumentKey(_SEGMENTS_BY_VALUE[fseg], sid),
        exchange=exch,
        segment=seg,
        instrument=instrument,
        symbol=symbol,
        trading_symbol=tsym,
        display_name=display or tsym,
        lot_size=lot,
        tick_size=tick,
        expiry=expiry,
        strike=strike,
        option_type=opt,
        expiry_flag=flag,
        underlying_symbol=symbol if derivative else None,
        underlying_security_id=usid,
    )


def _haystack(entries: pl.Series) -> tuple[str, list[int]]:
    """One newline-joined string plus each entry's start offset (in characters, as ``str.find`` counts)
    and a final end sentinel, so a hit position maps back to its entry by bisection."""
    if entries.len() == 0:
        return "", [0]
    hay = entries.str.join("\n").item()
    lengths = entries.str.len_chars().cast(pl.Int64) + 1
    offsets = [0, *lengths.cum_sum().to_list()]
    return str(hay), offsets


_TRI_BITS = 13  # 8192 trigram buckets: ~200 rows each on average over ~1.4 MB of text


def _trigram_buckets(data: bytes) -> npt.NDArray[np.uint16]:
    """Bucket of every byte trigram: the 24-bit trigram times a Fibonacci-hashing constant, top bits
    (the same for rows and queries). Computed in place on one 32-bit array to keep the build light."""
    a = np.frombuffer(data, dtype=np.uint8)
    if len(a) < 3:
        return np.zeros(0, dtype=np.uint16)
    h = a[:-2].astype(np.uint32)
    h <<= np.uint32(8)
    h |= a[1:-1]
    h <<= np.uint32(8)
    h |= a[2:]
    h *= np.uint32(2654435761)
    h >>= np.uint32(32 - _TRI_BITS)
    return h.astype(np.uint16)


def _trigram_index(texts: pl.Series, joined: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """Posting lists (CSR) of rows per trigram bucket, fully vectorised over the newline-joined UTF-8
    text: a stable radix argsort of the bucket numbers keeps each list in row order. Trigrams spanning
    two rows are credited to the first one, which only adds a candidate."""
    starts = np.zeros((1 << _TRI_BITS) + 1, dtype=np.int64)
    if texts.len() == 0:
        return starts, np.zeros(0, dtype=np.int32)
    data = joined.encode()  # texts, newline-joined
    buckets = _trigram_buckets(data)
    widths = texts.str.len_bytes().cast(pl.Int64).to_numpy() + 1  # each text and its newline
    row_of_byte = np.repeat(np.arange(texts.len(), dtype=np.int32), widths)
    rows = row_of_byte[: len(buckets)][np.argsort(buckets, kind="stable")]
    np.cumsum(np.bincount(buckets, minlength=1 << _TRI_BITS), out=starts[1:])
    return starts, rows


def _kinds(entries: Sequence[tuple[dt.date, str | None]]) -> list[Expiry]:
    """Attach kinds to sorted (date, W/M flag) pairs. Without a flag, an expiry with a later one in the
    same month is weekly."""
    out: list[Expiry] = []
    dates = [d for d, _ in entries]
    monthlies = 0
    for n, (d, given) in enumerate(entries):
        flag = given
        if flag is None:
            nxt = dates[n + 1] if n + 1 < len(dates) else None
            flag = "W" if nxt is not None and (nxt.year, nxt.month) == (d.year, d.month) else "M"
        kind: ExpiryKind
        if flag == "W":
            kind = "weekly"
        else:
            kind = "quarterly" if monthlies >= _SERIAL_MONTHLIES and d.month in _QUARTER_MONTHS else "monthly"
            monthlies += 1
        out.append(Expiry(d, kind))
    return out
