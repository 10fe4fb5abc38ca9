"""Dhan's scrip master: load it (either format), query it, fetch it, or generate a realistic one.

``InstrumentRegistry.load(path_or_bytes)`` is the entry point; ``generate_master`` writes the full-size
synthetic master used as the embedded default and as test/benchmark data; ``fetch_master`` downloads and
caches the real one per trading day. Everything is imported on first use, the value types too (they import
the wire protocol, hence numpy): registering the ``tickgate instruments`` command line imports this package,
and ``tickgate --help`` should not pay for numpy, polars or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickgate._lazy import lazy_attributes

if TYPE_CHECKING:
    from tickgate.instruments.fetch import (
        FetchResult,
        MasterFetchError,
        cached_master_path,
        fetch_master,
        latest_master_path,
    )
    from tickgate.instruments.generator import GeneratorStats, generate_master
    from tickgate.instruments.model import (
        AmbiguousSecurityIdError,
        Expiry,
        ExpiryKind,
        Instrument,
        MasterFormatError,
        RegistryStats,
        StrikeRow,
    )
    from tickgate.instruments.registry import InstrumentRegistry

_LAZY = {
    "AmbiguousSecurityIdError": "model",
    "Expiry": "model",
    "ExpiryKind": "model",
    "Instrument": "model",
    "MasterFormatError": "model",
    "RegistryStats": "model",
    "StrikeRow": "model",
    "InstrumentRegistry": "registry",
    "FetchResult": "fetch",
    "MasterFetchError": "fetch",
    "cached_master_path": "fetch",
    "fetch_master": "fetch",
    "latest_master_path": "fetch",
    "GeneratorStats": "generator",
    "generate_master": "generator",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "AmbiguousSecurityIdError",
    "Expiry",
    "ExpiryKind",
    "FetchResult",
    "GeneratorStats",
    "Instrument",
    "InstrumentRegistry",
    "MasterFetchError",
    "MasterFormatError",
    "RegistryStats",
    "StrikeRow",
    "cached_master_path",
    "fetch_master",
    "generate_master",
    "latest_master_path",
]
