"""Idempotency-Key in HTTP: the header, and a creating route run once per key.

A repeat re-reads the resource through the route's own read path, for the
caller as it is now (app.idempotency.service keeps only its Location).
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request, Response

from app.auth.service import Principal
from app.core.uow import Tx
from app.idempotency.service import (
    Idempotency,
    IdempotencyKey,
    canonical,
    earlier,
    fingerprint,
    purge,
    remember,
    ttl,
)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Repeat a create safely: the same key and body return the first response",
    ),
]


async def idempotency(request: Request, key: IdempotencyKeyHeader = None) -> Idempotency:
    remembered = ttl(request.app.state.settings)
    if key is None:
        return Idempotency(None, remembered)
    body = await request.body()
    purpose = request.headers.get("x-purpose", "")
    fingerprinted = IdempotencyKey(key, fingerprint(request.url.path, purpose, canonical(body)))
    return Idempotency(fingerprinted, remembered)


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]


async def create_once(
    tx: Tx,
    principal: Principal,
    idem: Idempotency,
    create: Callable[[], Awaitable[Response]],
    replay: Callable[[uuid.UUID], Awaitable[Response]],
) -> Response:
    """Run `create` unless this client already did with this key; then answer
    `replay(id of what it created)`, the route's read of that resource, with
    the first answer's status and `Idempotent-Replayed: true`."""
    await purge(tx, idem.ttl)
    if idem.key is None:
        return await create()
    found = await earlier(tx, principal, idem.key, idem.ttl)
    if found is not None:
        response = await replay(found.created_id)
        response.status_code = found.status_code
        response.headers["Idempotent-Replayed"] = "true"
        return response
    response = await create()
    await remember(tx, principal, idem.key, response.status_code, response.headers["location"])
    return response
