"""Keyset pagination: the cursor carries the last row's sort key, signed."""

import base64
import functools
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, cast

import sqlalchemy as sa
from fastapi import Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy.sql import visitors

from app.core.errors import AppError, not_found
from app.core.types import EARLIEST, LATEST
from app.core.uow import Statements

T = TypeVar("T")

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None
    # The app's cursor signing key (app.core.secrets.cursor_key of its settings).
    key: bytes


# A coroutine, not the class itself: FastAPI would build a class in a worker thread.
async def page_params(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="`next_cursor` of the previous page"),
    ] = None,
) -> PageParams:
    return PageParams(limit, cursor, request.app.state.cursor_key)


PageDep = Annotated[PageParams, Depends(page_params)]


def _encode(value: Any) -> Any:
    # isinstance: asyncpg's UUIDs (app.core.uow) are a subclass of uuid.UUID.
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if type(value) is int:
        return value
    raise TypeError(f"no cursor encoding for {type(value).__name__}")


# A cursor is signed, yet its values are checked as strictly as any input: a
# value the database cannot bind or compare must be a 400, never a 500 (the
# key may leak; a cursor signed with it must still not reach the database
# with what no page of this list could have produced).
def _instant(value: Any) -> datetime:
    if type(value) is not str or len(value) > 40:
        raise ValueError("not an instant")
    instant = datetime.fromisoformat(value)
    if instant.tzinfo is None or not EARLIEST <= instant <= LATEST:
        raise ValueError("not an instant in range")
    return instant.astimezone(UTC)


def _uuid(value: Any) -> uuid.UUID:
    if type(value) is not str or len(value) != 36:
        raise ValueError("not a uuid")
    return uuid.UUID(value)


def _int(value: Any) -> int:
    # Keys are sequence numbers: from 1, and within every backend's BIGINT.
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError("not a sequence number")
    return value


_DECODERS: dict[type, Callable[[Any], Any]] = {datetime: _instant, uuid.UUID: _uuid, int: _int}


def _sign(payload: bytes, key: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()[:24]


def encode_cursor(scope: str, values: Sequence[Any], key: bytes) -> str:
    """The cursor after `values` in the list `scope`, signed with `key`."""
    payload = json.dumps(
        [scope, [_encode(v) for v in values]],
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _sign(payload, key)


def decode_cursor(cursor: str, scope: str, types: Sequence[type], key: bytes) -> list[Any]:
    bad = AppError(400, "The cursor is not valid for this list.", slug="invalid-cursor")
    try:
        body, sig = cursor.split(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if not hmac.compare_digest(sig, _sign(payload, key)):
            raise bad
        got_scope, values = json.loads(payload)
        if got_scope != scope or len(values) != len(types):
            raise bad
        return [_DECODERS[t](v) for t, v in zip(types, values, strict=True)]
    except AppError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise bad from exc


def keyset(stmt: sa.Select[Any], *, keys: Sequence[sa.ColumnElement[Any]], after: bool) -> sa.Select[Any]:
    """Order by `keys` ascending, fetch one extra row and, with `after`, start
    after a cursor's key. The limit and the key are bind parameters, filled
    by keyset_params(): a statement is built, and compiled, once per shape."""
    if after:
        bounds = [sa.bindparam(f"after_{i}", type_=k.type) for i, k in enumerate(keys)]
        stmt = stmt.where(sa.tuple_(*keys) > sa.tuple_(*bounds))
    return stmt.order_by(*keys).limit(sa.bindparam("limit", type_=sa.Integer))


def keyset_params(params: PageParams, *, scope: str, keys: Sequence[sa.ColumnElement[Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {"limit": params.limit + 1}
    if params.cursor:
        after = decode_cursor(params.cursor, scope, [k.type.python_type for k in keys], params.key)
        values.update((f"after_{i}", v) for i, v in enumerate(after))
    return values


def page_of(
    rows: Sequence[T],
    params: PageParams,
    *,
    scope: str,
    key_of: Callable[[T], Sequence[Any]],
) -> tuple[list[T], str | None]:
    """Trim the extra row and build the cursor for the next page."""
    items = list(rows[: params.limit])
    more = len(rows) > params.limit
    return items, encode_cursor(scope, key_of(items[-1]), params.key) if more and items else None


async def read_page(
    reads: Statements,
    stmt: sa.Select[Any],
    values: dict[str, Any],
    params: PageParams,
    *,
    scope: str,
    keys: Sequence[sa.ColumnElement[Any]],
    in_case: bool = False,
) -> tuple[list[Any], str | None]:
    """One page of `stmt`'s rows, and the cursor of the next: `stmt` is already
    keyset() for `params` (built once per shape); rows hold the columns it selects. `in_case`: `stmt`
    is made by access.in_case_seen_in_full(), and no row at all is a 404 (the
    case's), as the caller does not see the case in full."""
    values = values | keyset_params(params, scope=scope, keys=keys)
    if params.limit == DEFAULT_LIMIT:
        stmt = _default_page(stmt)
        del values["limit"]
    rows = await reads.all(stmt, values)
    if in_case:
        if not rows:
            raise not_found("case")
        rows = [row for row in rows if row.id is not None]  # an empty page is one row of nulls
    return page_of(rows, params, scope=scope, key_of=_key_of(keys))


@functools.lru_cache(maxsize=1000)
def _default_page(stmt: sa.Select[Any]) -> sa.Select[Any]:
    """`stmt` (made by keyset()) for a page of the default size, its limit
    written into the SQL. A limit that is a bind parameter keeps PostgreSQL
    planning the statement again at every execution (a generic plan cannot
    tell a page from the whole table); most requests ask for the default
    size, whose statement is planned once per connection."""
    rows = sa.literal_column(str(DEFAULT_LIMIT + 1), sa.Integer)

    def literal(element: Any, **_: Any) -> Any:
        return rows if isinstance(element, sa.BindParameter) and element.key == "limit" else None

    return cast(sa.Select[Any], visitors.replacement_traverse(stmt, {}, literal))


def _key_of(keys: Sequence[sa.ColumnElement[Any]]) -> Callable[[Any], list[Any]]:
    names = [str(k.key) for k in keys]
    return lambda row: [getattr(row, name) for name in names]


@functools.cache
def _rows_under(
    column: sa.Column[Any], keys: tuple[sa.ColumnElement[Any], ...], after: bool
) -> sa.Select[Any]:
    parent = sa.bindparam("parent_id", type_=column.type)
    return keyset(sa.select(column.table).where(column == parent), keys=keys, after=after)


async def rows_under(
    db: Statements,
    column: sa.Column[Any],
    parent_id: Any,
    params: PageParams,
    *,
    scope: str,
    keys: Sequence[sa.ColumnElement[Any]],
) -> tuple[list[Any], str | None]:
    """One page of the rows of `column`'s table whose `column` is `parent_id`
    (an item's custody events, a request's messages), ordered by `keys`; the
    caller has checked that it may read the parent."""
    stmt = _rows_under(column, tuple(keys), bool(params.cursor))
    return await read_page(db, stmt, {"parent_id": parent_id}, params, scope=scope, keys=keys)
