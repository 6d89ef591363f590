"""Every error leaves as application/problem+json (RFC 9457)."""

import json
import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.observability.logs import request_id_var

log = logging.getLogger("caseapi")
security_log = logging.getLogger("caseapi.security")

PROBLEM_JSON = "application/problem+json"

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
SAFE_HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class AppError(Exception):
    """An error a client can act on. `slug` names the problem type."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.slug = slug or self.title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra or {}


def not_found(what: str = "resource") -> AppError:
    # The same words whether the thing is missing or hidden from the caller.
    return AppError(404, f"No such {what}.", slug="not-found")


def forbidden(detail: str) -> AppError:
    return AppError(403, detail, slug="forbidden")


def conflict(detail: str) -> AppError:
    return AppError(409, detail, slug="conflict")


def invalid(loc: list[str | int], msg: str) -> AppError:
    """A 422 for a rule that needs the database (a reference to another row)."""
    return AppError(
        422,
        msg,
        slug="validation-error",
        extra={"errors": [{"loc": loc, "msg": msg}]},
    )


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    title = title or _TITLES.get(status, "Error")
    body = {
        "type": f"urn:caseapi:problem:{slug or title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    request_id = request_id_var.get()
    if request_id is not None:  # set for every request by app.observability
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _allowed_methods(request: Request) -> str:
    """Every method some route offers for this path (Starlette names only the first route's)."""
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    )


def _log_denied(request: Request, exc: AppError) -> None:
    """One structured line per refused attempt, for the operator's SIEM."""
    principal = getattr(request.state, "principal", None)
    security_log.warning(
        "access_denied",
        extra={
            "status": exc.status,
            "reason": exc.detail,
            "method": request.method,
            "path": request.url.path,
            "client_id": str(principal.client_id) if principal else None,
            "agency_id": str(principal.agency_id) if principal else None,
            "remote": request.client.host if request.client else None,
        },
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err.get("loc", [])), "msg": err.get("msg", "invalid"), "type": err.get("type")}
        for err in exc.errors()
    ]


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "On a 422: what is wrong, and where",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": ["string", "null"]},
                },
            },
        },
    },
}

_PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON or a garbled cursor",
    401: "Missing, unknown or revoked API key",
    403: "The key lacks the scope, or the agency the role, this action needs",
    404: "No such resource, or one the caller may not see",
    409: "The change conflicts with the current state",
    412: "If-Match does not name the current version",
    413: "The request body is too large",
    422: "The request does not match the schema or a rule",
    428: "If-Match is required",
    503: "The database is unavailable",
}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def problem_responses(method: str, *, secured: bool, has_body: bool) -> dict[int, dict[str, Any]]:
    """The problem+json responses an operation can give, whatever its router.

    Every route can meet a bad request, a missing resource, invalid input
    and an unavailable database; the rest depends on the method, on
    authentication and on whether the operation takes a body.
    """
    codes = {400, 404, 422, 503}
    if secured:
        codes |= {401, 403}
    if method.upper() not in SAFE_HTTP_METHODS:
        codes.add(409)
    if method.upper() in ("PATCH", "PUT", "DELETE"):
        codes |= {412, 428}
    if has_body:
        codes.add(413)
    responses: dict[int, dict[str, Any]] = {}
    for code in sorted(codes):
        response: dict[str, Any] = {
            "description": _PROBLEM_DESCRIPTIONS[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if code == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}
            }
        responses[code] = response
    return responses


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problem+json responses to every operation of an OpenAPI document.

    FastAPI documents its own 422 as application/json with a `detail`
    list; the error handlers below answer every error as problem+json, so
    that entry is replaced, and FastAPI's validation schemas go with it.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method.upper() not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            documented = problem_responses(
                method,
                secured=bool(operation.get("security")),
                has_body="requestBody" in operation,
            )
            for code, response in documented.items():
                existing = responses.get(str(code), {})
                # A route's own description of the status (e.g. a 503 of the
                # readiness probe) is kept; only the body shape is set.
                if "description" in existing:
                    response = {**response, "description": existing["description"]}
                responses[str(code)] = response
    if _FASTAPI_VALIDATION_SCHEMAS[0] not in json.dumps(schema.get("paths", {})):
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            components.pop(name, None)
    return schema


def install_problem_docs(app: FastAPI) -> None:
    """Make /openapi.json document the problem+json responses of every route.

    Wraps `app.openapi`, which FastAPI builds lazily on the first request,
    so routers included after this call are covered too.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    install_problem_docs(app)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status in (401, 403):
            _log_denied(request, exc)
        return problem_response(
            exc.status,
            exc.detail,
            slug=exc.slug,
            title=exc.title,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(400, "The request body is not valid JSON.", slug="malformed-json")
        return problem_response(
            422,
            "The request does not match the schema.",
            slug="validation-error",
            extra={"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 404:
            detail = "No such resource."
        return problem_response(exc.status_code, detail, headers=headers)

    @app.exception_handler(sa_exc.IntegrityError)
    async def _integrity(_: Request, exc: sa_exc.IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc.orig)
        return problem_response(409, "The change conflicts with existing data.", slug="conflict")

    # The hot reads (app.reads) meet psycopg's own errors, the rest SQLAlchemy's wrappers.
    @app.exception_handler(sa_exc.DataError)
    @app.exception_handler(psycopg.DataError)
    async def _data_error(_: Request, exc: sa_exc.DataError | psycopg.DataError) -> JSONResponse:
        # A value the schema let through but the database cannot store or
        # compare: the client's input, so never a 500. Schemas should catch
        # it first; the log says which one did not.
        log.warning("database refused a value: %s", exc)
        return problem_response(
            422,
            "A value is out of the range the service can store.",
            slug="validation-error",
            extra={"errors": [{"loc": ["body"], "msg": "value out of range"}]},
        )

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_: Request, exc: sa_exc.OperationalError | psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return problem_response(
            503,
            "The database is unavailable; try again shortly.",
            slug="database-unavailable",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(sa_exc.TimeoutError)
    async def _pool_exhausted(_: Request, exc: sa_exc.TimeoutError) -> JSONResponse:
        log.warning("no database connection free: %s", exc)
        return problem_response(
            503,
            "The service is busy; try again shortly.",
            slug="busy",
            headers={"Retry-After": "1"},
        )
