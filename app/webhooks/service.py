"""Webhook subscriptions of an agency, and the database side of delivering them.

A subscription belongs to an agency, is managed by its `admin` keys, and is
invisible (404) to every other agency. Its journal records carry the agency
as `request_parties`, so its events reach that agency's feed only.

The signing secret must be recoverable (the server signs with it), so it
is stored sealed with AES-256-GCM under a key derived from the audit key
(app.core.secrets.webhook_key), bound to the subscription's id: a database copy
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

from app import access
from app.agencies.models import Agency
from app.auth.service import Principal
from app.core.config import Settings
from app.core.crud import row_type
from app.core.db import new_row, table_of
from app.core.errors import conflict, invalid, not_found
from app.core.http import public
from app.core.journal import CLI
from app.core.pagination import PageParams, rows_under
from app.core.records import Event
from app.core.secrets import webhook_key
from app.core.uow import Database, Row, Statements, Tx, one_of, one_of_params
from app.events.models import EventPublic
from app.events.service import visible_events
from app.webhooks.lifecycle import (
    FAILURES,
    NO_LIVE_KEY,
    agencies_with_live_keys,
    disable,
    record_change,
)
from app.webhooks.models import (
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionPublic,
    WebhookDelivery,
    WebhookSubscription,
)
from app.webhooks.targets import RefusedTarget, check_characters, resolve_async

log = logging.getLogger("caseapi.webhooks")

_NONCE_BYTES = 12
# How long a subscription's delivery log keeps its attempts.
DELIVERY_LOG_DAYS = 30
# Each subscription is a stream of POSTs the server sends on the agency's
# behalf: a bound keeps one key from turning it into a flood.
MAX_SUBSCRIPTIONS_PER_AGENCY = 25

SUBSCRIPTIONS = table_of(WebhookSubscription)
DELIVERIES = table_of(WebhookDelivery)
AGENCIES = table_of(Agency)
EVENTS = table_of(Event)


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


def _computed(sub: Row) -> dict[str, Any]:
    return {
        "status": "disabled" if sub.disabled_at else "active",
        "last_delivered_seq": sub.last_seq,
        "consecutive_failures": sub.failures,
        "next_attempt_at": None if sub.disabled_at else sub.next_attempt_at,
    }


def to_public(sub: Row) -> SubscriptionPublic:
    return public(SubscriptionPublic, sub, **_computed(sub))


def to_created(sub: Row, secret: str) -> SubscriptionCreated:
    """The answer to a creation: the public view and the secret."""
    return public(SubscriptionCreated, sub, **_computed(sub), secret=secret)


SUBSCRIPTION_KEYS = (SUBSCRIPTIONS.c.created_at, SUBSCRIPTIONS.c.id)


async def list_subscriptions(
    db: Statements, p: Principal, params: PageParams
) -> tuple[list[Row], str | None]:
    column = SUBSCRIPTIONS.c.agency_id
    return await rows_under(db, column, p.agency_id, params, scope="subscriptions", keys=SUBSCRIPTION_KEYS)


# The agency is in the statement: another agency's subscription is not found, as a missing one.
_ONE = sa.select(SUBSCRIPTIONS).where(
    SUBSCRIPTIONS.c.id == sa.bindparam("sub_id"), SUBSCRIPTIONS.c.agency_id == sa.bindparam("agency_id")
)
_ONE_LOCKED = _ONE.with_for_update()


async def get_subscription(
    db: Statements, p: Principal, subscription_id: uuid.UUID, *, for_update: bool = False
) -> Row:
    """One of the caller's agency's subscriptions; 404 for any other."""
    stmt = _ONE_LOCKED if for_update else _ONE
    sub = await db.first(stmt, {"sub_id": subscription_id, "agency_id": p.agency_id})
    if sub is None:
        raise not_found("subscription")
    return sub


_LOCK_AGENCY = sa.select(AGENCIES.c.id).where(AGENCIES.c.id == sa.bindparam("agency_id")).with_for_update()
_HELD = sa.select(sa.func.count()).where(SUBSCRIPTIONS.c.agency_id == sa.bindparam("agency_id"))
_HEAD = sa.select(sa.func.max(EVENTS.c.seq))


async def create_subscription(
    tx: Tx, p: Principal, data: SubscriptionCreate, settings: Settings
) -> tuple[Row, str]:
    """The new subscription and its secret. It receives the events written from now on."""
    # The agency's row, locked: two creations at once cannot both take the last place.
    await tx.first(_LOCK_AGENCY, {"agency_id": p.agency_id})
    held = await tx.scalar(_HELD, {"agency_id": p.agency_id})
    if held >= MAX_SUBSCRIPTIONS_PER_AGENCY:
        raise conflict(
            f"An agency has at most {MAX_SUBSCRIPTIONS_PER_AGENCY} subscriptions; delete one first."
        )
    try:
        check_characters(data.url)
        target = await resolve_async(data.url, allow_private=settings.webhook_allow_private)
    except RefusedTarget as exc:
        raise invalid(["body", "url"], f"Webhook URL refused: {exc}.") from exc
    head = await tx.scalar(_HEAD)
    sub_id = uuid.uuid4()
    secret = new_secret()
    values = new_row(
        WebhookSubscription,
        id=sub_id,
        agency_id=p.agency_id,
        # As it is sent: an IDNA host, a percent-encoded path (app.webhooks.targets).
        url=str(target.url),
        event_types=list(dict.fromkeys(data.event_types)),
        description=data.description,
        secret_sealed=seal(settings, sub_id, secret),
        last_seq=head or 0,
    )
    await tx.insert([(SUBSCRIPTIONS, [values])])
    sub = row_type(SUBSCRIPTIONS)(**values)
    record_change(tx, p.actor, sub, "created")
    return sub, secret


_DELETE = sa.delete(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id == sa.bindparam("sub_id"))


async def delete_subscription(tx: Tx, p: Principal, sub: Row) -> None:
    """Its delivery log goes with it (ON DELETE CASCADE); the audit trail keeps the deletion."""
    await tx.execute(_DELETE, {"sub_id": sub.id})
    record_change(tx, p.actor, sub, "deleted")


DELIVERY_KEYS = (
    DELIVERIES.c.attempted_at,
    DELIVERIES.c.event_seq,
    DELIVERIES.c.attempt,
    DELIVERIES.c.id,
)


async def list_deliveries(db: Statements, sub: Row, params: PageParams) -> tuple[list[Row], str | None]:
    column = DELIVERIES.c.subscription_id
    return await rows_under(db, column, sub.id, params, scope=f"deliveries:{sub.id}", keys=DELIVERY_KEYS)


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


@functools.cache
def _fairly_due(held: int) -> sa.Select[Any]:
    """Due subscriptions (with their agency's `parent_id`), at most `per_agency`
    of an agency less the ones the caller holds (`held` agencies, each
    `held_agency_<i>` with `held_count_<i>` batches), round-robin: every
    agency's most overdue one, then every agency's second..."""
    sub = SUBSCRIPTIONS.c
    now = sa.bindparam("now", type_=sub.next_attempt_at.type)
    due = sa.and_(
        sub.disabled_at.is_(None),
        sub.next_attempt_at <= now,
        sa.or_(sub.lease_until.is_(None), sub.lease_until < now),
        sa.exists().where(EVENTS.c.seq > sub.last_seq),
    )
    ranked = (
        sa.select(
            sub.id,
            sub.agency_id,
            sa.func.row_number()
            .over(partition_by=sub.agency_id, order_by=(sub.next_attempt_at, sub.id))
            .label("rank"),
        )
        .where(due)
        .subquery()
    )
    taken: sa.ColumnElement[int] = (
        sa.case(
            *(
                (
                    ranked.c.agency_id == sa.bindparam(f"held_agency_{i}", type_=sub.agency_id.type),
                    sa.bindparam(f"held_count_{i}", type_=sa.Integer),
                )
                for i in range(held)
            ),
            else_=0,
        )
        if held
        else sa.literal(0)
    )
    return (
        sa.select(SUBSCRIPTIONS, AGENCIES.c.parent_id)
        .join(ranked, ranked.c.id == sub.id)
        .join(AGENCIES, AGENCIES.c.id == sub.agency_id)
        .where(ranked.c.rank + taken <= sa.bindparam("per_agency", type_=sa.Integer))
        .order_by(ranked.c.rank, sub.next_attempt_at)
    )


@functools.cache
def _any_due(held: int) -> sa.Select[Any]:
    return _fairly_due(held).limit(1)


@functools.cache
def _claim_statement(held: int) -> sa.Select[Any]:
    return (
        _fairly_due(held)
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .with_for_update(skip_locked=True, of=SUBSCRIPTIONS)
    )


@functools.cache
def _lease_statement(count: int) -> sa.Update:
    return (
        sa.update(SUBSCRIPTIONS)
        .where(one_of(SUBSCRIPTIONS.c.id, "sub", count))
        .values(
            lease_token=sa.bindparam("token", type_=SUBSCRIPTIONS.c.lease_token.type),
            lease_until=sa.bindparam("until", type_=SUBSCRIPTIONS.c.lease_until.type),
        )
    )


async def claim_due(
    db: Database,
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
    held = held or {}
    values: dict[str, Any] = {"now": now, "per_agency": settings.webhook_agency_concurrency, "limit": limit}
    for i, (agency_id, count) in enumerate(held.items()):
        values |= {f"held_agency_{i}": agency_id, f"held_count_{i}": count}
    # Most polls find nothing: they need not take SQLite's write lock.
    if await db.first(_any_due(len(held)), values) is None:
        return []
    async with db.transaction() as tx:
        return await _lease(tx, settings, await tx.all(_claim_statement(len(held)), values), now + lease, now)


async def _lease(tx: Tx, settings: Settings, subs: list[Row], until: datetime, now: datetime) -> list[Claim]:
    if not subs:
        return []
    token = uuid.uuid4()
    keyed = await agencies_with_live_keys(tx, {s.agency_id for s in subs})
    leased: list[uuid.UUID] = []
    claims = []
    for sub in subs:
        if sub.agency_id not in keyed:
            # Revoking the last key disabled the others (app.webhooks.lifecycle);
            # this catches the rest: one made with a revoked key a worker still
            # trusted for its last second, or a key that ended another way.
            log.warning("webhook subscription %s disabled: its agency has no live API key", sub.id)
            await disable(tx, CLI, sub, now=now, reason=NO_LIVE_KEY)
            continue
        leased.append(sub.id)
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
                parent_id=sub.parent_id,
                url=sub.url,
                event_types=sub.event_types,
                secret=secret,
                last_seq=sub.last_seq,
                failures=sub.failures,
                failing_since=sub.failing_since,
                token=token,
            )
        )
    if leased:
        await tx.execute(
            _lease_statement(len(leased)), one_of_params("sub", leased) | {"token": token, "until": until}
        )
    return claims


@functools.cache
def _pending_statement(*, with_parent: bool) -> sa.Select[Any]:
    return (
        visible_events(with_parent=with_parent)
        .where(EVENTS.c.seq > sa.bindparam("since"), EVENTS.c.seq <= sa.bindparam("head"))
        .order_by(EVENTS.c.seq)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


async def pending_events(db: Statements, claim: Claim, *, limit: int) -> tuple[list[EventPublic], int]:
    """The next events the subscribing agency may see now (the feed's own
    visibility statement), and the cursor to move to once all are delivered.

    The head is read first: an event committed after it has a higher seq and
    waits for the next batch, so moving the cursor past invisible events
    never skips one not yet looked at (the journal lock makes a seq visible
    only after every lower one).
    """
    head = await db.scalar(_HEAD) or 0
    stmt = _pending_statement(with_parent=claim.parent_id is not None)
    values = access.agency_params(claim.agency_id, claim.parent_id) | {
        "since": claim.last_seq,
        "head": head,
        "limit": limit,
    }
    events = [public(EventPublic, e) for e in await db.all(stmt, values)]
    # A full batch: the rest, visible or not, comes with the next one.
    return events, events[-1].seq if len(events) == limit else head


# The lease is checked and the row locked by the same statement: a
# subscription deleted meanwhile, or leased again by another deliverer after
# this lease expired, returns nothing and keeps its state.
_STORE = (
    sa.update(SUBSCRIPTIONS)
    .where(SUBSCRIPTIONS.c.id == sa.bindparam("sub_id"), SUBSCRIPTIONS.c.lease_token == sa.bindparam("token"))
    .values(
        last_seq=sa.bindparam("last_seq", type_=SUBSCRIPTIONS.c.last_seq.type),
        failures=sa.bindparam("failures", type_=SUBSCRIPTIONS.c.failures.type),
        failing_since=sa.bindparam("failing_since", type_=SUBSCRIPTIONS.c.failing_since.type),
        next_attempt_at=sa.bindparam("next_attempt_at", type_=SUBSCRIPTIONS.c.next_attempt_at.type),
        lease_token=sa.null(),
        lease_until=sa.null(),
    )
    .returning(SUBSCRIPTIONS.c.id, SUBSCRIPTIONS.c.agency_id, SUBSCRIPTIONS.c.disabled_at)
)
_FORGET_OLD = sa.delete(DELIVERIES).where(
    DELIVERIES.c.subscription_id == sa.bindparam("sub_id"),
    DELIVERIES.c.attempted_at < sa.bindparam("before", type_=DELIVERIES.c.attempted_at.type),
)


async def complete(tx: Tx, claim: Claim, outcome: Outcome, *, now: datetime) -> bool:
    """Store a batch's results and end the lease; False when the lease was
    lost (the subscription was deleted meanwhile) and nothing was stored."""
    sub = await tx.first(
        _STORE,
        {
            "sub_id": claim.id,
            "token": claim.token,
            "last_seq": outcome.last_seq,
            "failures": outcome.failures,
            "failing_since": outcome.failing_since,
            "next_attempt_at": outcome.next_attempt_at,
        },
    )
    if sub is None:
        return False
    # Disabled meanwhile (its agency's last key was revoked): once is enough.
    if outcome.disable and sub.disabled_at is None:
        await disable(tx, CLI, sub, now=now, reason=FAILURES)
    await tx.insert_many(DELIVERIES, [new_row(WebhookDelivery, **a) for a in outcome.attempts])
    await tx.execute(_FORGET_OLD, {"sub_id": sub.id, "before": now - timedelta(days=DELIVERY_LOG_DAYS)})
    return True
