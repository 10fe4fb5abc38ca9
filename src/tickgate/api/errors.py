"""The API's error model: every failure is ``{"error": {"code", "message", "details"}}`` with a fitting
status — service errors carry their own, validation errors become 400, auth 401/403, never a 500 for input."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tickgate.api.models import ErrorResponse
from tickgate.chains.atm import ChainError
from tickgate.instruments.model import AmbiguousSecurityIdError
from tickgate.service.errors import ServiceError, as_service_error

log = structlog.get_logger("tickgate.api")


class ApiError(Exception):
    """An error raised by the API layer itself (auth, bad query shapes)."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def unauthorized(message: str = "missing or unknown API key (send it in the X-API-Key header)") -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str = "this endpoint needs an admin API key") -> ApiError:
    return ApiError(403, "forbidden", message)


def invalid(message: str, **details: Any) -> ApiError:
    return ApiError(400, "invalid_input", message, **details)


def error_json(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": _jsonable(details or {})}},
        status_code=status,
        headers=headers,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    503: "not_ready",
}

# What every documented operation may answer besides its success (used in the OpenAPI schema).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid input"},
    401: {"model": ErrorResponse, "description": "Missing or unknown API key"},
    503: {"model": ErrorResponse, "description": "Service or feed not ready"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "Not found"}}
FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"model": ErrorResponse, "description": "Admin only"}}
NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "Not configured in this deployment"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorResponse,
        "description": "Capacity exceeded: what could not fit and what Tier B holds",
    }
}


def _allowed_methods(request: Request) -> set[str]:
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**request.scope, "method": next(iter(route.methods))})
            if match is Match.FULL:
                methods |= route.methods
    return methods


KNOWN_ERRORS = (ServiceError, ApiError, ChainError, AmbiguousSecurityIdError)
"""The exceptions that are answers, not faults: :func:`known_error` renders each."""


def known_error(exc: Exception) -> JSONResponse:
    """The response for one of :data:`KNOWN_ERRORS` (for the app's handlers and the fast paths alike)."""
    if isinstance(exc, ServiceError):
        status = exc.status if exc.status in {400, 404, 409, 503} else 500
        return error_json(status, exc.code, exc.message, exc.details)
    if isinstance(exc, ApiError):
        return error_json(exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, ChainError | AmbiguousSecurityIdError):
        return known_error(as_service_error(exc))
    raise TypeError(f"not a known error: {type(exc).__name__}")


def install(app: FastAPI) -> None:
    for kind in KNOWN_ERRORS:

        async def handler(_request: Request, exc: Exception) -> JSONResponse:
            return known_error(exc)

        app.add_exception_handler(kind, handler)

    @app.exception_handler(RequestValidationError)
    async def validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type")),
            }
            for e in exc.errors()
        ]  # the offending input is not echoed: it could be anything, including a key
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return error_json(
            400,
            "invalid_input",
            f"{where}: {first['msg']}" if where else str(first["msg"]),
            {"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names one route's methods; a path may have several routes
            headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        return error_json(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error=type(exc).__name__)
        return error_json(500, "internal_error", "internal error (logged)")
