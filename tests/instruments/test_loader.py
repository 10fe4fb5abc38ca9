"""Loading: tolerated variants, bad files with clear errors, bad rows skipped and counted, block reading."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.instruments import Expiry, InstrumentRegistry, MasterFormatError
from tickgate.instruments import loader as loader_module
from tickgate.instruments.generator import COMPACT_HEADER, DETAILED_HEADER

from .conftest import read_rows

# Hand-written compact rows in the real variants: 75.0 vs 75, 25800.00000, -0.01, timestamps,
# 0001-01-01, spreadsheet dates, a quoted display name with a comma, a currency tick of 0.25 paise.
VARIANTS = [
    "NSE,I,13,INDEX,0,NIFTY,1.0,Nifty 50,0001-01-01,,XX,0.0500,,INDEX,X,NIFTY",
    "NSE,D,44430,OPTIDX,0,NIFTY-Oct2026-25800-CE,75.0,NIFTY 27 OCT 25800 CALL,2026-10-27 14:30:00,"
    "25800.00000,CE,5.0000,W,OP,,",
    "NSE,D,44431,OPTIDX,0,NIFTY-Oct2026-25800-PE,75,NIFTY 27 OCT 25800 PUT,10/27/2026,25800,PE,5,W,OP,,",
    "NSE,D,44432,FUTIDX,0,NIFTY-Oct2026-FUT,75.0,NIFTY OCT FUT,2026-10-27,-0.01000,XX,10.0000,M,FUT,,",
    'NSE,E,2885,EQUITY,0,RELIANCE,1,"Reliance Industries, Ltd",,,,10,NA,ES,EQ,RELIANCE INDUSTRIES LTD',
    "NSE,E,14747,EQUITY,0,011NSETEST,1,011NSETEST,,,,5,NA,Other,EQ,011NSETEST",
    "NSE,D,50001,FUTSTK,0,BAJAJ-AUTO-Oct2026-FUT,75.0,BAJAJ-AUTO OCT FUT,2026-10-27 14:30:00,-0.01,XX,10.0,"
    "M,FUT,,",
    "NSE,C,1012,OPTCUR,0,USDINR-26Oct2026-88.25-CE,1.0,USDINR 26 OCT 88.25 CALL,2026-10-26 17:00:00,"
    "88.25000,CE,0.2500,M,OPTCUR,,",
    "MCX,M,426595,FUTCOM,0,CRUDEOIL-19Oct2026-FUT,100.0,CRUDEOIL OCT FUT,2026-10-19 23:30:00,-0.01000,XX,"
    "100.0000,M,FUTCOM,,",
]


def _compact(rows: list[str], sep: str = ",") -> bytes:
    lines = [COMPACT_HEADER, *rows]
    if sep != ",":
        lines = [line.replace(",", sep) for line in lines]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("sep", [",", "\t"])
def test_variants_parse(sep: str) -> None:
    rows = VARIANTS if sep == "," else [r for r in VARIANTS if '"' not in r]
    reg = InstrumentRegistry.load(_compact(rows, sep), today=dt.date(2026, 10, 1))
    assert reg.stats.separator == sep
    assert reg.stats.skipped == {"nse_test_symbol": 1}
    ce = reg.get(InstrumentKey(ExchangeSegment.NSE_FNO, 44430))
    pe = reg.get(InstrumentKey(ExchangeSegment.NSE_FNO, 44431))
    fut = reg.get(InstrumentKey(ExchangeSegment.NSE_FNO, 44432))
    assert ce is not None
    assert pe is not None
    assert fut is not None
    assert (ce.lot_size, ce.strike, ce.option_type, ce.expiry) == (75, 25800.0, "CE", dt.date(2026, 10, 27))
    assert (pe.lot_size, pe.strike, pe.expiry, pe.tick_size) == (75, 25800.0, dt.date(2026, 10, 27), 0.05)
    assert ce.symbol == ce.underlying_symbol == "NIFTY"
    assert ce.expiry_flag == "W"
    assert fut.strike is None
    assert fut.option_type is None
    assert fut.tick_size == pytest.approx(0.10)
    nifty = reg.get(InstrumentKey(ExchangeSegment.IDX_I, 13))
    assert nifty is not None
    assert nifty.expiry is None
    assert nifty.tick_size == 0.05
    assert nifty.underlying_symbol is None
    bajaj = reg.get(InstrumentKey(ExchangeSegment.NSE_FNO, 50001))
    assert bajaj is not None
    assert bajaj.symbol == "BAJAJ-AUTO"
    usd = reg.get(InstrumentKey(ExchangeSegment.NSE_CURRENCY, 1012))
    assert usd is not None
    assert usd.tick_size == pytest.approx(0.0025)
    assert usd.strike == 88.25
    assert usd.symbol == "USDINR"
    crude = reg.get(InstrumentKey(ExchangeSegment.MCX_COMM, 426595))
    assert crude is not None
    assert crude.tick_size == pytest.approx(1.0)
    assert crude.symbol == "CRUDEOIL"
    if sep == ",":
        rel = reg.get(InstrumentKey(ExchangeSegment.NSE_EQ, 2885))
        assert rel is not None
        assert rel.display_name == "Reliance Industries, Ltd"


def test_path_bytes_and_str_sources_agree(tmp_path: Path) -> None:
    data = _compact(VARIANTS)
    path = tmp_path / "m.csv"
    path.write_bytes(data)
    frames = [InstrumentRegistry.load(src).frame for src in (data, path, str(path))]
    assert frames[0].equals(frames[1])
    assert frames[1].equals(frames[2])


def test_utf8_bom_crlf_and_blank_lines() -> None:
    text = "\ufeff" + COMPACT_HEADER + "\r\n" + "\r\n".join(VARIANTS[:4]) + "\r\n\r\n"
    reg = InstrumentRegistry.load(text.encode(), today=dt.date(2026, 10, 1))
    assert len(reg) == 4
    assert reg.stats.rows_read == 4
    assert reg.stats.skipped == {}


def test_missing_required_column_is_named(samples_dir: Path, tmp_path: Path) -> None:
    lines = (samples_dir / "detailed-nse-equity-index-2026.csv").read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("LOT_SIZE")
    cut = [",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines[:50]]
    path = tmp_path / "cut.csv"
    path.write_text("\n".join(cut) + "\n")
    with pytest.raises(MasterFormatError, match="missing required column LOT_SIZE"):
        InstrumentRegistry.load(path)


def test_empty_and_header_only_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(MasterFormatError, match="empty"):
        InstrumentRegistry.load(b"")
    with pytest.raises(MasterFormatError, match="no data rows"):
        InstrumentRegistry.load((DETAILED_HEADER + "\n").encode())
    with pytest.raises(MasterFormatError, match="not a Dhan scrip master"):
        InstrumentRegistry.load(b"<html><body>502 Bad Gateway</body></html>\n")
    missing = tmp_path / "nope.csv"
    with pytest.raises(MasterFormatError, match="cannot read"):
        InstrumentRegistry.load(missing)


def test_garbage_types_reject_the_file_naming_column_and_line(small_masters: dict) -> None:
    path, _ = small_masters["compact"]
    lines = path.read_text().splitlines()
    garbled = [lines[0]]
    for line in lines[1:200]:
        cells = line.split(",")
        cells[2] = "abc"  # SEM_SMST_SECURITY_ID
        garbled.append(",".join(cells))
    with pytest.raises(MasterFormatError) as err:
        InstrumentRegistry.load(("\n".join(garbled) + "\n").encode())
    message = str(err.value)
    assert "SEM_SMST_SECURITY_ID" in message
    assert "line 2" in message
    assert "'abc'" in message


def test_garbage_lot_sizes_name_the_detailed_column(samples_dir: Path) -> None:
    rows = (samples_dir / "detailed-banknifty-options-2025.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    lot = header.index("LOT_SIZE")
    out = [rows[0]]
    for line in rows[1:]:
        cells = line.split("\t")
        cells[lot] = "lots"
        out.append("\t".join(cells))
    with pytest.raises(MasterFormatError, match=r"column LOT_SIZE .* line 2 \(value 'lots'\)"):
        InstrumentRegistry.load(("\n".join(out) + "\n").encode())


def test_a_few_bad_rows_are_skipped_and_counted(samples_dir: Path) -> None:
    src = samples_dir / "detailed-banknifty-options-2025.tsv"
    lines = src.read_text().splitlines()
    header = lines[0].split("\t")
    col = {
        name: header.index(name) for name in ("SECURITY_ID", "SM_EXPIRY_DATE", "OPTION_TYPE", "STRIKE_PRICE")
    }
    damage = {5: ("SECURITY_ID", "x12"), 9: ("SM_EXPIRY_DATE", "someday"), 14: ("OPTION_TYPE", "ZZ"),
              20: ("STRIKE_PRICE", "")}  # fmt: skip
    options = [i for i, line in enumerate(lines) if i and "\tOPTIDX\t" in line]
    targets = {options[k]: v for k, v in damage.items()}
    for i, (name, value) in targets.items():
        cells = lines[i].split("\t")
        cells[col[name]] = value
        lines[i] = "\t".join(cells)
    lines.append(lines[options[30]])  # a duplicate (segment, id): the first one wins
    reg = InstrumentRegistry.load(("\n".join(lines) + "\n").encode(), max_bad_fraction=0.01)
    expected_lines = {
        "bad_security_id": options[5] + 1,
        "bad_expiry": options[9] + 1,
        "bad_option_type": options[14] + 1,
        "bad_strike": options[20] + 1,
        "duplicate_key": len(lines),
    }
    assert reg.stats.skipped == dict.fromkeys(expected_lines, 1)
    assert reg.stats.first_skipped_line == expected_lines
    assert len(reg) == len(lines) - 1 - 5
    # the same damage in a tiny file exceeds the tolerated share and rejects it
    with pytest.raises(MasterFormatError, match="rows unreadable"):
        InstrumentRegistry.load(("\n".join(lines[:40]) + "\n").encode(), max_bad_fraction=0.01)


def test_unsupported_segments_are_skipped_not_fatal() -> None:
    rows = [
        *VARIANTS[:4],
        "NSE,X,99,EQUITY,0,ODD,1,Odd,,,,5,NA,ES,EQ,ODD",
        "NCDEX,M,7,FUTCOM,0,GUAR,1,G,,,,5,M,,,",
    ]
    reg = InstrumentRegistry.load(_compact(rows))
    assert reg.stats.skipped == {"unsupported_segment": 2}
    assert len(reg) == 4


@pytest.fixture(scope="module")
def block_source(small_masters: dict) -> bytes:
    path, _ = small_masters["detailed"]
    data: bytes = path.read_bytes()
    return data[:60_000]  # a few hundred whole lines and one partial one


@settings(max_examples=25, deadline=None)
@given(chunk=st.integers(min_value=1_500, max_value=70_000))
def test_block_reading_is_invisible(block_source: bytes, chunk: int) -> None:
    """Any block size gives the same frame and the same line numbers as one block."""
    reference = _load_with_chunk(block_source, 1 << 30)
    result = _load_with_chunk(block_source, chunk)
    assert result[0].equals(reference[0])
    assert result[1] == reference[1]


def _load_with_chunk(data: bytes, chunk: int) -> tuple[pl.DataFrame, object]:
    saved = loader_module._CHUNK_BYTES
    loader_module._CHUNK_BYTES = chunk
    try:
        frame, stats, _, _ = loader_module.load_frame(data, max_bad_fraction=1.0)
    finally:
        loader_module._CHUNK_BYTES = saved
    return frame, stats


def test_block_reading_from_a_path_matches_bytes(
    small_masters: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = small_masters["compact"]
    whole = loader_module.load_frame(path.read_bytes(), max_bad_fraction=0.01).frame
    monkeypatch.setattr(loader_module, "_CHUNK_BYTES", 100_003)
    blocks, stats, _, _ = loader_module.load_frame(path, max_bad_fraction=0.01)
    assert blocks.equals(whole)
    assert stats.rows_read == len(read_rows(path))
    head = path.parent / "head.csv"  # blocks shorter than a line
    head.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:300]))
    monkeypatch.setattr(loader_module, "_CHUNK_BYTES", 50)
    tiny = loader_module.load_frame(head, max_bad_fraction=0.01)
    monkeypatch.setattr(loader_module, "_CHUNK_BYTES", 1 << 22)
    assert tiny.frame.equals(loader_module.load_frame(head, max_bad_fraction=0.01).frame)
    assert tiny.stats.rows_read == 299


def test_compact_symbols_without_a_date_tail_fall_back_to_the_symbol_name() -> None:
    rows = [
        *VARIANTS[:2],  # NIFTY-Oct2026-25800-CE: the tail is cut off
        "NSE,D,50002,FUTSTK,0,ODDFUT,75.0,ODD FUT,2026-10-27,-0.01,XX,10.0,M,FUT,,ODDSTOCK",  # no tail
        "NSE,D,50003,FUTSTK,0,BARE,75.0,BARE FUT,2026-10-27,-0.01,XX,10.0,M,FUT,,",  # no tail, no name
        "NSE,E,22,EQUITY,0,MCDOWELL-N,1,United Spirits,,,,5,NA,ES,EQ,UNITED SPIRITS",  # not a derivative
    ]
    reg = InstrumentRegistry.load(_compact(rows), today=dt.date(2026, 10, 1))
    symbols = {i.key.security_id: i.symbol for i in reg.get_many(_keys(reg))}
    assert symbols == {13: "NIFTY", 44430: "NIFTY", 50002: "ODDSTOCK", 50003: "BARE", 22: "MCDOWELL-N"}


def test_non_ascii_trading_symbols_are_cut_by_character() -> None:
    """Blocks with non-ASCII text take the regex path (byte and character offsets differ)."""
    rows = [
        "NSE,D,44440,OPTIDX,0,NÏFTY-Oct2026-25800-CE,75.0,NÏFTY 27 OCT 25800 CALL,2026-10-27,25800,CE,5,W,"
        "OP,,",
        "NSE,D,44441,FUTSTK,0,BAJAJ-AUTO-Oct2026-FUT,75.0,BAJAJ-AUTO OCT FUT,2026-10-27,-0.01,XX,10.0,M,"
        "FUT,,",
        "NSE,D,44442,FUTSTK,0,ÉCRIN,75.0,ÉCRIN FUT,2026-10-27,-0.01,XX,10.0,M,FUT,,ÉCRIN LTD",
    ]
    reg = InstrumentRegistry.load(_compact(rows), today=dt.date(2026, 10, 1))
    symbols = {i.key.security_id: i.symbol for i in reg.get_many(_keys(reg))}
    assert symbols == {44440: "NÏFTY", 44441: "BAJAJ-AUTO", 44442: "ÉCRIN LTD"}
    assert reg.option_expiries("NÏFTY") == [Expiry(dt.date(2026, 10, 27), "weekly")]


def _keys(reg: InstrumentRegistry) -> list[InstrumentKey]:
    return [InstrumentKey(ExchangeSegment(s), i) for s, i in reg.frame.select("fseg", "sid").iter_rows()]


def test_loading_needs_neither_settings_nor_pydantic_and_the_cli_no_polars(small_masters: dict) -> None:
    """A process that only loads a clean master does not import the settings (pydantic, ~20 MB); every
    ``tickgate`` command imports the instruments sub-app, which must not import polars (~0.3 s)."""
    path, _ = small_masters["compact"]
    script = (
        "import sys\n"
        "import tickgate.instruments.cli\n"
        "assert 'polars' not in sys.modules, 'the instruments CLI imports polars'\n"
        "from tickgate.instruments import InstrumentRegistry\n"
        f"reg = InstrumentRegistry.load({str(path)!r})\n"
        "reg.warm()\n"
        "assert reg.search('nifty')\n"
        "assert 'pydantic' not in sys.modules, 'loading a clean master imported pydantic'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
