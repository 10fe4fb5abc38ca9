"""The instrument registry: a loaded scrip master and the queries the planner, ATM engine and API need.

The master stays one columnar polars frame. Each query family gets its own small index, built on first
use from vectorised operations (so a process that only resolves ids never pays for search structures):

* by id — the frame's ``segment << 32 | security id`` keys, argsorted at load (the same sort finds
  duplicate ids), searched with numpy;
* chains — option rows sorted by (segment, symbol, expiry, strike) into flat numpy arrays plus a dict of
  group boundaries; futures as short per-symbol lists;
* search/underlyings — the ~50k underlying-level rows (indices, cash, futures): sorted symbol lists for
  exact/prefix matches, a joined uppercase text for substring scans of the small priority tier (C-speed
  ``str.find``), and a hashed trigram index for the large tier of other cash rows.

Instrument objects are only built for rows a caller asks for, and cached.

Memory: every index is built from lazy queries that copy only the columns and rows it needs (an eager
``filter`` of the frame would copy its text columns too), and holds numbers in numpy arrays or ``array``
rather than lists of Python ints.
"""

from __future__ import annotations

import datetime as dt
from array import array
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

from tickgate.clock import Clock
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
    rows: npt.NDArray[np.uint32]  # frame row of each sorted key


@dataclass(frozen=True, slots=True)
class _Chains:
    strike: npt.NDArray[np.float64]
    is_ce: npt.NDArray[np.bool_]
    fseg: npt.NDArray[np.uint8]
    sid: npt.NDArray[np.uint32]
    groups: dict[tuple[str, str, dt.date], tuple[int, int]]  # (exchange, symbol, expiry) → slice
    option_expiries: dict[tuple[str, str], list[tuple[dt.date, str | None]]]
    futures: dict[tuple[str, str], list[tuple[dt.date, int, str | None]]]  # (expiry, frame row, flag)
    exchanges: dict[str, list[str]]  # symbol → exchanges with derivatives on it, preferred first


@dataclass(frozen=True, slots=True)
class _Universe:
    """Search structures. "prio" = indices, F&O stocks and futures (a few thousand rows: a substring scan
    of one joined string is cheap). "rest" = other cash rows (~50k): a hashed trigram index (built with
    numpy) gives, for a query of three or more characters, the few rows that can contain it; only those
    are checked. Row numbers and offsets are compact arrays (``array`` indexes to plain ints), not lists
    of Python ints."""

    prio_syms: list[str]  # sorted uppercase symbols, for exact and prefix matches
    prio_rows: Sequence[int]
    rest_syms: list[str]
    rest_rows: Sequence[int]
    prio_hay: str  # "TSYM\x1fDISPLAY" per row, newline-joined, ranked order
    prio_offsets: Sequence[int]
    prio_hay_rows: Sequence[int]
    rest_hay: str  # "TSYM\x1fDISPLAY" per rest row (rest_syms order), newline-joined
    rest_offsets: Sequence[int]  # start of each rest entry in rest_hay, plus an end sentinel


def _exchange_order(exch: pl.Expr) -> pl.Expr:
    """NSE, BSE, MCX, then the rest (categorical comparisons, no strings built)."""
    order: Any = pl
    for name, rank in _EXCHANGE_ORDER.items():
        order = order.when(exch == name).then(pl.lit(rank, pl.UInt8))
    expr: pl.Expr = order.otherwise(pl.lit(9, pl.UInt8))
    return expr


@dataclass(frozen=True, slots=True)
class _Trigrams:
    """Trigram bucket b's rest entries (positions in rest_syms order) are
    ``rows[starts[b]:starts[b + 1]]``, ascending, distinct."""

    starts: npt.NDArray[np.int64]
    rows: npt.NDArray[np.unsignedinteger[Any]]


def _normalise(symbol: str) -> str:
    return symbol.strip().upper()


def _expiry_date(expiry: dt.date | Expiry) -> dt.date:
    return expiry.date if isinstance(expiry, Expiry) else expiry


