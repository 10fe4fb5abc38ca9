"""Scrip master CSV → one normalised polars frame, columnar end to end (no Python loop over rows).

Both of Dhan's formats are read by header name (the detailed file's tail drifts between releases), comma or
tab separated, in blocks of whole lines (bounded memory). Only the needed columns are parsed, each straight
into its working type: numbers by the CSV reader itself (a malformed one becomes null instead of aborting
the read), low-cardinality text (exchange, segment, instrument, option type, flag, expiry) as categoricals
whose few distinct values are mapped once (feed segment, option/future, expiry date) and applied by code,
symbols with tolerant vectorised expressions. Rows that still fail are skipped and counted by reason; if too
many fail the file is rejected with the column, line and value of the first failure, because a master that
is mostly garbage must not silently become an empty universe.

Memory: the frame is built from each block's final columns only (text columns are the parsed ones, no
copy), and never copied as a whole afterwards (``drop`` would rechunk it: ``drop_in_place``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from tickgate.dhan.protocol import segment_for_master
from tickgate.instruments.model import MasterFormat, MasterFormatError, RegistryStats

Source = str | Path | bytes

# canonical name → (header name, required), per format.
_COMPACT: dict[str, tuple[str, bool]] = {
    "exch": ("SEM_EXM_EXCH_ID", True),
    "seg": ("SEM_SEGMENT", True),
    "sid": ("SEM_SMST_SECURITY_ID", True),
    "instrument": ("SEM_INSTRUMENT_NAME", True),
    "tsym": ("SEM_TRADING_SYMBOL", True),
    "lot": ("SEM_LOT_UNITS", True),
    "display": ("SEM_CUSTOM_SYMBOL", False),
    "expiry": ("SEM_EXPIRY_DATE", True),
    "strike": ("SEM_STRIKE_PRICE", True),
    "opt": ("SEM_OPTION_TYPE", True),
    "tick": ("SEM_TICK_SIZE", True),
    "flag": ("SEM_EXPIRY_FLAG", False),
    "name": ("SM_SYMBOL_NAME", False),
}
_DETAILED: dict[str, tuple[str, bool]] = {
    "exch": ("EXCH_ID", True),
    "seg": ("SEGMENT", True),
    "sid": ("SECURITY_ID", True),
    "instrument": ("INSTRUMENT", True),
    "usid": ("UNDERLYING_SECURITY_ID", False),
    "usym": ("UNDERLYING_SYMBOL", True),
    "name": ("SYMBOL_NAME", True),
    "display": ("DISPLAY_NAME", False),
    "lot": ("LOT_SIZE", True),
    "expiry": ("SM_EXPIRY_DATE", True),
    "strike": ("STRIKE_PRICE", True),
    "opt": ("OPTION_TYPE", True),
    "tick": ("TICK_SIZE", True),
    "flag": ("EXPIRY_FLAG", False),
}

# Skip reasons. The first two are expected in good files and never count towards rejecting one.
NSE_TEST = "nse_test_symbol"
UNSUPPORTED = "unsupported_segment"
DUPLICATE = "duplicate_key"
BLANK = "blank_line"  # dropped silently (not counted as read)
# reason → canonical column that caused it, and what the column should have held (for error messages).
_BAD_REASONS: dict[str, tuple[str, str]] = {
    "bad_security_id": ("sid", "a positive integer security id"),
    "missing_instrument": ("instrument", "an instrument name"),
    "missing_symbol": ("tsym", "a symbol"),
    "bad_lot_size": ("lot", "a positive lot size"),
    "bad_tick_size": ("tick", "a tick size"),
    "bad_expiry": ("expiry", "an expiry date (YYYY-MM-DD or M/D/YYYY)"),
    "bad_strike": ("strike", "a positive strike price"),
    "bad_option_type": ("opt", "CE or PE"),
}
_NUMERIC = frozenset({"sid", "usid", "lot", "tick", "strike"})
_CATEGORICAL = frozenset({"exch", "seg", "instrument", "opt", "flag"})
_PAISE_SEGMENTS = ("E", "D", "C", "M")  # index rows carry their tick in rupees already

# Derivative trading symbols look like NIFTY-Oct2024-25800-CE, BAJAJ-AUTO-Nov2026-FUT, GOLD-05Dec2026-FUT.
_DATE_TAIL_RE = r"-\d{0,2}[A-Za-z]{3}\d{4}(?:-.*)?$"

# Final frame schema (the registry's storage); ``key`` = feed segment << 32 | security id.
FRAME_COLUMNS = (
    "key",
    "fseg",
    "sid",
    "exch",
    "seg",
    "instrument",
    "symbol",
    "tsym",
    "display",
    "lot",
    "tick",
    "expiry",
    "strike",
    "opt",
    "flag",
    "usid",
)


@dataclass(frozen=True, slots=True)
class _Header:
    fmt: MasterFormat
    separator: str
    width: int  # number of header fields
    columns: dict[str, tuple[int, str]]  # canonical → (position, header name as written)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """Types at parse time, so no intermediate text column is built for what is not text: numbers
        are parsed by the CSV reader itself, low-cardinality text (exchange, segment, instrument, option
        type, flag, expiry) straight into categoricals (4 bytes a row instead of a 16-byte string view,
        and mapped once per distinct value instead of once per row); only free text (symbols, names)
        stays text. Columns read are named by their canonical names, so no rename is needed."""
        kind = {pos: canon for canon, (pos, _) in self.columns.items()}
        return {kind.get(i, f"_{i}"): _parse_type(kind.get(i)) for i in range(self.width)}


def _parse_type(canon: str | None) -> pl.DataType:
    if canon in _NUMERIC:
        return pl.Float64()
    if canon in _CATEGORICAL:
        return pl.Categorical()
    if canon == "expiry":  # own categories, so its codes stay few and dense (a table indexes them)
        return pl.Categorical(pl.Categories("tickgate.master.expiry"))
    return pl.String()


def _head_bytes(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source[:65536]
    with open(source, "rb") as fh:
        return fh.read(65536)


def _parse_header(head: bytes) -> _Header:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    line = text.split("\n", 1)[0].rstrip("\r")
    if not line.strip():
        raise MasterFormatError("empty scrip master: no header line")
    sep = "\t" if line.count("\t") > line.count(",") else ","
    names = [n.strip().strip('"').strip().upper() for n in line.split(sep)]
    if "SEM_SMST_SECURITY_ID" in names:
        fmt: MasterFormat = "compact"
        spec = _COMPACT
    elif "EXCH_ID" in names and "SECURITY_ID" in names:
        fmt, spec = "detailed", _DETAILED
    else:
        raise MasterFormatError(
            "not a Dhan scrip master: the header has neither SEM_SMST_SECURITY_ID (compact format) nor "
            f"EXCH_ID and SECURITY_ID (detailed format); line 1 starts {line[:120]!r}"
        )
    position = {n: i for i, n in reversed(list(enumerate(names)))}
    missing = [col for col, required in spec.values() if required and col not in position]
    if missing:
        raise MasterFormatError(
            f"scrip master ({fmt} format) is missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}"
        )
    cols = {canon: (position[col], col) for canon, (col, _) in spec.items() if col in position}
    return _Header(fmt, sep, len(names), cols)


_CHUNK_BYTES = 8 << 20
"""Parse the file in ~8 MB blocks (~70k rows): every intermediate column then lives only for one block,
which keeps peak memory near the size of the final typed frame instead of several times the file (the full
master is 35-45 MB of text). Measured on the full master: 4 MB blocks cost ~15% more load time (per-block
overheads) for at most 5 MB less peak; 16 MB blocks save nothing more and add ~5 MB."""


def _blocks(source: Source) -> Iterator[bytes]:
    """Header-less blocks of whole lines (Dhan's master has no multi-line quoted fields)."""
    if isinstance(source, bytes):
        start = source.find(b"\n") + 1 if b"\n" in source else len(source)
        while start < len(source):
            end = source.find(b"\n", min(start + _CHUNK_BYTES, len(source)) - 1)
            end = len(source) if end == -1 else end + 1
            yield source[start:end]
            start = end
        return
    # One reused read buffer, one copy out of it per block: fresh memory costs page faults.
    buffer = bytearray(_CHUNK_BYTES)
    view = memoryview(buffer)
    with open(source, "rb") as fh:
        fh.readline()
        while size := fh.readinto(buffer):
            cut = buffer.rfind(b"\n", 0, size)
            if 0 <= cut < size - 1:  # re-read the partial last line with the next block
                fh.seek(cut + 1 - size, io.SEEK_CUR)
                yield bytes(view[: cut + 1])
            elif cut == -1 and size == _CHUNK_BYTES:  # a line longer than a block: take it whole
                yield bytes(view[:size]) + fh.readline()
            else:
                yield bytes(view[:size])


def _read_block(block: bytes, header: _Header, only: Iterable[str] | None = None) -> pl.DataFrame:
    """Parse a block: the header's columns (or ``only`` these), named by their canonical names."""
    wanted = set(header.columns if only is None else only)
    if only is None and header.fmt == "compact":
        wanted.discard("name")  # a rarely needed fallback: parsed on demand (see _block_rows)
    canon = sorted(wanted & header.columns.keys(), key=lambda c: header.columns[c][0])
    positions = [header.columns[c][0] for c in canon]
    try:
        return pl.read_csv(
            block,
            separator=header.separator,
            has_header=False,
            columns=positions,
            schema=header.schema,
            truncate_ragged_lines=True,
            encoding="utf8-lossy",
            raise_if_empty=False,
            ignore_errors=True,  # a malformed number becomes null; the row is then skipped with a reason
        ).rechunk()  # (one chunk per block, not one per parse thread and slice: lighter downstream)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise MasterFormatError(f"unreadable scrip master CSV: {exc}") from exc


def _raw_value(source: Source, header: _Header, line: int, canon: str) -> str | None:
    """The text of one cell, for error messages only (re-reads up to that line)."""
    if canon not in header.columns:
        return None
    stream: io.BufferedIOBase = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with stream:
        for n, raw in enumerate(stream, start=1):
            if n == line:
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                try:
                    cells = next(csv.reader([text], delimiter=header.separator), [])
                except csv.Error:  # a stray carriage return inside the line: the message goes without it
                    return None
                pos = header.columns[canon][0]
                return cells[pos] if pos < len(cells) else None
    return None


class _CodeMap:
    """A categorical column's texts → values computed once per distinct text for the whole load, applied
    per row as one gather by code instead of a string operation per row. The code → value table is
    rebuilt per block from that block's own (text, code) pairs: codes of a categories object are not
    stable once no column uses it any more."""

    def __init__(self, column: str, compute: Callable[[list[str]], list[Any]], dtype: pl.DataType) -> None:
        self.column = column
        self._compute = compute
        self._dtype = dtype
        self._values: dict[str, Any] = {}

    def expr(self, distinct: pl.Series) -> pl.Expr:
        """The mapping for a block whose column holds the ``distinct`` (categorical) values."""
        texts = distinct.cast(pl.String).to_list()
        if new := [t for t in texts if t not in self._values]:
            self._values.update(zip(new, self._compute(new), strict=True))
        codes = distinct.to_physical().to_list()
        table: list[Any] = [None] * (max(codes, default=0) + 1)
        for code, text in zip(codes, texts, strict=True):
            table[code] = self._values[text]
        return pl.lit(pl.Series(table, dtype=self._dtype)).gather(pl.col(self.column).to_physical())


def _parse_expiries(texts: list[str]) -> list[dt.date | None]:
    """ISO dates (``2026-02-24``, ``2026-02-24 14:30:00``) and spreadsheet ``7/31/2025``; years before
    1900 (``0001-01-01``) mean no expiry."""
    text = pl.Series(texts, dtype=pl.String)
    iso = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    mdy = text.str.strip_chars().str.extract(r"^(\d{1,2}/\d{1,2}/\d{4})")
    mdy = mdy.str.to_date("%m/%d/%Y", strict=False)
    dates = pl.select(pl.coalesce(iso, mdy)).to_series()
    return pl.select(pl.when(dates.dt.year() >= 1900).then(dates)).to_series().to_list()


def _instrument_kinds(names: list[str]) -> list[int]:
    """2 = option, 1 = future, 0 = anything else."""
    return [2 if n.startswith("OPT") else 1 if n.startswith("FUT") else 0 for n in names]


class _Codes:
    """The per-load code maps: instrument kind, expiry date, and the feed segment of each (exchange,
    segment) pair via :func:`segment_for_master` (the one mapping)."""

    def __init__(self) -> None:
        self.kind = _CodeMap("instrument", _instrument_kinds, pl.UInt8())
        self.expiry = _CodeMap("expiry", _parse_expiries, pl.Date())
        self._exchanges: list[str] = []
        self._segments: list[str] = []
        self.exch = _CodeMap("exch", lambda names: self._index(self._exchanges, names), pl.UInt32())
        self.seg = _CodeMap("seg", lambda names: self._index(self._segments, names), pl.UInt32())

    @staticmethod
    def _index(known: list[str], names: list[str]) -> list[int]:
        known.extend(names)
        return list(range(len(known) - len(names), len(known)))

    def distinct(self, raw: pl.DataFrame, **facts: pl.Expr) -> dict[str, Any]:
        """Each mapped column's distinct values in the block, and the values of the scalar ``facts``
        expressions: one query (small polars calls add up)."""
        maps = (self.kind, self.expiry, self.exch, self.seg)
        distinct = (pl.col(m.column).unique().drop_nulls().implode() for m in maps)
        row = raw.lazy().select(*distinct, **facts).collect()
        return {name: row[name][0] for name in row.columns}

    def feed_segment(self, distinct: dict[str, Any]) -> pl.Expr:
        e, g = self.exch.expr(distinct["exch"]), self.seg.expr(distinct["seg"])
        width = len(self._segments)
        pairs = [segment_for_master(x, y) for x in self._exchanges for y in self._segments]
        table = pl.Series([None if fs is None else int(fs) for fs in pairs] or [None], dtype=pl.UInt8)
        return pl.lit(table).gather(e * width + g)


# Skip reasons in the order they are tested; a row's code is its reason's position + 1 (0 = keep).
_REASON_ORDER = (
    BLANK,
    UNSUPPORTED,
    "bad_security_id",
    "missing_instrument",
    "missing_symbol",
    NSE_TEST,
    "bad_lot_size",
    "bad_tick_size",
    "bad_expiry",
    "bad_strike",
    "bad_option_type",
)


@dataclass
class _Skips:
    counts: dict[str, int]
    first_line: dict[str, int]

    def add(self, reason: str, n: int, line: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        self.first_line[reason] = min(self.first_line.get(reason, line), line)


@dataclass(frozen=True, slots=True)
class _Load:
    """What the blocks of one load share."""

    header: _Header
    codes: _Codes
    skips: _Skips


def _block_rows(raw: pl.DataFrame, block: bytes, first_line: int, load: _Load) -> pl.DataFrame:
    """One parsed block → its good rows in the storage types (columns ``line`` + :data:`FRAME_COLUMNS`);
    skipped rows are counted by reason. Mappings of categorical columns (feed segment, expiry date,
    option/future) are applied by code; the rest is one lazy query, so polars shares the sub-expressions
    and runs them in parallel. Only final columns outlive the block: the text columns of the result are
    the parsed ones (no copy), every intermediate column is dropped with the block."""
    header, codes = load.header, load.codes
    for optional, dtype in (("display", pl.String()), ("flag", pl.Categorical())):
        if optional not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype).alias(optional))
    if "usid" not in raw.columns:
        raw = raw.with_columns(pl.lit(None, pl.Float64).alias("usid"))
    c = pl.col
    ascii_symbols = c("tsym").str.len_bytes().sum() == c("tsym").str.len_chars().sum()
    distinct = codes.distinct(raw, **({"ascii": ascii_symbols} if header.fmt == "compact" else {}))
    kind = codes.kind.expr(distinct["instrument"])
    is_opt, is_deriv = (kind == 2).fill_null(False), (kind >= 1).fill_null(False)
    sid = c("sid")
    derived = [
        pl.int_range(first_line, first_line + raw.height, dtype=pl.UInt32).alias("line"),
        codes.feed_segment(distinct).alias("fseg"),
        pl.when((sid > 0) & (sid < 2**32) & (sid == sid.floor())).then(sid).cast(pl.UInt32).alias("sid_i"),
        (c("exch").is_null() & c("seg").is_null() & sid.is_null()).alias("blank"),
        codes.expiry.expr(distinct["expiry"]).alias("expiry_d"),
        is_opt.alias("is_opt"),
        is_deriv.alias("is_deriv"),
    ]
    if header.fmt == "compact":
        # No underlying column: strip the ``-<[DD]Mon YYYY>-…`` tail off the trading symbol (symbols may
        # contain '-', e.g. BAJAJ-AUTO). Finding the tail and cutting there is cheaper than a regex
        # replace; byte offsets equal character offsets only for ASCII, so other blocks use the replace.
        tsym = c("tsym")
        if distinct["ascii"]:
            at = tsym.str.find(_DATE_TAIL_RE)
            stripped, no_tail = tsym.str.head(at.fill_null(1 << 30)), at.is_null()
        else:
            stripped = tsym.str.replace(_DATE_TAIL_RE, "")
            no_tail = stripped.str.len_bytes() == tsym.str.len_bytes()
        derived += [
            stripped.cast(pl.Categorical).alias("symbol"),
            (is_deriv & no_tail).alias("no_tail"),  # falls back to SM_SYMBOL_NAME, below
        ]
    else:
        usym, name = c("usym"), c("name")
        # (null counts are free: the coalescing forms, several times slower, only for blocks that need them)
        if raw["usym"].null_count() or raw["name"].null_count():
            tsym = pl.when(is_deriv).then(pl.coalesce(name, usym)).otherwise(pl.coalesce(usym, name))
        else:
            tsym = pl.when(is_deriv).then(name).otherwise(usym)
        symbol = usym
        if raw["usym"].null_count():
            symbol = pl.coalesce(usym, name.str.replace(_DATE_TAIL_RE, ""))
        display = pl.coalesce(c("display"), name) if raw["display"].null_count() else c("display")
        derived += [symbol.cast(pl.Categorical).alias("symbol"), tsym.alias("tsym"), display.alias("display")]
    prepared = raw.lazy().with_columns(derived)
    reasons = (
        c("blank"),
        c("fseg").is_null(),
        c("sid_i").is_null(),
        c("instrument").is_null(),
        c("tsym").is_null(),
        (c("exch") == "NSE") & c("tsym").str.ends_with("NSETEST"),
        c("lot").is_null() | (c("lot") <= 0),
        c("tick").is_null() & (c("seg") != "I"),
        c("is_deriv") & c("expiry_d").is_null(),
        c("is_opt") & (c("strike").is_null() | (c("strike") <= 0)),
        c("is_opt") & ~c("opt").is_in(["CE", "PE"]).fill_null(False),
    )
    chain: Any = pl
    for code, cond in enumerate(reasons, start=1):
        chain = chain.when(cond).then(pl.lit(code, pl.UInt8))
    reason: pl.Expr = chain.otherwise(pl.lit(0, pl.UInt8))
    out = prepared.select(
        "line",
        reason.alias("reason"),
        *(["no_tail"] if header.fmt == "compact" else []),
        (c("fseg").cast(pl.Int64) * (1 << 32) + c("sid_i").cast(pl.Int64)).alias("key"),
        "fseg",
        c("sid_i").alias("sid"),
        "exch",
        "seg",
        "instrument",
        "symbol",
        "tsym",
        "display",
        c("lot").round(0).cast(pl.Int32, strict=False).alias("lot"),
        pl.when(c("seg").is_in(_PAISE_SEGMENTS)).then(c("tick") / 100.0).otherwise(c("tick"))
        .fill_null(0.0).alias("tick"),
        pl.when(c("is_deriv")).then(c("expiry_d")).alias("expiry"),
        pl.when(c("is_opt")).then(c("strike")).alias("strike"),
        pl.when(c("is_opt")).then(c("opt")).alias("opt"),
        pl.when(c("is_deriv") & c("flag").is_in(["W", "M"])).then(c("flag")).alias("flag"),
        pl.when(c("usid") > 0).then(c("usid")).cast(pl.UInt32, strict=False).alias("usid"),
    ).collect()  # fmt: skip
    if header.fmt == "compact":
        if "name" in header.columns and out["no_tail"].any():
            # a derivative symbol without a date tail: SM_SYMBOL_NAME instead (only those rows' names
            # become categories)
            names = _read_block(block, header, only=["name"])["name"]
            fallback = pl.when(c("no_tail") & names.is_not_null()).then(names)
            symbol = pl.coalesce(fallback, c("symbol").cast(pl.String)).cast(pl.Categorical)
            out = out.with_columns(symbol.alias("symbol"))
        out.drop_in_place("no_tail")  # (in place: no query, no copy)
    if out["reason"].max():
        bad = out.filter(c("reason") > 0).group_by("reason").agg(pl.len(), c("line").min())
        for code, n, line in bad.iter_rows():
            load.skips.add(_REASON_ORDER[code - 1], n, line)
        out = out.filter(c("reason") == 0)
    out.drop_in_place("reason")
    return out


