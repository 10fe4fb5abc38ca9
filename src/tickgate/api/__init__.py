"""The HTTP face of tickgate: REST API, live push, auth, metrics (see :func:`create_app`).

``create_app`` is imported lazily so ``tickgate.api.cli`` (and so ``tickgate --help``) does not pull in
FastAPI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tickgate.api.app import PREFIX, create_app

__all__ = ["PREFIX", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tickgate.api import app

        return getattr(app, name)
    raise AttributeError(name)
