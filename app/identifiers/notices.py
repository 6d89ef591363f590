"""hit.received notifications, written after the search; and the retention of search terms.

A search (app.identifiers.service) answers from what the searcher may see
and queues itself (a PendingHitNotice row), matches or not. This step reads
the queue in order: for each search, the identifiers matched in cases the
searching agency does not see in full (hidden ones and TLP:GREEN/CLEAR
ones it sees in summary), as they were at the time of the search, each
become a `hit.received` event for the case's lead, unless that identifier
was already notified as matched by that agency within
CASEAPI_HIT_NOTICE_WINDOW_HOURS: searching again adds nothing. The events
and the removal of the queued rows are one transaction: a crash sends
nothing twice and loses nothing; on PostgreSQL SKIP LOCKED keeps workers
that run at once on different searches, on SQLite the write lock does.

Search terms older than CASEAPI_HIT_SEARCH_RETENTION_DAYS are purged.

`caseapi serve` runs this in each worker (CASEAPI_HIT_NOTICES);
`caseapi hits process` runs it once.
"""

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag

from app import access
from app.agencies.models import Agency
from app.core.config import Settings
from app.core.db import table_of, utcnow
from app.core.errors import database_reason
from app.core.journal import Actor, record
from app.core.records import Event
from app.core.uow import Database, Row, Tx, one_of, one_of_params
from app.identifiers.models import HitSearchTerm, PendingHitNotice
from app.identifiers.service import hit_values, hits_statement, unseal_terms

log = logging.getLogger("caseapi.hits")

BATCH = 100  # searches notified per transaction
PURGE_BATCH = 500  # searches whose terms one purge transaction removes
PURGE_EVERY = 3600.0  # seconds between two purges of a running server
HIT_RECEIVED = "hit.received"

EVENTS = table_of(Event)
AGENCIES = table_of(Agency)
TERMS = table_of(HitSearchTerm)
PENDING = table_of(PendingHitNotice)


@dataclass(frozen=True)
class Processed:
    searches: int
    notices: int
    terms_purged: int


@functools.cache
def _notified_statement(cases: int) -> sa.Select[Any]:
    """The identifiers of `cases` cases already notified as matched by an agency since a time."""
    return sa.select(EVENTS.c.resource_id).where(
        EVENTS.c.type == HIT_RECEIVED,
        EVENTS.c.from_agency_id == sa.bindparam("agency_id"),
        one_of(EVENTS.c.case_id, "case", cases),
        EVENTS.c.at >= sa.bindparam("since"),
    )


async def _notified(
    tx: Tx, agency_id: uuid.UUID, case_ids: Sequence[uuid.UUID], since: datetime
) -> set[uuid.UUID]:
    """The identifiers of these cases already notified as matched by this agency since `since`."""
    values = {"agency_id": agency_id, "since": since} | one_of_params("case", case_ids)
    return {row.resource_id for row in await tx.all(_notified_statement(len(case_ids)), values)}


async def _notify(
    tx: Tx,
    settings: Settings,
    search: Row,
    since: datetime,
    sent: set[tuple[uuid.UUID, uuid.UUID]] | None,
) -> int:
    """Record the notices of one search (a row of the queue, with its agency's `parent_id`); how many.
    `sent`: (agency, identifier) notified in this batch, None when nothing counts as notified."""
    try:
        terms = unseal_terms(settings, search.search_id, search.sealed)
    except InvalidTag:
        log.error("hit notices: search %s was sealed under another audit key; dropped", search.search_id)
        return 0
    values = access.agency_params(search.agency_id, search.parent_id) | hit_values(terms)
    stmt = hits_statement(notify=True, dialect_name=tx.dialect_name)
    rows = await tx.all(stmt, values | {"searched_at": search.searched_at})
    if not rows:
        return 0
    notified = (
        set()
        if sent is None
        else await _notified(tx, search.agency_id, sorted({r.case_id for r in rows}), since)
    )
    count = 0
    for row in rows:
        if sent is not None:
            if row.id in notified or (search.agency_id, row.id) in sent:
                continue
            sent.add((search.agency_id, row.id))
        record(
            tx,
            Actor(agency_id=search.agency_id, client_id=None),
            action=HIT_RECEIVED,
            resource_type="identifier",
            resource_id=row.id,
            case_id=row.case_id,
            notify=(search.agency_id, row.lead_agency_id),
            # An audit entry naming the hidden case would show it to the searching agency.
            audit=False,
        )
        count += 1
    return count


