"""The API's problem+json answers as exceptions, one class per status."""

from typing import Any

import httpx


class ApiError(Exception):
    """An error answer of the API; `problem` is its RFC 9457 body."""

    status: int = 0

    def __init__(self, status: int, problem: dict[str, Any], headers: httpx.Headers) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers
        super().__init__(f"{status} {self.title}: {self.detail}")

    @property
    def title(self) -> str:
        return str(self.problem.get("title", ""))

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    @property
    def type(self) -> str:
        return str(self.problem.get("type", ""))

    @property
    def request_id(self) -> str | None:
        """The id to quote to the operator of the instance."""
        value = self.problem.get("request_id") or self.headers.get("x-request-id")
        return str(value) if value else None


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    """No such record, or one the caller may not see: the API does not tell which."""

    status = 404


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    """The record changed since it was read: read it again, then decide."""

    status = 412

    @property
    def current_etag(self) -> str | None:
        value = self.headers.get("etag")
        return str(value) if value is not None else None


class ContentTooLarge(ApiError):
    status = 413


class ValidationError(ApiError):
    status = 422

    @property
    def errors(self) -> list[dict[str, Any]]:
        """What is wrong, and where: `[{"loc": [...], "msg": ...}]`."""
        errors = self.problem.get("errors", [])
        return list(errors) if isinstance(errors, list) else []


class PreconditionRequired(ApiError):
    status = 428


class RateLimited(ApiError):
    status = 429


class ServiceUnavailable(ApiError):
    status = 503


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PreconditionFailed,
        ContentTooLarge,
        ValidationError,
        PreconditionRequired,
        RateLimited,
        ServiceUnavailable,
    )
}


def raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {"detail": response.text[:500]}
    raise _BY_STATUS.get(response.status_code, ApiError)(response.status_code, problem, response.headers)
