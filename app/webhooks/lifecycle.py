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
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.auth.models import ApiClient
from app.core.uow import Row, Statements, Tx, one_of, one_of_params
from app.journal import Actor, record
from app.webhooks.models import WebhookSubscription

RESOURCE = "subscription"
# Why a subscription was disabled, as its audit entry says.
FAILURES = "failures"
NO_LIVE_KEY = "no_live_api_key"


# The tables themselves (app.access.table_of would import this module's importer, app.auth.service).
SUBSCRIPTIONS: sa.Table = WebhookSubscription.__table__  # type: ignore[attr-defined]
KEYS: sa.Table = ApiClient.__table__  # type: ignore[attr-defined]


async def record_change(
    tx: Tx, actor: Actor, sub: Row, action: str, detail: dict[str, Any] | None = None
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
    """Turn off `sub` (a row the caller has locked)."""
    await tx.execute(_DISABLE, {"sub_id": sub.id, "now": now})
    await record_change(tx, actor, sub, "disabled", {"reason": reason})


@functools.cache
def _live_keys(count: int) -> sa.Select[Any]:
    return (
        sa.select(KEYS.c.agency_id)
        .where(one_of(KEYS.c.agency_id, "agency", count), KEYS.c.revoked_at.is_(None))
        .distinct()
    )


async def agencies_with_live_keys(db: Statements, agency_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    agencies = list(set(agency_ids))
    if not agencies:
        return set()
    rows = await db.all(_live_keys(len(agencies)), one_of_params("agency", agencies))
    return {row.agency_id for row in rows}


def record_change_sync(
    session: Session,
    actor: Actor,
    sub: WebhookSubscription,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Audited, and an event that only the subscribing agency's feed shows."""
    record(
        session,
        actor,
        action=f"{RESOURCE}.{action}",
        resource_type=RESOURCE,
        resource_id=sub.id,
        case_id=None,
        request_parties=(sub.agency_id, sub.agency_id),
        detail=detail,
    )


def disable_sync(
    session: Session, actor: Actor, sub: WebhookSubscription, *, now: datetime, reason: str
) -> None:
    sub.disabled_at = now
    sub.version += 1
    record_change_sync(session, actor, sub, "disabled", {"reason": reason})


def agencies_with_live_keys_sync(session: Session, agency_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    return set(
        session.execute(
            sa.select(ApiClient.agency_id)
            .where(ApiClient.agency_id.in_(set(agency_ids)), ApiClient.revoked_at.is_(None))
            .distinct()
        ).scalars()
    )


def disable_if_keyless(session: Session, actor: Actor, agency_id: uuid.UUID, *, now: datetime) -> int:
    """Disable the agency's active subscriptions when it has no live key left
    (call after revoking one, in the same transaction); how many were."""
    session.flush()  # the revocation, for the query below to see
    # The agency's row, locked: of two revocations of its last two keys at
    # once, the second one to get here sees the first one's.
    session.get(Agency, agency_id, with_for_update=True)
    if agencies_with_live_keys_sync(session, [agency_id]):
        return 0
    subs = (
        session.execute(
            sa.select(WebhookSubscription)
            .where(WebhookSubscription.agency_id == agency_id, WebhookSubscription.disabled_at.is_(None))
            .with_for_update()
        )
        .scalars()
        .all()
    )
    for sub in subs:
        disable_sync(session, actor, sub, now=now, reason=NO_LIVE_KEY)
    return len(subs)
