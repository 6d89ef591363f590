"""Webhook subscriptions of an agency, and the database side of delivering them.

A subscription belongs to an agency, is managed by its `admin` keys, and is
invisible (404) to every other agency. Its journal records carry the agency
as `request_parties`, so its events reach that agency's feed only.

The signing secret must be recoverable (the server signs with it), so it
is stored sealed with AES-256-GCM under a key derived from the audit key
(app.secrets.webhook_key), bound to the subscription's id: a database copy
alone does not reveal it, and a sealed secret moved to another row does not
open.
"""

import base64
import functools
import logging
import os
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

from app import access
from app.agencies.models import Agency
from app.auth.service import Principal
from app.config import Settings
from app.db import bulk_insert, transaction
from app.errors import conflict, invalid, not_found
from app.events.models import Event, EventPublic
from app.events.service import visible_events
from app.journal import CLI
from app.pagination import PageParams, paginate_sync
from app.secrets import webhook_key
from app.webhooks.lifecycle import (
    FAILURES,
    NO_LIVE_KEY,
    agencies_with_live_keys_sync,
    disable_sync,
    record_change_sync,
)
from app.webhooks.models import (
    SubscriptionCreate,
    SubscriptionPublic,
    WebhookDelivery,
    WebhookSubscription,
)
from app.webhooks.targets import RefusedTarget, check_characters, resolve

log = logging.getLogger("caseapi.webhooks")

