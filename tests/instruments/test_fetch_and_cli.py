"""Fetching against a real local HTTP server, and the ``tickgate instruments`` commands."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tickgate.cli import app
from tickgate.instruments import (
    InstrumentRegistry,
    MasterFetchError,
    cached_master_path,
    fetch_master,
    latest_master_path,
)
from tickgate.instruments.generator import GeneratorStats
from tickgate.instruments.model import ist_today

from .conftest import TODAY

Masters = dict[str, tuple[Path, GeneratorStats]]


class _Server:
    """Serves ``routes[path] = (status, body, declared_length | None)`` and counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, int | None]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                status, body, length = server.routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def master_bytes(small_masters: Masters) -> bytes:
    return small_masters["detailed"][0].read_bytes()


def test_download_validates_and_caches_per_day(server: _Server, master_bytes: bytes, tmp_path: Path) -> None:
    server.routes["/m.csv"] = (200, master_bytes, None)
    result = fetch_master(server.url("/m.csv"), tmp_path, today=TODAY, progress=False)
    assert result.downloaded
    assert not result.stale
    assert result.error is None
    assert result.path == cached_master_path(tmp_path, TODAY)
    assert result.path.name == f"scrip-master-{TODAY.isoformat()}.csv"
    assert result.path.read_bytes() == master_bytes
    assert result.rows == len(InstrumentRegistry.load(result.path))
    again = fetch_master(server.url("/m.csv"), tmp_path, today=TODAY, progress=True)
    assert not again.downloaded
    assert again.path == result.path
    assert server.hits["/m.csv"] == 1  # cached for the day
    forced = fetch_master(server.url("/m.csv"), tmp_path, today=TODAY, force=True, progress=False)
    assert forced.downloaded
    assert server.hits["/m.csv"] == 2
    assert latest_master_path(tmp_path) == result.path


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ((500, b"oops", None), "HTTPStatusError"),
        ((200, b"<html>maintenance</html>\n", None), "MasterFormatError"),
        ((200, b"EXCH_ID,SEGMENT,SECURITY_ID\nNSE,E,1\n", 10_000), "RemoteProtocolError"),  # truncated
    ],
)
def test_a_failed_download_keeps_the_last_good_copy(
    server: _Server, master_bytes: bytes, tmp_path: Path, route: tuple[int, bytes, int | None], reason: str
) -> None:
    server.routes["/m.csv"] = (200, master_bytes, None)
    good = fetch_master(server.url("/m.csv"), tmp_path, today=TODAY, progress=False)
    server.routes["/m.csv"] = route
    tomorrow = TODAY + dt.timedelta(days=1)
    result = fetch_master(server.url("/m.csv"), tmp_path, today=tomorrow, progress=False)
    assert result.stale
    assert not result.downloaded
    assert result.path == good.path
    assert result.path.read_bytes() == master_bytes
    assert result.error is not None
    assert reason in result.error
    assert not cached_master_path(tmp_path, tomorrow).exists()
    assert sorted(p.name for p in (tmp_path / "masters").iterdir()) == [good.path.name]  # no .part left


def test_no_copy_at_all_is_an_error(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(MasterFetchError, match="no cached copy"):
        fetch_master(server.url("/missing.csv"), tmp_path, today=TODAY, progress=False)


def test_old_copies_are_pruned(server: _Server, master_bytes: bytes, tmp_path: Path) -> None:
    server.routes["/m.csv"] = (200, master_bytes, None)
    days = [TODAY + dt.timedelta(days=i) for i in range(3)]
    for day in days:
        fetch_master(server.url("/m.csv"), tmp_path, today=day, progress=False, keep=2)
    names = sorted(p.name for p in (tmp_path / "masters").iterdir())
    assert names == [cached_master_path(tmp_path, d).name for d in days[1:]]


# ---------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_generate_and_info(tmp_path: Path) -> None:
    out = tmp_path / "gen.csv"
    args = ["instruments", "generate", "--out", str(out), "--format", "compact", "--seed", "3",
            "--today", "2026-11-25", "--rows", "1000", "--fno-stocks", "2"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "compact" in res.output
    assert out.exists()
    reg = InstrumentRegistry.load(out)
    assert reg.stats.format == "compact"
    res = runner.invoke(app, ["instruments", "info", str(out)])
    assert res.exit_code == 0, res.output
    assert "IDX_I" in res.output
    assert "NSE_FNO" in res.output
    assert "OPTIDX" in res.output
    assert f"{len(reg):,}" in res.output
    assert "nse_test_symbol" in res.output
    bad = runner.invoke(app, ["instruments", "generate", "--out", str(out), "--today", "25/11/2026"])
    assert bad.exit_code == 2
    assert "YYYY-MM-DD" in bad.output


def test_cli_info_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("hello,world\n1,2\n")
    res = runner.invoke(app, ["instruments", "info", str(path)])
    assert res.exit_code == 1
    assert "not a Dhan scrip master" in res.output


def test_cli_fetch(server: _Server, master_bytes: bytes, tmp_path: Path) -> None:
    server.routes["/m.csv"] = (200, master_bytes, None)
    ok = runner.invoke(
        app, ["instruments", "fetch", "--url", server.url("/m.csv"), "--data-dir", str(tmp_path)]
    )
    assert ok.exit_code == 0, ok.output
    assert "downloaded and validated" in ok.output
    assert cached_master_path(tmp_path, ist_today()).exists()
    cached = runner.invoke(
        app, ["instruments", "fetch", "--url", server.url("/m.csv"), "--data-dir", str(tmp_path)]
    )
    assert cached.exit_code == 0
    assert "already cached" in cached.output
    # another data dir holding only an old copy: the failed download falls back to it
    old_dir = tmp_path / "old"
    old = cached_master_path(old_dir, dt.date(2000, 1, 3))
    old.parent.mkdir(parents=True)
    old.write_bytes(master_bytes)
    stale = runner.invoke(
        app, ["instruments", "fetch", "--url", server.url("/gone"), "--data-dir", str(old_dir)]
    )
    assert stale.exit_code == 2
    assert "earlier copy" in stale.output
    assert old.name in stale.output
    none = runner.invoke(
        app, ["instruments", "fetch", "--url", server.url("/gone"), "--data-dir", str(tmp_path / "x")]
    )
    assert none.exit_code == 1
    assert "no cached copy" in none.output