_ANY_QUEUED = sa.select(PENDING.c.search_id).limit(1)
# The oldest queued searches, each with its agency's parent (the searcher's
# access to AMBER cases); locked, and on PostgreSQL skipped when another
# worker holds them.
_QUEUED = (
    sa.select(PENDING, AGENCIES.c.parent_id)
    .join(AGENCIES, AGENCIES.c.id == PENDING.c.agency_id)
    .order_by(PENDING.c.searched_at, PENDING.c.search_id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
    .with_for_update(of=PENDING, skip_locked=True)
)


@functools.cache
def _dequeue_statement(searches: int) -> sa.Delete:
    return sa.delete(PENDING).where(one_of(PENDING.c.search_id, "search", searches))


async def notify_batch(
    db: Database, settings: Settings, *, now: datetime, limit: int = BATCH
) -> tuple[int, int]:
    """Notify up to `limit` queued searches, oldest first: (searches, notices)."""
    # Most polls find nothing: they need not take SQLite's write lock.
    if await db.first(_ANY_QUEUED) is None:
        return 0, 0
    async with db.transaction() as tx:
        searches = await tx.all(_QUEUED, {"limit": limit})
        if not searches:
            return 0, 0
        window = timedelta(hours=settings.hit_notice_window_hours)
        # Without a window every search is notified: nothing counts as notified before.
        sent: set[tuple[uuid.UUID, uuid.UUID]] | None = set() if window else None
        notices = 0
        for search in searches:
            notices += await _notify(tx, settings, search, now - window, sent)
        ids = [s.search_id for s in searches]
        await tx.execute(_dequeue_statement(len(ids)), one_of_params("search", ids))
    return len(searches), notices


# The terms of up to PURGE_BATCH searches made before the cutoff.
_PURGE = sa.delete(TERMS).where(
    TERMS.c.search_id.in_(
        sa.select(TERMS.c.search_id)
        .where(TERMS.c.searched_at < sa.bindparam("cutoff"))
        .distinct()
        .limit(sa.bindparam("batch", type_=sa.Integer))
        .scalar_subquery()
    )
)


async def purge_terms(db: Database, settings: Settings, *, now: datetime) -> int:
    """Delete the search terms older than the retention, a batch of searches per transaction; how many."""
    values = {"cutoff": now - timedelta(days=settings.hit_search_retention_days), "batch": PURGE_BATCH}
    total = 0
    while True:
        async with db.transaction() as tx:
            gone = await tx.execute(_PURGE, values)
        total += gone
        if not gone:
            return total


async def process(db: Database, settings: Settings, *, purge: bool = True) -> Processed:
    """Notify every queued search, then (with `purge`) purge expired search terms."""
    searches = notices = 0
    while True:
        done, sent = await notify_batch(db, settings, now=utcnow())
        searches, notices = searches + done, notices + sent
        if not done:
            break
    purged = await purge_terms(db, settings, now=utcnow()) if purge else 0
    return Processed(searches, notices, purged)


def _log_failure(exc: Exception) -> None:
    # A database error as its one-line reason: its statement's parameters hold searched values.
    if isinstance(exc, sa.exc.SQLAlchemyError):
        log.error("hit notices failed: %s", database_reason(exc))
    else:
        log.exception("hit notices failed")


async def run(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """Notify queued searches until `stop` is set; purge expired search terms at start and hourly."""
    next_purge = 0.0
    while not stop.is_set():
        purge = time.monotonic() >= next_purge
        try:
            await process(db, settings, purge=purge)
            if purge:
                next_purge = time.monotonic() + PURGE_EVERY
        except Exception as exc:
            _log_failure(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.hit_notice_poll_seconds)