_NONCE_BYTES = 12
# How long a subscription's delivery log keeps its attempts.
DELIVERY_LOG_DAYS = 30
# Each subscription is a stream of POSTs the server sends on the agency's
# behalf: a bound keeps one key from turning it into a flood.
MAX_SUBSCRIPTIONS_PER_AGENCY = 25


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def seal(settings: Settings, subscription_id: uuid.UUID, secret: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(webhook_key(settings)).encrypt(nonce, secret.encode(), subscription_id.bytes)


def unseal(settings: Settings, subscription_id: uuid.UUID, sealed: bytes) -> str:
    """The secret; InvalidTag when it was sealed under another key or for another row."""
    nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    return AESGCM(webhook_key(settings)).decrypt(nonce, ciphertext, subscription_id.bytes).decode()


def to_public(sub: WebhookSubscription) -> SubscriptionPublic:
    return SubscriptionPublic(
        id=sub.id,
        agency_id=sub.agency_id,
        url=sub.url,
        event_types=sub.event_types,
        description=sub.description,
        status="disabled" if sub.disabled_at else "active",
        last_delivered_seq=sub.last_seq,
        consecutive_failures=sub.failures,
        failing_since=sub.failing_since,
        next_attempt_at=None if sub.disabled_at else sub.next_attempt_at,
        disabled_at=sub.disabled_at,
        created_at=sub.created_at,
        version=sub.version,
    )


def list_subscriptions(
    session: Session, p: Principal, params: PageParams
) -> tuple[list[WebhookSubscription], str | None]:
    return paginate_sync(
        session,
        sa.select(WebhookSubscription).where(WebhookSubscription.agency_id == p.agency_id),
        params,
        scope="subscriptions",
        keys=(WebhookSubscription.created_at, WebhookSubscription.id),
    )


def get_subscription(
    session: Session, p: Principal, subscription_id: uuid.UUID, *, for_update: bool = False
) -> WebhookSubscription:
    """One of the caller's agency's subscriptions; 404 for any other."""
    sub = session.get(WebhookSubscription, subscription_id, with_for_update=for_update)
    if sub is None or sub.agency_id != p.agency_id:
        raise not_found("subscription")
    return sub


def create_subscription(
    session: Session, p: Principal, data: SubscriptionCreate, settings: Settings
) -> tuple[WebhookSubscription, str]:
    """The new subscription and its secret. It receives the events written from now on."""
    # The agency's row, locked: two creations at once cannot both take the last place.
    session.get(Agency, p.agency_id, with_for_update=True)
    held = session.execute(
        sa.select(sa.func.count()).where(WebhookSubscription.agency_id == p.agency_id)
    ).scalar_one()
    if held >= MAX_SUBSCRIPTIONS_PER_AGENCY:
        raise conflict(
            f"An agency has at most {MAX_SUBSCRIPTIONS_PER_AGENCY} subscriptions; delete one first."
        )
    try:
        check_characters(data.url)
        target = resolve(data.url, allow_private=settings.webhook_allow_private)
    except RefusedTarget as exc:
        raise invalid(["body", "url"], f"Webhook URL refused: {exc}.") from exc
    head = session.execute(sa.select(sa.func.max(Event.seq))).scalar_one()
    sub = WebhookSubscription(
        agency_id=p.agency_id,
        # As it is sent: an IDNA host, a percent-encoded path (app.webhooks.targets).
        url=str(target.url),
        event_types=list(dict.fromkeys(data.event_types)),
        description=data.description,
        secret_sealed=b"",
        last_seq=head or 0,
    )
    secret = new_secret()
    sub.secret_sealed = seal(settings, sub.id, secret)
    session.add(sub)
    session.flush()
    record_change_sync(session, p.actor, sub, "created")
    return sub, secret


def delete_subscription(session: Session, p: Principal, sub: WebhookSubscription) -> None:
    """Its delivery log goes with it; the audit trail keeps the deletion."""
    session.delete(sub)
    session.flush()
    record_change_sync(session, p.actor, sub, "deleted")


def list_deliveries(
    session: Session, sub: WebhookSubscription, params: PageParams
) -> tuple[list[WebhookDelivery], str | None]:
    return paginate_sync(
        session,
        sa.select(WebhookDelivery).where(WebhookDelivery.subscription_id == sub.id),
        params,
        scope=f"deliveries:{sub.id}",
        keys=(
            WebhookDelivery.attempted_at,
            WebhookDelivery.event_seq,
            WebhookDelivery.attempt,
            WebhookDelivery.id,
        ),
    )


# --- delivery: claims, the events to send, results -------------------------


@dataclass(frozen=True)
class Claim:
    """A subscription leased to one deliverer until `lease_until`."""

    id: uuid.UUID
    agency_id: uuid.UUID
    parent_id: uuid.UUID | None
    url: str
    event_types: list[str]
    secret: str
    last_seq: int
    failures: int
    failing_since: datetime | None
    token: uuid.UUID


@dataclass(frozen=True)
class Outcome:
    """What a batch did: the new cursor, its attempts, and the state after them."""

    last_seq: int
    attempts: list[dict[str, Any]]
    failures: int
    failing_since: datetime | None
    next_attempt_at: datetime
    disable: bool


def _due(now: datetime) -> sa.ColumnElement[bool]:
    sub = WebhookSubscription
    return sa.and_(
        sub.disabled_at.is_(None),
        sub.next_attempt_at <= now,
        sa.or_(sub.lease_until.is_(None), sub.lease_until < now),
        sa.exists().where(Event.seq > sub.last_seq),
    )


def _fairly_due(now: datetime, per_agency: int, held: Mapping[uuid.UUID, int]) -> sa.Select[Any]:
    """Due subscriptions, at most `per_agency` of an agency less the `held` ones,
    round-robin: every agency's most overdue one, then every agency's second..."""
    sub = WebhookSubscription
    ranked = (
        sa.select(
            sub.id,
            sub.agency_id,
            sa.func.row_number()
            .over(partition_by=sub.agency_id, order_by=(sub.next_attempt_at, sub.id))
            .label("rank"),
        )
        .where(_due(now))
        .subquery()
    )
    taken = sa.case(dict(held), value=ranked.c.agency_id, else_=0) if held else sa.literal(0)
    return (
        sa.select(sub)
        .join(ranked, ranked.c.id == sub.id)
        .where(ranked.c.rank + taken <= per_agency)
        .order_by(ranked.c.rank, sub.next_attempt_at)
    )


def claim_due(
    engine: sa.Engine,
    settings: Settings,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    held: Mapping[uuid.UUID, int] | None = None,
) -> list[Claim]:
    """Lease up to `limit` subscriptions that have events to deliver and are due,
    at most CASEAPI_WEBHOOK_AGENCY_CONCURRENCY of one agency together with the
    ones the caller `held` already.

    PostgreSQL: FOR UPDATE SKIP LOCKED, so that deliverers claiming at once
    take different rows; SQLite: the write lock serialises claims. A lease,
    not a held row lock, covers the batch: no transaction stays open while
    the deliverer waits on the network.
    """
    due = _fairly_due(now, settings.webhook_agency_concurrency, held or {})
    with transaction(engine, write=False) as session:
        # Most polls find nothing: they need not take SQLite's write lock.
        if session.execute(due.limit(1)).first() is None:
            return []
    token = uuid.uuid4()
    claims = []
    with transaction(engine, write=True) as session:
        subs = (
            session.execute(due.limit(limit).with_for_update(skip_locked=True, of=WebhookSubscription))
            .scalars()
            .all()
        )
        agencies = {s.agency_id for s in subs}
        parents = dict(
            session.execute(sa.select(Agency.id, Agency.parent_id).where(Agency.id.in_(agencies))).all()
        )
        keyed = agencies_with_live_keys_sync(session, agencies)
        for sub in subs:
            if sub.agency_id not in keyed:
                # Revoking the last key disabled the others (app.webhooks.lifecycle);
                # this catches the rest: one made with a revoked key a worker still
                # trusted for its last second, or a key that ended another way.
                log.warning("webhook subscription %s disabled: its agency has no live API key", sub.id)
                disable_sync(session, CLI, sub, now=now, reason=NO_LIVE_KEY)
                continue
            sub.lease_token = token
            sub.lease_until = now + lease
            try:
                secret = unseal(settings, sub.id, sub.secret_sealed)
            except InvalidTag:
                # Sealed under another audit key: left leased, so that it is
                # tried (and logged) once a lease, not at every poll.
                log.error("webhook subscription %s: its secret does not open with this audit key", sub.id)
                continue
            claims.append(
                Claim(
                    id=sub.id,
                    agency_id=sub.agency_id,
                    parent_id=parents.get(sub.agency_id),
                    url=sub.url,
                    event_types=sub.event_types,
                    secret=secret,
                    last_seq=sub.last_seq,
                    failures=sub.failures,
                    failing_since=sub.failing_since,
                    token=token,
                )
            )
    return claims


@functools.cache
def _pending_statement(*, with_parent: bool) -> sa.Select[Any]:
    return (
        visible_events(with_parent=with_parent)
        .where(Event.seq > sa.bindparam("since"), Event.seq <= sa.bindparam("head"))
        .order_by(Event.seq)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


def pending_events(engine: sa.Engine, claim: Claim, *, limit: int) -> tuple[list[EventPublic], int]:
    """The next events the subscribing agency may see now (the feed's own
    visibility statement), and the cursor to move to once all are delivered.

    The head is read first: an event committed after it has a higher seq and
    waits for the next batch, so moving the cursor past invisible events
    never skips one not yet looked at.
    """
    with transaction(engine, write=False) as session:
        head = session.execute(sa.select(sa.func.max(Event.seq))).scalar_one() or 0
        stmt = _pending_statement(with_parent=claim.parent_id is not None)
        values = access.agency_params(claim.agency_id, claim.parent_id) | {
            "since": claim.last_seq,
            "head": head,
            "limit": limit,
        }
        events = [EventPublic.model_validate(e) for e in session.execute(stmt, values).scalars()]
    # A full batch: the rest, visible or not, comes with the next one.
    return events, events[-1].seq if len(events) == limit else head


def complete(engine: sa.Engine, claim: Claim, outcome: Outcome, *, now: datetime) -> bool:
    """Store a batch's results and end the lease; False when the lease was
    lost (the subscription was deleted meanwhile) and nothing was stored."""
    with transaction(engine, write=True) as session:
        sub = session.execute(
            sa.select(WebhookSubscription)
            .where(WebhookSubscription.id == claim.id, WebhookSubscription.lease_token == claim.token)
            .with_for_update()
        ).scalar_one_or_none()
        if sub is None:
            return False
        sub.last_seq = outcome.last_seq
        sub.failures = outcome.failures
        sub.failing_since = outcome.failing_since
        sub.next_attempt_at = outcome.next_attempt_at
        sub.lease_token = None
        sub.lease_until = None
        # Disabled meanwhile (its agency's last key was revoked): once is enough.
        if outcome.disable and sub.disabled_at is None:
            disable_sync(session, CLI, sub, now=now, reason=FAILURES)
        session.flush()
        bulk_insert(session, WebhookDelivery.__table__, outcome.attempts)  # type: ignore[attr-defined]
        session.execute(
            sa.delete(WebhookDelivery).where(
                WebhookDelivery.subscription_id == sub.id,
                WebhookDelivery.attempted_at < now - timedelta(days=DELIVERY_LOG_DAYS),
            )
        )
    return True
