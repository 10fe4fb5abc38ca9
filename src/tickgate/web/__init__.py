"""The dashboard (``tickgate.web``): a static page served by the API at ``/``.

Plain ES modules in ``static/`` (``index.html``, ``app.js``, ``style.css``): no build step, no external
resources. The page talks to the REST API under ``/api/v2`` and to the push channel ``/api/v2/stream``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["STATIC_DIR"]
