"""Errors the service raises for its callers: each carries an HTTP status and a machine code, so the API
turns them into ``{"error": {"code", "message", ...}}`` without guessing."""

from __future__ import annotations

from typing import Any


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


class NotReady(ServiceError):  # noqa: N818
    status = 503
    code = "not_ready"
