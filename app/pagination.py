"""Keyset pagination: the cursor carries the last row's sort key, signed."""

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.config import get_settings
from app.errors import AppError

T = TypeVar("T")

MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class PageParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
        cursor: Annotated[
            str | None,
            Query(max_length=512, description="`next_cursor` of the previous page"),
        ] = None,
    ) -> None:
        self.limit = limit
        self.cursor = cursor


PageDep = Annotated[PageParams, Depends()]

_ENCODERS: dict[type, Callable[[Any], Any]] = {
    datetime: lambda v: v.isoformat(),
    uuid.UUID: str,
    int: int,
}
_DECODERS: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.fromisoformat,
    uuid.UUID: uuid.UUID,
    int: int,
}


def _sign(payload: bytes) -> str:
    key = get_settings().cursor_secret.encode()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()[:24]


def encode_cursor(scope: str, values: Sequence[Any]) -> str:
    payload = json.dumps(
        [scope, [_ENCODERS[type(v)](v) for v in values]],
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _sign(payload)


def decode_cursor(cursor: str, scope: str, types: Sequence[type]) -> list[Any]:
    bad = AppError(400, "The cursor is not valid for this list.", slug="invalid-cursor")
    try:
        body, sig = cursor.split(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if not hmac.compare_digest(sig, _sign(payload)):
            raise bad
        got_scope, values = json.loads(payload)
        if got_scope != scope or len(values) != len(types):
            raise bad
        return [_DECODERS[t](v) for t, v in zip(types, values, strict=True)]
    except AppError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise bad from exc


def keyset(
    stmt: sa.Select[Any],
    params: PageParams,
    *,
    scope: str,
    keys: Sequence[sa.ColumnElement[Any]],
) -> sa.Select[Any]:
    """Order by `keys` ascending, start after the cursor, fetch one extra row."""
    if params.cursor:
        after = decode_cursor(params.cursor, scope, [k.type.python_type for k in keys])
        stmt = stmt.where(
            sa.tuple_(*keys)
            > sa.tuple_(*[sa.literal(v, type_=k.type) for k, v in zip(keys, after, strict=True)])
        )
    return stmt.order_by(*keys).limit(params.limit + 1)


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
    return items, encode_cursor(scope, key_of(items[-1])) if more and items else None


def paginate(
    session: Session,
    stmt: sa.Select[Any],
    params: PageParams,
    *,
    scope: str,
    keys: Sequence[InstrumentedAttribute[Any]],
) -> tuple[list[Any], str | None]:
    """One page of the entities `stmt` selects, ordered by `keys` (attributes of
    the entity), and the cursor of the next page."""
    rows = session.execute(keyset(stmt, params, scope=scope, keys=keys)).scalars().all()
    return page_of(rows, params, scope=scope, key_of=lambda row: [getattr(row, k.key) for k in keys])
