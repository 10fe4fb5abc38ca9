"""Errors the service raises for its callers: each carries an HTTP status and a machine code, so the API
turns them into ``{"error": {"code", "message", ...}}`` without guessing.

:func:`as_service_error` is the one table for the domain's own refusals (the ATM engine's, the registry's):
the same refusal gives the same answer whether it surfaced in a watchlist add, a chain view or a direct
call."""

from __future__ import annotations

from typing import Any

from tickgate.chains.atm import ChainError, ExpiryExpiredError, ExpiryNotListedError
from tickgate.instruments.model import AmbiguousSecurityIdError


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ServiceError):  # noqa: N818 - named after the HTTP answer it becomes
    status = 400
    code = "invalid_input"


class NotFound(ServiceError):  # noqa: N818
    status = 404
    code = "not_found"


class CapacityExceeded(ServiceError):  # noqa: N818
    """The planner could not fit a group even after evicting every evictable Tier A chain."""

    status = 409
    code = "capacity_exceeded"


class NotConfigured(ServiceError):  # noqa: N818
    """A feature this deployment does not have (e.g. a token manager when credentials are injected)."""

    status = 409
    code = "not_configured"


class NotReady(ServiceError):  # noqa: N818
    status = 503
    code = "not_ready"


class Ambiguous(InvalidInput):
    code = "ambiguous_security_id"


DomainError = ChainError | AmbiguousSecurityIdError


def as_service_error(exc: DomainError) -> ServiceError:
    """The one mapping of domain refusals to answers: an expired expiry is the caller's mistake (400), an
    ambiguous bare security id too (400, name the segment); everything else the engine refuses — unknown
    symbol, no options, an expiry not listed (with the listed ones), no underlying — is not found (404)."""
    if isinstance(exc, ExpiryExpiredError):
        return InvalidInput(str(exc))
    if isinstance(exc, AmbiguousSecurityIdError):
        return Ambiguous(str(exc))
    if isinstance(exc, ExpiryNotListedError):
        return NotFound(str(exc), listed=[d.isoformat() for d in exc.listed])
    return NotFound(str(exc))
