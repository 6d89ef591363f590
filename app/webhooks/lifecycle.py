"""A subscription's changes as the journal records them, and its turning off.

A subscription is turned off (disabled, as after a failure run) when its
agency no longer has a live API key: the server must not go on sending an
agency's events on behalf of keys that were all revoked. It stays off when a
key is issued again; subscribing again turns delivery back on, from then on.

Apart from service.py so that revoking a key (app.auth.service) can call it:
service.py imports the auth service.
"""

import functools
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.agencies.models import Agency
from app.auth.models import ApiClient
from app.core.journal import Actor, record
from app.core.uow import Row, Statements, Tx
from app.webhooks.models import WebhookSubscription

RESOURCE = "subscription"
# Why a subscription was disabled, as its audit entry says.
FAILURES = "failures"
NO_LIVE_KEY = "no_live_api_key"

# The tables themselves: app.access imports app.auth.service, which imports this module.
SUBSCRIPTIONS: sa.Table = WebhookSubscription.__table__  # type: ignore[attr-defined]
CLIENTS: sa.Table = ApiClient.__table__  # type: ignore[attr-defined]
AGENCIES: sa.Table = Agency.__table__  # type: ignore[attr-defined]


def record_change(
    tx: Tx,
    actor: Actor,
    sub: Row,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Audited, and an event that only the subscribing agency's feed shows."""
    record(
        tx,
        actor,
        action=f"{RESOURCE}.{action}",
        resource_type=RESOURCE,
        resource_id=sub.id,
        case_id=None,
        request_parties=(sub.agency_id, sub.agency_id),
        detail=detail,
    )


_DISABLE = (
    sa.update(SUBSCRIPTIONS)
    .where(SUBSCRIPTIONS.c.id == sa.bindparam("sub_id"))
    .values(
        disabled_at=sa.bindparam("now", type_=SUBSCRIPTIONS.c.disabled_at.type),
        version=SUBSCRIPTIONS.c.version + 1,
    )
)


async def disable(tx: Tx, actor: Actor, sub: Row, *, now: datetime, reason: str) -> None:
    """Turn off a subscription (a row with its id and agency, locked by the caller)."""
    await tx.execute(_DISABLE, {"sub_id": sub.id, "now": now})
    record_change(tx, actor, sub, "disabled", {"reason": reason})


@functools.cache
def _with_live_keys(count: int) -> sa.Select[Any]:
    """Which of `count` agencies (bind parameters agency_0, ...) have a live key.
    One typed parameter each (a UUID is bound as the column binds it)."""
    agency_id = CLIENTS.c.agency_id
    wanted = [sa.bindparam(f"agency_{i}", type_=agency_id.type) for i in range(count)]
    return sa.select(agency_id).where(agency_id.in_(wanted), CLIENTS.c.revoked_at.is_(None)).distinct()


async def agencies_with_live_keys(db: Statements, agency_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    wanted = sorted(set(agency_ids))
    if not wanted:
        return set()
    values = {f"agency_{i}": agency_id for i, agency_id in enumerate(wanted)}
    return {row.agency_id for row in await db.all(_with_live_keys(len(wanted)), values)}


_LOCK_AGENCY = sa.select(AGENCIES.c.id).where(AGENCIES.c.id == sa.bindparam("agency_id")).with_for_update()
_ACTIVE_SUBSCRIPTIONS = (
    sa.select(SUBSCRIPTIONS)
    .where(SUBSCRIPTIONS.c.agency_id == sa.bindparam("agency_id"), SUBSCRIPTIONS.c.disabled_at.is_(None))
    .order_by(SUBSCRIPTIONS.c.id)
    .with_for_update()
)


async def disable_if_keyless(tx: Tx, actor: Actor, agency_id: uuid.UUID, *, now: datetime) -> int:
    """Disable the agency's active subscriptions when it has no live key left
    (call after revoking one, in the same transaction); how many were."""
    # The agency's row, locked: of two revocations of its last two keys at
    # once, the second one to get here sees the first one's.
    await tx.first(_LOCK_AGENCY, {"agency_id": agency_id})
    if await agencies_with_live_keys(tx, [agency_id]):
        return 0
    subs = await tx.all(_ACTIVE_SUBSCRIPTIONS, {"agency_id": agency_id})
    for sub in subs:
        await disable(tx, actor, sub, now=now, reason=NO_LIVE_KEY)
    return len(subs)
