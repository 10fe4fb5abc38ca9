"""Scrip master CSV → one normalised polars frame, columnar end to end (no Python loop over rows).

Both of Dhan's formats are read by header name (the detailed file's tail drifts between releases), comma or
tab separated, in blocks of whole lines (bounded memory). Only the needed columns are parsed: numbers by the
CSV reader itself (a malformed one becomes null instead of aborting the read), dates and symbols with
tolerant vectorised expressions. Rows that still fail are skipped and counted by reason; if too many fail
the file is rejected with the column, line and value of the first failure, because a master that is mostly
garbage must not silently become an empty universe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
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
        """Numbers are parsed by the CSV reader itself (no text copy of them), everything else as text."""
        numeric = {pos for canon, (pos, _) in self.columns.items() if canon in _NUMERIC}
        return {f"c{i}": pl.Float64() if i in numeric else pl.String() for i in range(self.width)}


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


_CHUNK_BYTES = 4 << 20
"""Parse the file in ~4 MB blocks: every intermediate column then lives only for one block, which keeps
peak memory near the size of the final typed frame instead of several times the file (the full master is
~45 MB of text)."""


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
    with open(source, "rb") as fh:
        fh.readline()
        while data := fh.read(_CHUNK_BYTES):
            cut = data.rfind(b"\n")
            if 0 <= cut < len(data) - 1:  # re-read the partial last line with the next block
                fh.seek(cut + 1 - len(data), io.SEEK_CUR)
                data = data[: cut + 1]
            elif cut == -1 and len(data) == _CHUNK_BYTES:  # a line longer than a block: take it whole
                data += fh.readline()
            yield data


def _read_block(block: bytes, header: _Header) -> pl.DataFrame:
    canon = sorted(header.columns, key=lambda c: header.columns[c][0])
    positions = [header.columns[c][0] for c in canon]
    try:
        df = pl.read_csv(
            io.BytesIO(block),
            separator=header.separator,
            has_header=False,
            columns=positions,
            schema=header.schema,
            truncate_ragged_lines=True,
            encoding="utf8-lossy",
            raise_if_empty=False,
            ignore_errors=True,  # a malformed number becomes null; the row is then skipped with a reason
        )
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise MasterFormatError(f"unreadable scrip master CSV: {exc}") from exc
    return df.rename(dict(zip(df.columns, canon, strict=True)))


def _raw_value(source: Source, header: _Header, line: int, canon: str) -> str | None:
    """The text of one cell, for error messages only (re-reads up to that line)."""
    if canon not in header.columns:
        return None
    stream: io.BufferedIOBase = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with stream:
        for n, raw in enumerate(stream, start=1):
            if n == line:
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                cells = next(csv.reader([text], delimiter=header.separator), [])
                pos = header.columns[canon][0]
                return cells[pos] if pos < len(cells) else None
    return None


def _feed_segment_expr(raw: pl.DataFrame) -> pl.Expr:
    """Feed segment number per row via :func:`segment_for_master` (the one mapping), asked once per
    (exchange, segment) pair present in the file rather than once per row."""
    chain: Any = None  # polars' When/Then/ChainedThen builder types
    c = pl.col
    for e in raw["exch"].unique().drop_nulls().to_list():
        for g in raw["seg"].unique().drop_nulls().to_list():
            fs = segment_for_master(e, g)
            if fs is None:
                continue
            cond, code = (c("exch") == e) & (c("seg") == g), pl.lit(int(fs), pl.UInt8)
            chain = pl.when(cond).then(code) if chain is None else chain.when(cond).then(code)
    if chain is None:
        return pl.lit(None, pl.UInt8)
    expr: pl.Expr = chain.otherwise(pl.lit(None, pl.UInt8))
    return expr


def _expiry(col: pl.Series) -> pl.Series:
    """ISO dates (``2026-02-24``, ``2026-02-24 14:30:00``) parse directly; anything left (spreadsheet
    ``7/31/2025``) is parsed once per distinct value. Years before 1900 (``0001-01-01``) mean no expiry."""
    iso = col.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    rest = col.filter(iso.is_null() & col.is_not_null()).unique()
    if rest.len():
        parsed = (
            rest.str.strip_chars()
            .str.extract(r"^(\d{1,2}/\d{1,2}/\d{4})")
            .str.to_date("%m/%d/%Y", strict=False)
        )
        iso = pl.select(
            pl.coalesce(iso, col.replace_strict(rest, parsed, default=None, return_dtype=pl.Date))
        ).to_series()
    return pl.select(pl.when(iso.dt.year() >= 1900).then(iso)).to_series().alias("expiry_d")


def _symbols(raw: pl.DataFrame, fmt: MasterFormat) -> tuple[pl.Expr, pl.Expr]:
    """(underlying/trading symbol, trading symbol) expressions. The compact file has no underlying
    column: strip the ``-<[DD]Mon YYYY>-…`` tail off the trading symbol (symbols may contain '-', e.g.
    BAJAJ-AUTO); a derivative without such a tail falls back to SM_SYMBOL_NAME."""
    c = pl.col
    is_deriv = c("instrument").str.starts_with("OPT") | c("instrument").str.starts_with("FUT")
    if fmt == "compact":
        stripped = c("tsym").str.replace(_DATE_TAIL_RE, "")
        if "name" in raw.columns:
            stripped = (
                pl.when(is_deriv & (stripped == c("tsym")))
                .then(pl.coalesce(c("name"), stripped))
                .otherwise(stripped)
            )
        return stripped, c("tsym")
    tsym = (
        pl.when(is_deriv).then(pl.coalesce(c("name"), c("usym"))).otherwise(pl.coalesce(c("usym"), c("name")))
    )
    symbol = c("usym")
    if raw["usym"].null_count():
        symbol = pl.coalesce(c("usym"), c("name").str.replace(_DATE_TAIL_RE, ""))
    return symbol, tsym


def _transform(raw: pl.DataFrame, fmt: MasterFormat, first_line: int) -> pl.DataFrame:
    """One block (text and number columns) → typed columns plus ``line`` and skip ``reason`` (null =
    keep). One lazy query, so polars shares the sub-expressions and runs them in parallel."""
    for optional in ("display", "flag", "name"):
        if optional not in raw.columns:
            raw = raw.with_columns(pl.lit(None, pl.String).alias(optional))
    if "usid" not in raw.columns:
        raw = raw.with_columns(pl.lit(None, pl.Float64).alias("usid"))
    c = pl.col
    symbol, tsym = _symbols(raw, fmt)
    is_opt = c("instrument").str.starts_with("OPT").fill_null(False)
    is_deriv = (is_opt | c("instrument").str.starts_with("FUT")).fill_null(False)
    sid = c("sid")
    prepared = (
        raw.lazy()
        .with_columns(_expiry(raw["expiry"]))
        .with_row_index("line", offset=first_line)
        .select(
            "line", "exch", "seg", "instrument", "opt", "lot", "tick", "strike", "flag", "usid", "expiry_d",
            _feed_segment_expr(raw).alias("fseg"),
            pl.when((sid > 0) & (sid < 2**32) & (sid == sid.floor())).then(sid).cast(pl.Int64).alias("sid_i"),
            symbol.alias("symbol"),
            tsym.alias("tsym"),
            (c("display") if fmt == "compact" else pl.coalesce(c("display"), c("name"))).alias("display"),
            is_opt.alias("is_opt"),
            is_deriv.alias("is_deriv"),
            (c("exch").is_null() & c("seg").is_null() & sid.is_null()).alias("blank"),
        )
    )  # fmt: skip
    reason = (
        pl.when(c("blank")).then(pl.lit(BLANK))
        .when(c("fseg").is_null()).then(pl.lit(UNSUPPORTED))
        .when(c("sid_i").is_null()).then(pl.lit("bad_security_id"))
        .when(c("instrument").is_null()).then(pl.lit("missing_instrument"))
        .when(c("tsym").is_null()).then(pl.lit("missing_symbol"))
        .when((c("exch") == "NSE") & c("tsym").str.ends_with("NSETEST")).then(pl.lit(NSE_TEST))
        .when(c("lot").is_null() | (c("lot") <= 0)).then(pl.lit("bad_lot_size"))
        .when(c("tick").is_null() & (c("seg") != "I")).then(pl.lit("bad_tick_size"))
        .when(c("is_deriv") & c("expiry_d").is_null()).then(pl.lit("bad_expiry"))
        .when(c("is_opt") & (c("strike").is_null() | (c("strike") <= 0))).then(pl.lit("bad_strike"))
        .when(c("is_opt") & ~c("opt").is_in(["CE", "PE"]).fill_null(False)).then(pl.lit("bad_option_type"))
        .otherwise(pl.lit(None, pl.String))
    )  # fmt: skip
    return prepared.select(
        "line",
        reason.alias("reason"),
        (c("fseg").cast(pl.Int64) * (1 << 32) + c("sid_i")).alias("key"),
        "fseg",
        c("sid_i").alias("sid"),
        "exch",
        "seg",
        "instrument",
        "symbol",
        "tsym",
        "display",
        c("lot").round(0).cast(pl.Int64, strict=False).alias("lot"),
        pl.when(c("seg").is_in(_PAISE_SEGMENTS)).then(c("tick") / 100.0).otherwise(c("tick"))
        .fill_null(0.0).alias("tick"),
        pl.when(c("is_deriv")).then(c("expiry_d")).alias("expiry"),
        pl.when(c("is_opt")).then(c("strike")).alias("strike"),
        pl.when(c("is_opt")).then(c("opt")).alias("opt"),
        pl.when(c("is_deriv") & c("flag").is_in(["W", "M"])).then(c("flag")).alias("flag"),
        pl.when(c("usid") > 0).then(c("usid")).cast(pl.Int64, strict=False).alias("usid"),
    ).collect()  # fmt: skip


_COMPACT_TYPES: dict[str, pl.DataType] = {
    # Low-cardinality text as categoricals (4 bytes a row instead of a 16-byte string view), ids and lots
    # as 32-bit: the registry holds ~290k rows for the life of the process.
    "exch": pl.Categorical(),
    "seg": pl.Categorical(),
    "instrument": pl.Categorical(),
    "symbol": pl.Categorical(),
    "opt": pl.Categorical(),
    "flag": pl.Categorical(),
    "sid": pl.UInt32(),
    "lot": pl.Int32(),
    "usid": pl.UInt32(),
    "line": pl.UInt32(),
}


@dataclass
class _Skips:
    counts: dict[str, int]
    first_line: dict[str, int]

    def add(self, reason: str, n: int, line: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        self.first_line[reason] = min(self.first_line.get(reason, line), line)


def _good_rows(block: pl.DataFrame, skips: _Skips) -> pl.DataFrame:
    """Count the block's skipped rows by reason, return its good rows in the compact storage types."""
    c = pl.col
    bad = block.filter(c("reason").is_not_null())
    if bad.height:
        for reason, n, line in bad.group_by("reason").agg(pl.len(), c("line").min()).iter_rows():
            skips.add(reason, n, line)
        block = block.filter(c("reason").is_null())
    return block.select(
        c(name).cast(_COMPACT_TYPES[name]) if name in _COMPACT_TYPES else c(name)
        for name in ("line", *FRAME_COLUMNS)
    )


class LoadedMaster(NamedTuple):
    frame: pl.DataFrame  # columns FRAME_COLUMNS, file order
    stats: RegistryStats
    sorted_keys: npt.NDArray[np.int64]  # frame["key"], ascending
    key_rows: npt.NDArray[np.int64]  # frame row of each sorted key


def load_frame(source: Source, *, max_bad_fraction: float) -> LoadedMaster:
    """Read and normalise a master. Returns the frame (columns :data:`FRAME_COLUMNS`, file order) and what
    happened. Raises :class:`MasterFormatError` for an unusable file."""
    skips = _Skips({}, {})
    parts: list[pl.DataFrame] = []
    line = 2
    try:
        header = _parse_header(_head_bytes(source))
        for block in _blocks(source):
            raw = _read_block(block, header)
            del block
            if raw.height:
                parts.append(_good_rows(_transform(raw, header.fmt, line), skips))
                line += raw.height
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
    if n_bad and (good.height == 0 or n_bad > max_bad_fraction * rows_read):
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
    return LoadedMaster(
        good.drop("line"),
        _skip_stats(header, rows_read, good.height, skipped, first_line),
        sorted_keys,
        order.astype(np.int64),
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
