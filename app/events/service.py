"""Reading the change feed. Events are written by app.core.journal."""

import functools
from typing import Any

import sqlalchemy as sa

from app import access
from app.auth.service import Principal
from app.core.db import table_of
from app.core.pagination import PageParams, keyset, read_page
from app.core.records import Event
from app.core.uow import Statements

REQUEST_TYPES = ("information_request", "request_message", "message_attachment")
# Events addressed to named agencies (journal.record's request_parties): the
# two of a request, or the one that owns a webhook subscription.
ADDRESSED_TYPES = (*REQUEST_TYPES, "subscription")


EVENTS = table_of(Event)
EVENT_KEYS = (EVENTS.c.seq,)


@functools.cache
def visible_events(*, with_parent: bool) -> sa.Select[Any]:
    """Request events reach their two agencies, subscription events their owner;
    case events follow case access (summary access sees the case's own events
    only); agency events reach everyone; a notification (hit.received) reaches
    its recipient agency and nobody else, not even the other participants of
    its case.
    Run with access.principal_params()."""
    cases = access.CASES
    stmt = sa.select(EVENTS).outerjoin(cases, cases.c.id == EVENTS.c.case_id)
    stmt, full, _ = access.with_case_access(
        stmt, case_id=EVENTS.c.case_id, handling_code=cases.c.handling_code, with_parent=with_parent
    )
    is_request = sa.or_(*(EVENTS.c.resource_type == t for t in ADDRESSED_TYPES))
    return stmt.where(
        sa.or_(
            EVENTS.c.recipient_agency_id == sa.bindparam("agency_id"),
            sa.and_(
                EVENTS.c.recipient_agency_id.is_(None),
                sa.or_(
                    sa.and_(
                        is_request,
                        access.sees_request(EVENTS.c.request_from_agency_id, EVENTS.c.request_to_agency_id),
                    ),
                    sa.and_(~is_request, EVENTS.c.case_id.is_(None), EVENTS.c.resource_type == "agency"),
                    sa.and_(~is_request, full),
                    sa.and_(EVENTS.c.resource_type == "case", access.is_public(cases.c.handling_code)),
                ),
            ),
        )
    )


@functools.cache
def _feed_statement(*, with_parent: bool, since: bool, after: bool) -> sa.Select[Any]:
    stmt = visible_events(with_parent=with_parent)
    if since:
        stmt = stmt.where(EVENTS.c.seq > sa.bindparam("since"))
    return keyset(stmt, keys=EVENT_KEYS, after=after)


async def list_events(
    reads: Statements, p: Principal, params: PageParams, *, after: int | None = None
) -> tuple[list[Any], str | None]:
    stmt = _feed_statement(
        with_parent=p.parent_agency_id is not None, since=after is not None, after=bool(params.cursor)
    )
    values = access.principal_params(p) | {"since": after}
    return await read_page(reads, stmt, values, params, scope="events", keys=EVENT_KEYS)
