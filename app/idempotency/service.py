"""Idempotency-Key on creating POSTs: a repeat gets the first response again."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.config import get_settings
from app.db import utcnow
from app.errors import AppError
from app.idempotency.models import IdempotencyRecord


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


async def idempotency_key(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Repeat a create safely: the same key and body return the first response",
        ),
    ] = None,
) -> IdempotencyKey | None:
    if key is None:
        return None
    body = await request.body()
    # The stated purpose is part of the request: a replay must not hand a
    # response holding personal data to a request that states another, or none.
    purpose = request.headers.get("x-purpose", "").encode()
    digest = hashlib.sha256(
        request.url.path.encode() + b"\n" + purpose + b"\n" + _canonical(body)
    ).hexdigest()
    return IdempotencyKey(key=key, fingerprint=digest)


IdempotencyDep = Annotated[IdempotencyKey | None, Depends(idempotency_key)]


def create_once(
    session: Session,
    principal: Principal,
    idem: IdempotencyKey | None,
    create: Callable[[], Response],
) -> Response:
    """Run `create` unless this client already did with this key.

    The record is written in the creating transaction, so the resource and
    its record land together. Two identical requests in flight at once: the
    second fails on the record's primary key and answers 409.
    """
    if idem is None:
        return create()
    record = session.get(IdempotencyRecord, (principal.client_id, idem.key))
    if record is not None:
        ttl = timedelta(hours=get_settings().idempotency_ttl_hours)
        if record.created_at > utcnow() - ttl:
            if record.fingerprint != idem.fingerprint:
                raise AppError(
                    422,
                    "This Idempotency-Key was used with another request body or X-Purpose.",
                    slug="idempotency-key-reused",
                )
            headers = {"Idempotent-Replayed": "true"}
            if record.location:
                headers["Location"] = record.location
            if record.etag:
                headers["ETag"] = record.etag
            return Response(
                record.body, status_code=record.status_code, headers=headers, media_type="application/json"
            )
        session.delete(record)
        session.flush()
    response = create()
    session.add(
        IdempotencyRecord(
            client_id=principal.client_id,
            key=idem.key,
            fingerprint=idem.fingerprint,
            status_code=response.status_code,
            body=bytes(response.body),
            location=response.headers.get("location"),
            etag=response.headers.get("etag"),
        )
    )
    session.flush()
    return response