class InstrumentRegistry:
    """A loaded scrip master. Build with :meth:`load`; every query is read-only."""

    def __init__(
        self, loaded: LoadedMaster, *, today: dt.date | None = None, clock: Clock | None = None
    ) -> None:
        self._df = loaded.frame
        self._stats = loaded.stats
        self._key_index = _KeyIndex(loaded.sorted_keys, loaded.key_rows)
        self._today = today
        self._clock = clock
        self._cache: dict[int, Instrument] = {}

    # ------------------------------------------------------------------------------------------ load

    @classmethod
    def load(
        cls,
        source: Source,
        *,
        today: dt.date | None = None,
        clock: Clock | None = None,
        max_bad_fraction: float | None = None,
    ) -> InstrumentRegistry:
        """Load a compact or detailed master (path or bytes; comma or tab separated, detected from the
        header). "Future only" queries count from ``today`` when it is fixed, else from ``clock``'s date at
        query time (a long-running service: the day moves on), else the configured clock's. A query's own
        ``today`` argument beats both. ``max_bad_fraction`` defaults to the ``master.max_bad_row_fraction``
        setting. Raises :class:`MasterFormatError` for an unusable file."""
        if isinstance(source, str):
            source = Path(source)
        return cls(load_frame(source, max_bad_fraction=max_bad_fraction), today=today, clock=clock)

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
        """Build every lazy index now (e.g. at start-up, so the first request does not pay for it). One
        after the other: two threads save little on an idle machine and overlap their temporaries, raising
        the peak (measured: docs/decisions/0002-measured-tradeoffs.md)."""
        _ = self._universe, self._trigrams, self._chains

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
        # ~240k option rows (lazy: only these columns of these rows are copied), sorted on numbers only
        # (segment, symbol code, expiry day, strike, CE first) by numpy: a 3-key lexsort on one packed
        # group key, faster than polars' 5-key sort (decision 0002). Group boundaries come from numpy; one row
        # per group goes back to Python.
        opts = (
            self._df.lazy()
            .with_row_index("row")
            .filter(self._instrument_mask("OPT"))
            .select(
                "row", "fseg", c("symbol").to_physical().alias("code"),
                c("expiry").cast(pl.Int32).alias("day"), "strike", (c("opt") == "CE").alias("is_ce"), "sid",
            )
            .collect()
        )  # fmt: skip
        cols = {name: opts[name].to_numpy() for name in opts.columns}
        del opts
        n = len(cols["row"])
        day = cols["day"].astype(np.int64)
        day -= day.min() if n else 0
        if n and day.max() >= 1 << 16:  # (expiries 180 years apart: no packing)
            order = np.lexsort((~cols["is_ce"], cols["strike"], day, cols["code"], cols["fseg"]))
        else:
            group = (cols["fseg"].astype(np.uint64) << 48) | (cols["code"].astype(np.uint64) << 16)
            group |= day.astype(np.uint64)
            order = np.lexsort((~cols["is_ce"], cols["strike"], group))
        del day
        fseg, code, days = (cols.pop(name)[order] for name in ("fseg", "code", "day"))
        change = np.ones(n, dtype=bool)
        if n:
            change[1:] = (fseg[1:] != fseg[:-1]) | (code[1:] != code[:-1]) | (days[1:] != days[:-1])
        del code, days
        starts = np.flatnonzero(change)
        stops = np.append(starts[1:], n) if n else starts
        heads = cols.pop("row")[order[starts]].tolist()
        meta = self._df[heads].select("exch", "symbol", "expiry", "flag").iter_rows() if heads else iter(())
        groups: dict[tuple[str, str, dt.date], tuple[int, int]] = {}
        option_expiries: dict[tuple[str, str], list[tuple[dt.date, str | None]]] = {}
        for (exch, sym, exp, flag), start, stop in zip(meta, starts.tolist(), stops.tolist(), strict=True):
            groups.setdefault((exch, sym, exp), (start, stop))
            option_expiries.setdefault((exch, sym), []).append((exp, flag))
        for entries in option_expiries.values():
            entries.sort(key=lambda e: e[0])
        futs = (
            self._df.lazy()
            .with_row_index("row")
            .filter(self._instrument_mask("FUT"))
            .select("exch", "symbol", "expiry", "row", "flag")
            .collect()
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
            strike=cols["strike"][order],
            is_ce=cols["is_ce"][order],
            fseg=fseg,
            sid=cols["sid"][order],
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
        if today is not None:
            return today
        if self._today is not None:
            return self._today
        return self._clock.today() if self._clock is not None else ist_today()

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
        strikes = ch.strike[bounds[0] : bounds[1]]  # ascending
        uniq = strikes[np.flatnonzero(np.diff(strikes, prepend=-np.inf))]
        if len(uniq) < 2:
            raise LookupError(f"fewer than two strikes listed for {symbol} expiring {_expiry_date(expiry)}")
        # (sort + run lengths rather than np.unique, whose first call imports numpy.ma; decision 0002)
        gaps = np.sort(np.round(np.diff(uniq), 6))
        firsts = np.flatnonzero(np.diff(gaps, prepend=-np.inf))
        counts = np.diff(np.append(firsts, len(gaps)))
        return float(gaps[firsts[int(np.argmax(counts))]])  # argmax: the first (smallest) gap among ties

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
        # lazy, so only the few columns needed are ever copied, and only for the underlying-level rows
        frame = self._df.lazy()
        # (exchange, symbol) as one number, from the categorical codes: no strings built to compare them
        pair = c("exch").to_physical().cast(pl.UInt64) * (1 << 32) + c("symbol").to_physical()
        fno = (  # F&O-enabled stocks: distinct (exchange, symbol) of stock derivatives
            frame.filter(self._instrument_mask("OPTSTK") | self._instrument_mask("FUTSTK"))
            .select(pair.unique())
            .collect()
            .to_series()
        )
        u = (
            frame.with_row_index("row")
            .filter(
                self._instrument_mask("INDEX")
                | self._instrument_mask("EQUITY")
                | self._instrument_mask("FUT")
            )
            .select(
                c("row").cast(pl.Int32),
                "expiry",
                c("symbol").cast(pl.String).str.to_uppercase().alias("sym"),
                _exchange_order(c("exch")).alias("xo"),
                pl.when(c("instrument") == "INDEX")
                .then(0)
                .when(self._instrument_mask("FUT"))
                .then(2)
                .when(pair.is_in(fno.implode()))
                .then(1)
                .otherwise(3)
                .alias("cat"),
                pl.concat_str(
                    c("tsym").str.to_uppercase(),
                    c("display").fill_null("").str.to_uppercase(),
                    separator="\x1f",
                )
                .str.replace_all("\n", " ", literal=True)
                .alias("hay"),
            )
            .collect()
        )
        prio = u.filter(c("cat") < 3)
        p_sorted = prio.sort("sym", "cat", "xo", "expiry", "row")
        p_hay = prio.sort("cat", "xo", "sym", "expiry", "row")
        del prio
        # the rest: one order (symbol, NSE before BSE) serves both prefix bisection and substring scans
        rest = u.filter(c("cat") == 3).sort("sym", "xo", "row").select("sym", "row", "hay")
        del u
        ph, po = _haystack(p_hay["hay"])
        rh, ro = _haystack(rest["hay"])
        return _Universe(
            prio_syms=p_sorted["sym"].to_list(),
            prio_rows=_ints(p_sorted["row"]),
            rest_syms=rest["sym"].to_list(),
            rest_rows=_ints(rest["row"]),
            prio_hay=ph,
            prio_offsets=po,
            prio_hay_rows=_ints(p_hay["row"]),
            rest_hay=rh,
            rest_offsets=ro,
        )

    @cached_property
    def _trigrams(self) -> _Trigrams:
        u = self._universe
        return _Trigrams(*_trigram_index(u.rest_hay, u.rest_offsets))

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

        def exact(syms: list[str], rows: Sequence[int]) -> None:
            i = bisect_left(syms, query)
            while i < len(syms) and syms[i] == query and not full():
                found.setdefault(rows[i])
                i += 1

        def prefix(syms: list[str], rows: Sequence[int]) -> None:
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
        if not u.rest_rows:
            return
        rows, hay, offsets = u.rest_rows, u.rest_hay, u.rest_offsets
        buckets = _trigram_buckets(query.encode())
        if len(buckets):
            tri = self._trigrams

            def check(cands: npt.NDArray[np.unsignedinteger[Any]]) -> bool:
                for i in cands.tolist():
                    if hay.find(query, offsets[i], offsets[i + 1]) != -1:
                        found.setdefault(rows[i])
                        if len(found) >= limit:
                            return True
                return False

            lists = sorted(
                (tri.rows[tri.starts[b] : tri.starts[b + 1]] for b in set(buckets.tolist())), key=len
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


def _ints(values: pl.Series | npt.NDArray[Any]) -> array[int]:
    """A compact sequence of ints (4 or 8 bytes each; indexing gives plain ints, ``bisect`` works)."""
    data = values.to_numpy() if isinstance(values, pl.Series) else values
    code = "i" if not len(data) or int(data.max()) < 2**31 else "q"
    return array(code, data.astype(np.int32 if code == "i" else np.int64).tobytes())


def _haystack(entries: pl.Series) -> tuple[str, array[int]]:
    """One newline-joined string plus each entry's start offset (in characters, as ``str.find`` counts)
    and a final end sentinel, so a hit position maps back to its entry by bisection."""
    if entries.len() == 0:
        return "", array("i", [0])
    hay = entries.str.join("\n").item()
    ends = (entries.str.len_chars().cast(pl.Int64) + 1).cum_sum().to_numpy()
    return str(hay), _ints(np.concatenate(([0], ends)))


_TRI_BITS = 13  # 8192 trigram buckets: ~200 rows each on average over ~1.5 MB of text
_TRI_CHUNK = 1 << 17  # text bytes per step of the index build (bounds its temporary arrays)


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


def _trigram_index(
    hay: str, offsets: Sequence[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.unsignedinteger[Any]]]:
    """Posting lists (CSR) of entries per trigram bucket: each entry of the newline-joined ``hay`` is
    listed once per distinct bucket of its trigrams, ascending. Trigrams across the separators go to an
    extra bucket that is dropped (a query never contains a separator). Built a chunk of entries at a
    time, so temporaries stay a few MB whatever the text size: (bucket, entry) pairs packed in 32 bits,
    sorted (numpy's vectorised sort) and deduplicated, then each chunk's part of every list is
    scattered into place."""
    n = len(offsets) - 1
    nb = 1 << _TRI_BITS
    dtype = np.uint16 if n <= 1 << 16 else np.uint32
    data = hay.encode()
    if len(data) != len(hay):  # non-ASCII text: offsets are in characters, the index needs bytes
        widths = np.fromiter((len(t.encode()) + 1 for t in hay.split("\n")), dtype=np.int64, count=n)
        byte_offsets = np.concatenate(([0], np.cumsum(widths)))
    else:
        byte_offsets = np.asarray(offsets, dtype=np.int64)
    parts: list[tuple[npt.NDArray[np.uint16], npt.NDArray[Any]]] = []
    counts = np.zeros(nb + 1, dtype=np.int64)
    first = 0
    while first < n:  # entries [first, last) in this chunk: at most 2^16, so they pack beside a bucket
        last = int(np.searchsorted(byte_offsets, byte_offsets[first] + _TRI_CHUNK, side="right")) - 1
        last = min(max(last, first + 1), n, first + (1 << 16))
        chunk = data[int(byte_offsets[first]) : int(byte_offsets[last])]
        buckets = _trigram_buckets(chunk).astype(np.uint32)
        separators = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) < 0x20)
        for back in (0, 1, 2):  # trigrams that contain a separator
            at = separators - back
            buckets[at[(at >= 0) & (at < len(buckets))]] = nb
        local = np.repeat(np.arange(last - first, dtype=np.uint32), np.diff(byte_offsets[first : last + 1]))
        pairs = (buckets << np.uint32(16)) | local[: len(buckets)]
        del buckets, local
        pairs.sort()
        distinct = np.empty(len(pairs), dtype=bool)
        distinct[:1] = True
        np.not_equal(pairs[1:], pairs[:-1], out=distinct[1:])
        pairs = pairs[distinct]
        bucket = (pairs >> np.uint32(16)).astype(np.uint16)
        entry = ((pairs & np.uint32(0xFFFF)) + np.uint32(first)).astype(dtype)
        counts += np.bincount(bucket, minlength=nb + 1)
        parts.append((bucket, entry))
        first = last
    starts = np.zeros(nb + 2, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    out: npt.NDArray[np.unsignedinteger[Any]] = np.empty(int(starts[nb]), dtype=dtype)
    base = starts[: nb + 1].copy()  # where the next chunk's part of each list goes
    for bucket, entry in parts:
        chunk_counts = np.bincount(bucket, minlength=nb + 1)
        chunk_starts = np.concatenate(([0], np.cumsum(chunk_counts)[:-1]))
        keep = bucket < nb
        out[(np.arange(len(bucket)) + (base - chunk_starts)[bucket])[keep]] = entry[keep]
        base += chunk_counts
    return starts[: nb + 1], out


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