class LoadedMaster(NamedTuple):
    frame: pl.DataFrame  # columns FRAME_COLUMNS, file order
    stats: RegistryStats
    sorted_keys: npt.NDArray[np.int64]  # frame["key"], ascending
    key_rows: npt.NDArray[np.uint32]  # frame row of each sorted key


def load_frame(source: Source, *, max_bad_fraction: float | None = None) -> LoadedMaster:
    """Read and normalise a master. Returns the frame (columns :data:`FRAME_COLUMNS`, file order) and what
    happened. Raises :class:`MasterFormatError` for an unusable file. ``max_bad_fraction`` defaults to
    the ``master.max_bad_row_fraction`` setting, looked up only if the file has bad rows (the settings
    module and pydantic cost ~20 MB and a clean file does not need them)."""
    skips = _Skips({}, {})
    parts: list[pl.DataFrame] = []
    line = 2
    try:
        header = _parse_header(_head_bytes(source))
        load = _Load(header, _Codes(), skips)
        for block in _blocks(source):
            raw = _read_block(block, header)
            if raw.height:
                parts.append(_block_rows(raw, block, line, load))
                line += raw.height
            del raw, block  # (before the next block is read)
    except OSError as exc:
        raise MasterFormatError(f"cannot read scrip master: {exc}") from exc
    rows_read = line - 2 - skips.counts.pop(BLANK, 0)
    skips.first_line.pop(BLANK, None)
    if rows_read == 0:
        raise MasterFormatError("scrip master has a header but no data rows")
    good = pl.concat(parts, rechunk=False)
    del parts
    # Duplicate (segment, id) among otherwise good rows: the first one wins. The stable argsort doubles
    # as the registry's by-id index, so it is computed once, here.
    keys = good["key"].to_numpy()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1]) + 1
    if len(repeated):
        drop = np.zeros(good.height, dtype=bool)
        drop[order[repeated]] = True
        dups = good.filter(pl.Series(drop))
        skips.add(DUPLICATE, dups.height, int(dups["line"].min()))  # type: ignore[arg-type]
        good = good.filter(pl.Series(~drop))
        keys = good["key"].to_numpy()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
    skipped, first_line = skips.counts, skips.first_line
    bad = {r: n for r, n in skipped.items() if r in _BAD_REASONS}
    n_bad = sum(bad.values())
    if n_bad and max_bad_fraction is None:
        from tickgate.config import get_settings

        max_bad_fraction = get_settings().master.max_bad_row_fraction
    if n_bad and (good.height == 0 or n_bad > (max_bad_fraction or 0.0) * rows_read):
        worst = max(bad, key=lambda r: (bad[r], -first_line[r]))
        canon, expected = _BAD_REASONS[worst]
        at = first_line[worst]
        # (the detailed format spreads the symbol over two columns)
        column = header.columns[canon][1] if canon in header.columns else "SYMBOL_NAME/UNDERLYING_SYMBOL"
        value = _raw_value(
            source, header, at, canon if canon != "tsym" or header.fmt == "compact" else "name"
        )
        raise MasterFormatError(
            f"scrip master rejected: {n_bad} of {rows_read} rows unreadable "
            f"(limit {max_bad_fraction:.1%}); most common: column {column} should hold {expected}, "
            f"first at line {at} (value {value!r})"
        )
    good.drop_in_place("line")  # (in place: ``drop`` would copy the whole frame into one chunk)
    return LoadedMaster(
        good,
        _skip_stats(header, rows_read, good.height, skipped, first_line),
        sorted_keys,
        order.astype(np.uint32),
    )


def _skip_stats(
    header: _Header,
    rows_read: int,
    rows_loaded: int,
    skipped: Mapping[str, int],
    first_line: Mapping[str, int],
) -> RegistryStats:
    return RegistryStats(
        format=header.fmt,
        separator=header.separator,
        rows_read=rows_read,
        rows_loaded=rows_loaded,
        skipped=dict(sorted(skipped.items())),
        first_skipped_line=dict(sorted(first_line.items())),
    )


def composition(frame: pl.DataFrame) -> dict[tuple[str, str, str], int]:
    """Row counts per (exchange, segment letter, instrument) of a loaded frame."""
    counts = frame.group_by("exch", "seg", "instrument").len()
    return {(e, g, i): n for e, g, i, n in sorted(counts.iter_rows())}
