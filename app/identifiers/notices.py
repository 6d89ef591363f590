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
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio.to_thread
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from sqlalchemy.orm import Session

from app import access
from app.agencies.models import Agency
from app.config import Settings
from app.db import create_db_engine, transaction, utcnow
from app.errors import database_reason
from app.events.models import Event
from app.identifiers.models import HitSearchTerm, PendingHitNotice
from app.identifiers.service import hit_values, hits_statement, unseal_terms
from app.journal import Actor, record

log = logging.getLogger("caseapi.hits")

BATCH = 100  # searches notified per transaction
PURGE_BATCH = 500  # searches whose terms one purge transaction removes
PURGE_EVERY = 3600.0  # seconds between two purges of a running server
HIT_RECEIVED = "hit.received"


@dataclass(frozen=True)
class Processed:
    searches: int
    notices: int
    terms_purged: int


def _notified(
    session: Session, agency_id: uuid.UUID, case_ids: Collection[uuid.UUID], since: datetime
) -> set[uuid.UUID]:
    """The identifiers of these cases already notified as matched by this agency since `since`."""
    return set(
        session.execute(
            sa.select(Event.resource_id).where(
                Event.type == HIT_RECEIVED,
                Event.from_agency_id == agency_id,
                Event.case_id.in_(case_ids),
                Event.at >= since,
            )
        ).scalars()
    )


def _notify(
    session: Session,
    settings: Settings,
    search: PendingHitNotice,
    parent_id: uuid.UUID | None,
    since: datetime,
    sent: set[tuple[uuid.UUID, uuid.UUID]] | None,
) -> int:
    """Record the notices of one search; how many. `sent`: (agency, identifier) notified in this
    batch, None when nothing counts as notified."""
    try:
        terms = unseal_terms(settings, search.search_id, search.sealed)
    except InvalidTag:
        log.error("hit notices: search %s was sealed under another audit key; dropped", search.search_id)
        return 0
    values = access.agency_params(search.agency_id, parent_id) | hit_values(terms)
    rows = session.execute(hits_statement(notify=True), values | {"searched_at": search.searched_at}).all()
    if not rows:
        return 0
    notified = (
        set() if sent is None else _notified(session, search.agency_id, {r.case_id for r in rows}, since)
    )
    count = 0
    for row in rows:
        if sent is not None:
            if row.id in notified or (search.agency_id, row.id) in sent:
                continue
            sent.add((search.agency_id, row.id))
        record(
            session,
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


def notify_batch(
    engine: sa.Engine, settings: Settings, *, now: datetime, limit: int = BATCH
) -> tuple[int, int]:
    """Notify up to `limit` queued searches, oldest first: (searches, notices)."""
    with transaction(engine, write=False) as session:
        # Most polls find nothing: they need not take SQLite's write lock.
        if session.execute(sa.select(PendingHitNotice.search_id).limit(1)).first() is None:
            return 0, 0
    with transaction(engine, write=True) as session:
        searches = (
            session.execute(
                sa.select(PendingHitNotice)
                .order_by(PendingHitNotice.searched_at, PendingHitNotice.search_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            .scalars()
            .all()
        )
        if not searches:
            return 0, 0
        parents = dict(
            session.execute(
                sa.select(Agency.id, Agency.parent_id).where(Agency.id.in_({s.agency_id for s in searches}))
            ).all()
        )
        window = timedelta(hours=settings.hit_notice_window_hours)
        # Without a window every search is notified: nothing counts as notified before.
        sent: set[tuple[uuid.UUID, uuid.UUID]] | None = set() if window else None
        notices = sum(
            _notify(session, settings, s, parents[s.agency_id], now - window, sent) for s in searches
        )
        session.execute(
            sa.delete(PendingHitNotice).where(PendingHitNotice.search_id.in_([s.search_id for s in searches]))
        )
    return len(searches), notices


def purge_terms(engine: sa.Engine, settings: Settings, *, now: datetime) -> int:
    """Delete the search terms older than the retention, a batch of searches per transaction; how many."""
    cutoff = now - timedelta(days=settings.hit_search_retention_days)
    expired = (
        sa.select(HitSearchTerm.search_id)
        .where(HitSearchTerm.searched_at < cutoff)
        .distinct()
        .limit(PURGE_BATCH)
    )
    total = 0
    while True:
        with transaction(engine, write=True) as session:
            gone = session.execute(
                sa.delete(HitSearchTerm).where(HitSearchTerm.search_id.in_(expired.scalar_subquery()))
            ).rowcount
        total += gone
        if not gone:
            return total


def process(engine: sa.Engine, settings: Settings, *, purge: bool = True) -> Processed:
    """Notify every queued search, then (with `purge`) purge expired search terms."""
    searches = notices = 0
    while True:
        done, sent = notify_batch(engine, settings, now=utcnow())
        searches, notices = searches + done, notices + sent
        if not done:
            break
    purged = purge_terms(engine, settings, now=utcnow()) if purge else 0
    return Processed(searches, notices, purged)


def _log_failure(exc: Exception) -> None:
    # A database error as its one-line reason: its statement's parameters hold searched values.
    if isinstance(exc, sa.exc.SQLAlchemyError):
        log.error("hit notices failed: %s", database_reason(exc))
    else:
        log.exception("hit notices failed")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Notify queued searches until `stop` is set; purge expired search terms at start and hourly."""
    # Its own connection: the admitted requests count on the pool's.
    engine = create_db_engine(settings.database_url, pool_size=1, pool_timeout=settings.pool_timeout_seconds)
    next_purge = 0.0
    try:
        while not stop.is_set():
            purge = time.monotonic() >= next_purge
            try:
                await anyio.to_thread.run_sync(functools.partial(process, engine, settings, purge=purge))
                if purge:
                    next_purge = time.monotonic() + PURGE_EVERY
            except Exception as exc:
                _log_failure(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.hit_notice_poll_seconds)
    finally:
        engine.dispose()
