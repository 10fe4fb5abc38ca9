"""The account's state for an operator: one view, shown by ``/health``, ``/ws/status`` and the dashboard.

Why one function: the three surfaces must agree, and each field is a question an operator on call asks
first. When does the token expire and did its last renewal work? Is Dhan making us wait (429)? How many
sockets do we hold, and why fewer than configured? Is the feed stopped, and what gets it going again?
How old is the instrument master? No field carries a token, a PIN or a TOTP secret, nor a fingerprint.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tickgate.service.app import TickgateService

FATAL_FIX = (
    "set a new token: POST /api/v2/admin/token (admin key), or set DHAN_PIN and DHAN_TOTP_SECRET so that"
    " tickgate generates one itself; the sockets reconnect at once, no restart needed"
)
_MASTER_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")


def master_day(path: Path | None) -> dt.date | None:
    """The day a cached master was downloaded for (its file name says), None for a configured file."""
    if path is None:
        return None
    found = _MASTER_DAY.search(path.name)
    return dt.date.fromisoformat(found.group(1)) if found else None


def accounts_view(svc: TickgateService) -> list[dict[str, Any]]:
    """Every pooled account's :func:`account_view`, in the planner's order."""
    return [account_view(svc, i) for i in range(len(svc.links))]


def account_view(svc: TickgateService, index: int = 0) -> dict[str, Any]:
    """One account's state now (see the module docstring). Parts not started yet are None."""
    now = svc.clock.now()
    link = svc.links[index]
    view: dict[str, Any] = {
        "name": link.name,
        "client_id": link.account.client_id or None,
        "token": None,
        "blocked_until": None,
        "sockets": None,
        "fatal": None,
        "instruments": None,
    }
    if link.tokens is not None:
        status = link.tokens.status()
        view["token"] = {
            "source": status["source"],
            "expires_at": status["expires_at"],
            "last_renewal": status["obtained_at"],
            "renew_at": status["renew_at"],
            "headless_generation": status["headless_generation"],
            "failures": status["failures"],
            "last_error": status["last_error"],
        }
    feed = svc.feed_or_none
    if feed is not None:
        pool = feed.pools[index]
        view["instruments"] = sum(svc.planner.loads()[c] for c in svc.planner.account_connections(index))
        blocked = pool.blocked_for
        if blocked > 0:
            view["blocked_until"] = (now + dt.timedelta(seconds=svc.clock.speed * blocked)).isoformat()
        budget = pool.budget.status(svc.clock.monotonic())
        limits = link.limits
        view["sockets"] = {
            "account": limits.sockets_per_account,
            "reserved": limits.reserved_sockets,
            "tickgate": budget["sockets"],
            "configured": limits.feed_sockets,
            "given_up": budget["given_up"],
            "why": budget["reason"],
            "next_probe_in_s": budget["next_probe_in_s"],
        }
        if pool.fatal is not None:
            view["fatal"] = {"reason": str(pool.fatal), "how_to_leave": FATAL_FIX}
    day = master_day(svc.master_path)
    view["master"] = {
        "file": None if svc.master_path is None else svc.master_path.name,
        "day": None if day is None else day.isoformat(),
        "age_days": None if day is None else (now.date() - day).days,
    }
    return view
