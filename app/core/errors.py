"""Every error leaves as application/problem+json (RFC 9457)."""

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.observability.logs import request_id_var
from app.core.probes import note_not_found

log = logging.getLogger("caseapi")
security_log = logging.getLogger("caseapi.security")

PROBLEM_JSON = "application/problem+json"

# A table or column the code expects, missing (asyncpg's word; SQLite's is an
# OperationalError, answered as a database that cannot serve).
_UNDEFINED = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

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

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its keywords: a bundle import raises it in another process (app.bundles.imports).
        fields = {"slug": self.slug, "title": self.title, "headers": self.headers, "extra": self.extra}
        return (_rebuild_app_error, (self.status, self.detail, fields))


def _rebuild_app_error(status: int, detail: str, fields: dict[str, Any]) -> AppError:
    return AppError(status, detail, **fields)


def not_found(what: str = "resource") -> AppError:
    # The same words whether the thing is missing or hidden from the caller.
    return AppError(404, f"No such {what}.", slug="not-found")


def forbidden(detail: str) -> AppError:
    return AppError(403, detail, slug="forbidden")


def conflict(detail: str) -> AppError:
    return AppError(409, detail, slug="conflict")


def malformed_json() -> AppError:
    return AppError(400, "The request body is not valid JSON.", slug="malformed-json")


def invalid(loc: list[str | int], msg: str) -> AppError:
    """A 422 for a rule that needs the database (a reference to another row)."""
    return AppError(
        422,
        msg,
        slug="validation-error",
        extra={"errors": [{"loc": loc, "msg": msg}]},
    )


def database_reason(exc: BaseException) -> str:
    """The driver's one-line reason, without the statement and its parameters:
    those carry API-key hashes, search terms and personal data into the log."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


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
    if request_id is not None:  # set for every request by app.core.observability
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


# A 422 names this many errors and counts the rest: its size never grows with
# the input (a body of a million unknown keys is a million errors).
MAX_ERRORS = 20
_MAX_TEXT = 200


def _clip(value: Any) -> Any:
    """A string of the error (a key in `loc`, a message) cut short: a problem
    body points at the input, it does not echo it back."""
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[:_MAX_TEXT] + "..."
    return value


def shown_error(err: Mapping[str, Any]) -> dict[str, Any]:
    """One error as a 422 shows it: where and what, never the input value."""
    return {
        "loc": [_clip(part) for part in err.get("loc", ())],
        "msg": _clip(err.get("msg", "invalid")),
        "type": err.get("type"),
    }


def validation_problem(errors: list[dict[str, Any]], total: int) -> AppError:
    """The 422 of a request that does not match its schema: the first
    MAX_ERRORS errors as shown_error() makes them, and how many there were."""
    return AppError(
        422,
        "The request does not match the schema.",
        slug="validation-error",
        extra={"errors": errors[:MAX_ERRORS], "error_count": total},
    )


class HeldElsewhere(AppError):
    """A write into a case whose home is another instance (this one holds a
    mirror of it, app.federation). The route class forwards the request home
    (app.core.http.StrictJSONRoute); a route that cannot (a streamed upload)
    answers 409."""

    def __init__(self, home: str, case_id: uuid.UUID, caller: Any) -> None:
        super().__init__(409, f"This case lives on {home}: change it there.", slug="conflict")
        self.home = home
        self.case_id = case_id
        self.caller = caller
        # The request's body, once a route class that can send it home read it.
        self.body: bytes | None = None


# How a federating instance sends such a write home (app.federation.forward), set on app.state.
Forward = Callable[[Request, HeldElsewhere], Awaitable[Response]]


@dataclass(frozen=True)
class _Unavailable:
    """An exception handler for the database, or the way to it, unavailable
    for now: a 503 the client may retry in a second, and the operator's log
    line (`note`, %s the driver's one-line reason)."""

    detail: str
    slug: str
    note: str
    level: int = logging.WARNING

    async def __call__(self, _: Request, exc: Exception) -> JSONResponse:
        log.log(self.level, self.note, database_reason(exc))
        return problem_response(503, self.detail, slug=self.slug, headers={"Retry-After": "1"})


_DATABASE_DOWN = _Unavailable(
    "The database is unavailable; try again shortly.", "database-unavailable", "database unavailable: %s"
)
_POOL_EXHAUSTED = _Unavailable(
    "The service is busy; try again shortly.", "busy", "no database connection free: %s"
)
_SCHEMA_BEHIND = _Unavailable(
    "The service is not ready; try again shortly.",
    "schema-not-migrated",
    "database schema behind the code, run `caseapi migrate`: %s",
    logging.ERROR,
)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status in (401, 403):
            _log_denied(request, exc)
        elif exc.status == 404:
            note_not_found(request)
        return problem_response(
            exc.status,
            exc.detail,
            slug=exc.slug,
            title=exc.title,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(HeldElsewhere)
    async def _held_elsewhere(request: Request, exc: HeldElsewhere) -> Response:
        # Here the request's transaction has been rolled back: nothing of it is stored.
        forward: Forward | None = getattr(request.app.state, "forward_write", None)
        if forward is None or exc.body is None:
            return await _app_error(request, exc)
        return await forward(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return await _app_error(request, malformed_json())
        return await _app_error(
            request, validation_problem([shown_error(e) for e in errors[:MAX_ERRORS]], len(errors))
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

    # The unit of work (app.core.uow) raises SQLAlchemy's exceptions, around asyncpg's errors too.
    @app.exception_handler(sa_exc.DataError)
    async def _data_error(_: Request, exc: sa_exc.DataError) -> JSONResponse:
        # A value the schema let through but the database cannot store or
        # compare: the client's input, so never a 500. Schemas should catch
        # it first; the log says which one did not.
        log.warning("database refused a value: %s", database_reason(exc))
        return problem_response(
            422,
            "A value is out of the range the service can store.",
            slug="validation-error",
            extra={"errors": [{"loc": ["body"], "msg": "value out of range"}]},
        )

    # InterfaceError: the driver's word for a connection that went away.
    app.add_exception_handler(sa_exc.InterfaceError, _DATABASE_DOWN)
    app.add_exception_handler(sa_exc.OperationalError, _DATABASE_DOWN)
    app.add_exception_handler(sa_exc.TimeoutError, _POOL_EXHAUSTED)

    # A table or column the code expects is missing: the schema is behind the
    # code (`caseapi migrate` has not run); /health/ready says so too.
    @app.exception_handler(sa_exc.ProgrammingError)
    async def _schema_behind(request: Request, exc: sa_exc.ProgrammingError) -> JSONResponse:
        if not isinstance(exc.orig, _UNDEFINED):
            raise exc  # not the schema's fault: a 500, answered by RequestObserver
        return await _SCHEMA_BEHIND(request, exc)
