"""Idempotency-Key on creating POSTs: a repeat gets the first response again.

Only a reference to the created resource is kept (its Location). A repeat
re-reads the resource through the route's own read path, for the caller as
it is now: visibility, redaction, X-Purpose and the disclosure audit apply
as to any read, and a resource deleted or hidden since answers as a read
would (404). Records older than the time to live (the app's
`idempotency_ttl_hours`, carried by Idempotency) are purged, a bounded batch
at every creating POST.
"""

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from app.auth.service import Principal
from app.core.config import Settings
from app.core.db import insert_into, new_row, table_of, utcnow
from app.core.errors import AppError
from app.core.uow import Tx
from app.idempotency.models import IdempotencyRecord

# Expired records removed per creating POST. Each such POST adds at most one
# record, so expired ones cannot pile up, and no request pays for a backlog.
PURGE_BATCH = 100

_TABLE = table_of(IdempotencyRecord)
_EXPIRED = (
    sa.select(_TABLE.c.client_id, _TABLE.c.key)
    .where(_TABLE.c.created_at < sa.bindparam("cutoff", type_=_TABLE.c.created_at.type))
    .order_by(_TABLE.c.created_at)
    .limit(PURGE_BATCH)
    # Two writers purging at once each take other rows instead of waiting for each other.
    .with_for_update(skip_locked=True)
)
_PURGE = sa.delete(_TABLE).where(sa.tuple_(_TABLE.c.client_id, _TABLE.c.key).in_(_EXPIRED))


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Idempotency:
    """What a creating request hands create_once(): its Idempotency-Key (None:
    it sent none), and how long keys are remembered by the app it reached."""

    key: IdempotencyKey | None
    ttl: timedelta


def ttl(settings: Settings) -> timedelta:
    return timedelta(hours=settings.idempotency_ttl_hours)


def canonical(body: bytes) -> bytes:
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


def _cutoff(ttl: timedelta) -> dict[str, Any]:
    return {"cutoff": utcnow() - ttl}


_THIS = sa.and_(_TABLE.c.client_id == sa.bindparam("client_id"), _TABLE.c.key == sa.bindparam("key"))
_RECORD = sa.select(_TABLE).where(_THIS)
_FORGET = sa.delete(_TABLE).where(_THIS)


def _created_id(location: str) -> uuid.UUID:
    """Every created resource's Location ends with its id."""
    return uuid.UUID(location.rsplit("/", 1)[-1])


def _replays(record: Any, idem: IdempotencyKey, ttl: timedelta) -> bool:
    """Whether `record` (a row of _RECORD) answers this request again; False
    when it is older than `ttl` and to be forgotten. 422 for the key used with another request."""
    if record.created_at <= utcnow() - ttl:
        return False
    if record.fingerprint != idem.fingerprint:
        raise AppError(
            422,
            "This Idempotency-Key was used with another request body or X-Purpose.",
            slug="idempotency-key-reused",
        )
    return True


async def purge(tx: Tx, ttl: timedelta) -> None:
    """Delete up to PURGE_BATCH records older than `ttl`: every creating POST does."""
    await tx.execute(_PURGE, _cutoff(ttl))


@dataclass(frozen=True)
class Earlier:
    """What an earlier request with the same key created."""

    status_code: int
    created_id: uuid.UUID


async def earlier(tx: Tx, principal: Principal, idem: IdempotencyKey, ttl: timedelta) -> Earlier | None:
    """What this client created with this key, if it answers this request
    again; an expired record is forgotten (None); 422 for the key used with
    another request."""
    this = {"client_id": principal.client_id, "key": idem.key}
    record = await tx.first(_RECORD, this)
    if record is None:
        return None
    if _replays(record, idem, ttl):
        return Earlier(record.status_code, _created_id(record.location))
    await tx.execute(_FORGET, this)
    return None


async def remember(
    tx: Tx, principal: Principal, idem: IdempotencyKey, status_code: int, location: str
) -> None:
    """Record what this key created, in the creating transaction: the
    resource and its record land together. Two identical requests in flight
    at once: the second fails on the record's primary key (409)."""
    row = new_row(
        IdempotencyRecord,
        client_id=principal.client_id,
        key=idem.key,
        fingerprint=idem.fingerprint,
        status_code=status_code,
        location=location,
    )
    await tx.execute(insert_into(_TABLE), row)
