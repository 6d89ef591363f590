"""Idempotency-Key on creating POSTs: a repeat gets the first response again.

Only a reference to the created resource is kept (its Location). A repeat
re-reads the resource through the route's own read path, for the caller as
it is now: visibility, redaction, X-Purpose and the disclosure audit apply
as to any read, and a resource deleted or hidden since answers as a read
would (404). Records older than the time to live are purged, a bounded
batch at every creating POST.
"""

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Header, Request, Response
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.config import get_settings
from app.db import insert_into, new_row, utcnow
from app.errors import AppError
from app.idempotency.models import IdempotencyRecord

if TYPE_CHECKING:
    from app.core.uow import Tx

# Expired records removed per creating POST. Each such POST adds at most one
# record, so expired ones cannot pile up, and no request pays for a backlog.
PURGE_BATCH = 100

_EXPIRED = (
    sa.select(IdempotencyRecord.client_id, IdempotencyRecord.key)  # type: ignore[call-overload]
    .where(IdempotencyRecord.created_at < sa.bindparam("cutoff"))
    .order_by(IdempotencyRecord.created_at)
    .limit(PURGE_BATCH)
    # Two writers purging at once each take other rows instead of waiting for each other.
    .with_for_update(skip_locked=True)
)
_PURGE = sa.delete(IdempotencyRecord).where(
    sa.tuple_(IdempotencyRecord.client_id, IdempotencyRecord.key).in_(_EXPIRED)  # type: ignore[arg-type]
)


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    fingerprint: str


def _canonical(body: bytes) -> bytes:
    # The same JSON document with other spacing or key order is the same body.
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        return body


def fingerprint(path: str, purpose: str, body: bytes) -> str:
    """What a key is bound to: the route, the stated purpose and the body.

    The stated purpose is part of the request: a repeat with another
    purpose, or none, is another request and not a replay.
    """
    digest = hashlib.sha256(path.encode() + b"\n" + purpose.encode() + b"\n")
    digest.update(body)
    return digest.hexdigest()


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Repeat a create safely: the same key and body return the first response",
    ),
]


async def idempotency_key(request: Request, key: IdempotencyKeyHeader = None) -> IdempotencyKey | None:
    if key is None:
        return None
    body = await request.body()
    purpose = request.headers.get("x-purpose", "")
    return IdempotencyKey(key=key, fingerprint=fingerprint(request.url.path, purpose, _canonical(body)))


IdempotencyDep = Annotated[IdempotencyKey | None, Depends(idempotency_key)]


def _ttl() -> timedelta:
    return timedelta(hours=get_settings().idempotency_ttl_hours)


def _cutoff() -> dict[str, Any]:
    return {"cutoff": utcnow() - _ttl()}


def purge_expired(session: Session) -> int:
    """Delete up to PURGE_BATCH expired records; how many went.

    A Core statement on the session's connection: the ORM's bulk delete
    costs more in Python than the indexed probe costs the database, and
    every creating POST runs this.
    """
    return session.connection().execute(_PURGE, _cutoff()).rowcount


_TABLE: sa.Table = IdempotencyRecord.__table__  # type: ignore[attr-defined]
_THIS = sa.and_(_TABLE.c.client_id == sa.bindparam("client_id"), _TABLE.c.key == sa.bindparam("key"))
_RECORD = sa.select(_TABLE).where(_THIS)
_FORGET = sa.delete(_TABLE).where(_THIS)


def _created_id(location: str) -> uuid.UUID:
    """Every created resource's Location ends with its id."""
    return uuid.UUID(location.rsplit("/", 1)[-1])


def _replays(record: Any, idem: IdempotencyKey) -> bool:
    """Whether `record` (a row of _RECORD) answers this request again; False
    when it expired and is to be forgotten. 422 for the key used with another request."""
    if record.created_at <= utcnow() - _ttl():
        return False
    if record.fingerprint != idem.fingerprint:
        raise AppError(
            422,
            "This Idempotency-Key was used with another request body or X-Purpose.",
            slug="idempotency-key-reused",
        )
    return True


def _replayed(response: Response, record: Any) -> Response:
    response.status_code = record.status_code
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _record_row(principal: Principal, idem: IdempotencyKey, response: Response) -> dict[str, Any]:
    return new_row(
        IdempotencyRecord,
        client_id=principal.client_id,
        key=idem.key,
        fingerprint=idem.fingerprint,
        status_code=response.status_code,
        location=response.headers["location"],
    )


def create_once_sync(
    session: Session,
    principal: Principal,
    idem: IdempotencyKey | None,
    create: Callable[[], Response],
    replay: Callable[[uuid.UUID], Response],
) -> Response:
    """Run `create` unless this client already did with this key; then answer
    `replay(id of what it created)`, the route's read of that resource.

    The record is written in the creating transaction, so the resource and
    its record land together. Two identical requests in flight at once: the
    second fails on the record's primary key and answers 409.
    """
    purge_expired(session)
    if idem is None:
        return create()
    this = {"client_id": principal.client_id, "key": idem.key}
    conn = session.connection()
    record = conn.execute(_RECORD, this).first()
    if record is not None:
        if _replays(record, idem):
            return _replayed(replay(_created_id(record.location)), record)
        conn.execute(_FORGET, this)
    response = create()
    conn.execute(insert_into(_TABLE), _record_row(principal, idem, response))
    return response


async def create_once(
    tx: "Tx",
    principal: Principal,
    idem: IdempotencyKey | None,
    create: Callable[[], Awaitable[Response]],
    replay: Callable[[uuid.UUID], Awaitable[Response]],
) -> Response:
    """create_once() in a transaction of the hot write (app.core.uow): the same statements and rules."""
    await tx.execute(_PURGE, _cutoff())
    if idem is None:
        return await create()
    this = {"client_id": principal.client_id, "key": idem.key}
    record = await tx.first(_RECORD, this)
    if record is not None:
        if _replays(record, idem):
            return _replayed(await replay(_created_id(record.location)), record)
        await tx.execute(_FORGET, this)
    response = await create()
    await tx.execute(insert_into(_TABLE), _record_row(principal, idem, response))
    return response
