"""What the synchronous and the asynchronous client share: how each call is
built, when it is retried, and how its answer is read. Neither does I/O here."""

import email.utils
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from caseapi_client.errors import raise_for_problem
from caseapi_client.models import Resource

T = TypeVar("T")
R = TypeVar("R", bound=Resource)
B = TypeVar("B", bound=BaseModel)

API = "/api/v1"
RETRIED_STATUSES = frozenset({429, 503})
# Errors raised before the request could reach the server: resending is always safe.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Ref = Resource | uuid.UUID | str


def ref_id(ref: Ref) -> str:
    """The id of a record given as the record itself or as its id."""
    if isinstance(ref, Resource):
        return ref.ids()[-1]
    return str(ref)


def ref_ids(ref: Ref) -> tuple[str, ...]:
    """The ids that name a record in its path (a message: its request's, then its own)."""
    if isinstance(ref, Resource):
        return ref.ids()
    return (str(ref),)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One logical request, sent again as it is on each retry (so a create
    keeps its Idempotency-Key)."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # A raw body (a file's bytes) made anew for each attempt: a stream read by
    # a failed attempt cannot be sent again as it is.
    content: Callable[[], Any] | None = None
    # Whether the server may already have acted when the answer was lost:
    # a read, or a create that carries its Idempotency-Key, may be sent again.
    replayable: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """Retry 429 and 503 after Retry-After, and lost connections where that is safe."""

    max_attempts: int = 4
    max_wait: float = 30.0  # seconds; a longer Retry-After is an error at once
    backoff: float = 0.5  # first wait when the server names none; doubles each time

    def after_response(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again, or None to take this answer."""
        if response.status_code not in RETRIED_STATUSES or attempt >= self.max_attempts:
            return None
        wait = retry_after(response.headers.get("retry-after"))
        if wait is None:
            wait = self.backoff * 2.0 ** (attempt - 1)
        return wait if wait <= self.max_wait else None

    def after_error(self, call: Call[Any], error: httpx.TransportError, attempt: int) -> float | None:
        if attempt >= self.max_attempts or not (call.replayable or isinstance(error, NOT_SENT)):
            return None
        return min(self.backoff * 2.0 ** (attempt - 1), self.max_wait)


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (RFC 9110 10.2.3: seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def _plain(value: Any) -> Any:
    """As JSON: records become their ids; ids, dates and instants strings."""
    if isinstance(value, Resource):
        return ref_id(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, date):  # and datetime, a subclass
        return value.isoformat()
    return value


def _query(values: Mapping[str, Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(_plain(value))

    return {k: text(v) for k, v in values.items() if v is not None}


def record(model: type[R]) -> Callable[[httpx.Response], R]:
    def decode(response: httpx.Response) -> R:
        raise_for_problem(response)
        found = model.model_validate(response.json())
        found._etag = response.headers.get("etag")
        return found

    return decode


def document(model: type[B]) -> Callable[[httpx.Response], B]:
    def decode(response: httpx.Response) -> B:
        raise_for_problem(response)
        return model.model_validate(response.json())

    return decode


def raw(response: httpx.Response) -> dict[str, Any]:
    raise_for_problem(response)
    body: dict[str, Any] = response.json()
    return body


def content(response: httpx.Response) -> bytes:
    raise_for_problem(response)
    return response.content


def nothing(response: httpx.Response) -> None:
    raise_for_problem(response)


def page(model: type[R]) -> Callable[[httpx.Response], Page[R]]:
    def decode(response: httpx.Response) -> Page[R]:
        raise_for_problem(response)
        body = response.json()
        return Page([model.model_validate(item) for item in body["items"]], body["next_cursor"])

    return decode


@dataclass(frozen=True)
class Spec(Generic[R]):
    """Where a kind of record lives. `{}` in the paths stand for ids, in order:
    the parent's in `collection`, the record's identity in `item`."""

    model: type[R]
    collection: str
    item: str | None = None  # None: the API has no route for one record
    # Query parameters that only start a list: following a cursor drops them.
    starts_only: frozenset[str] = frozenset()

    def list_call(self, parent: Ref | None, filters: Mapping[str, Any], cursor: str | None) -> Call[Page[R]]:
        params = dict(filters)
        if cursor is not None:
            params = {k: v for k, v in params.items() if k not in self.starts_only} | {"cursor": cursor}
        path = self.collection_path(parent)
        return Call("GET", path, page(self.model), params=_query(params), replayable=True)

    def get_call(self, ids: tuple[Ref, ...]) -> Call[R]:
        return Call("GET", self.path(*map(ref_id, ids)), record(self.model), replayable=True)

    def path(self, *ids: str) -> str:
        """The path of one record, from the ids that name it."""
        if self.item is None:
            raise TypeError(f"The API has no route for one {self.model.__name__}.")
        return API + self.item.format(*ids)

    def create_call(self, parent: Ref | None, fields: Mapping[str, Any]) -> Call[R]:
        return creating(self.collection_path(parent), record(self.model), json=_plain(fields))

    def update_call(self, current: R, changes: Mapping[str, Any]) -> Call[R]:
        return Call(
            "PATCH",
            self.path(*current.ids()),
            record(self.model),
            json=_plain(changes),
            headers=_if_match(current),
        )

    def delete_call(self, current: R) -> Call[None]:
        return Call("DELETE", self.path(*current.ids()), nothing, headers=_if_match(current))

    def collection_path(self, parent: Ref | None) -> str:
        return API + (self.collection.format(*ref_ids(parent)) if parent is not None else self.collection)


def creating(path: str, decode: Callable[[httpx.Response], T], **body: Any) -> Call[T]:
    """A POST that creates. One key per logical create, kept across its retries:
    the server answers a repeat with the first answer, so nothing is created twice."""
    headers = {"Idempotency-Key": str(uuid.uuid4()), **body.pop("headers", {})}
    return Call("POST", path, decode, headers=headers, replayable=True, **body)


def _if_match(current: Resource) -> dict[str, str]:
    if current.etag is None:
        raise ValueError(f"This {type(current).__name__} has no ETag: get() it before changing it.")
    return {"If-Match": current.etag}


Outcome = httpx.Response | httpx.TransportError


def attempts(call: Call[T], policy: RetryPolicy) -> Generator[float, Outcome, T]:
    """The retry loop without its I/O: yields how long to wait before each
    attempt (0 before the first), is sent each attempt's outcome, and returns
    the decoded answer or raises (the API's error, or the transport's)."""
    wait = 0.0
    attempt = 0
    while True:
        attempt += 1
        outcome = yield wait
        if isinstance(outcome, httpx.TransportError):
            retry = policy.after_error(call, outcome, attempt)
            if retry is None:
                raise outcome
        else:
            retry = policy.after_response(outcome, attempt)
            if retry is None:
                return call.decode(outcome)
        wait = retry
