"""Download Dhan's scrip master once per trading day, validate it, and never lose the last good copy.

The file is refreshed daily and is the root of everything tickgate subscribes, so a failed or truncated
download (or an HTML error page served with 200) must not replace a working master: the download goes to
a ``.part`` file, is loaded with the real loader as validation, and only then renamed into place. On
failure the newest earlier copy is returned, flagged stale.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tickgate.instruments.model import MasterFormatError, ist_today
from tickgate.instruments.registry import InstrumentRegistry

MASTERS_DIR = "masters"
_NAME_RE = re.compile(r"^scrip-master-(\d{4}-\d{2}-\d{2})\.csv$")
_CHUNK = 1 << 16


class MasterFetchError(RuntimeError):
    """The download failed and there is no earlier good copy to fall back to."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Which master to use and how it was obtained."""

    path: Path
    downloaded: bool  # False: today's copy was already cached, or the download failed (see ``stale``)
    stale: bool  # True: the download failed and ``path`` is an earlier day's copy
    error: str | None = None
    rows: int | None = None  # instruments loaded when validated by this call


def cached_master_path(data_dir: Path, today: dt.date) -> Path:
    """Where the master of trading day ``today`` is cached: ``<data_dir>/masters/scrip-master-DATE.csv``."""
    return Path(data_dir) / MASTERS_DIR / f"scrip-master-{today.isoformat()}.csv"


def latest_master_path(data_dir: Path) -> Path | None:
    """The newest cached master (any day), or ``None``. Only complete, validated copies carry the name."""
    folder = Path(data_dir) / MASTERS_DIR
    if not folder.is_dir():
        return None
    names = sorted(p.name for p in folder.iterdir() if _NAME_RE.match(p.name))
    return folder / names[-1] if names else None


def _download(url: str, dest: Path, *, timeout: float, progress: bool, client: httpx.Client | None) -> None:
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        with http.stream("GET", url) as resp:
            resp.raise_for_status()
            length = resp.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            columns = (
                TextColumn("[bold]scrip master"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, disable=not progress, transient=True) as bar, open(dest, "wb") as fh:
                task = bar.add_task("download", total=total)
                for chunk in resp.iter_bytes(_CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(task, advance=len(chunk))
            if total is not None and received != total:
                raise OSError(f"truncated download: {received} of {total} bytes")
    finally:
        if own:
            http.close()


def _prune(data_dir: Path, keep: int) -> None:
    folder = Path(data_dir) / MASTERS_DIR
    names = sorted(p.name for p in folder.iterdir() if _NAME_RE.match(p.name))
    for name in names[: max(len(names) - keep, 0)]:
        (folder / name).unlink(missing_ok=True)


def fetch_master(
    url: str | None = None,
    data_dir: Path | None = None,
    *,
    today: dt.date | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float | None = None,
    keep: int | None = None,
    client: httpx.Client | None = None,
) -> FetchResult:
    """Make sure today's master is cached and return its path (downloading only if needed, or ``force``).

    Defaults come from the settings (``master.url``, ``data_dir``, ``master.fetch_timeout_s``,
    ``master.keep_copies``). A failed download or a file that does not load keeps the previous copy and
    returns it with ``stale=True``; with no previous copy it raises :class:`MasterFetchError`.
    """
    from tickgate.config import get_settings

    settings = get_settings()
    url = url or settings.master.url
    data_dir = Path(data_dir) if data_dir is not None else settings.data_dir
    day = today or ist_today()
    target = cached_master_path(data_dir, day)
    if target.exists() and not force:
        return FetchResult(target, downloaded=False, stale=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        _download(
            url, part, timeout=timeout or settings.master.fetch_timeout_s, progress=progress, client=client
        )
        registry = InstrumentRegistry.load(part, today=day)
        os.replace(part, target)
    except (httpx.HTTPError, OSError, MasterFormatError) as exc:
        part.unlink(missing_ok=True)
        previous = latest_master_path(data_dir)
        reason = f"{type(exc).__name__}: {exc}"
        if previous is None:
            raise MasterFetchError(
                f"scrip master download from {url} failed ({reason}); no cached copy"
            ) from exc
        return FetchResult(previous, downloaded=False, stale=True, error=reason)
    _prune(data_dir, keep or settings.master.keep_copies)
    return FetchResult(target, downloaded=True, stale=False, rows=len(registry))
