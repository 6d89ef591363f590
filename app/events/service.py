"""Reading the change feed. Events are written by app.journal."""

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import access
from app.auth.service import Principal
from app.cases.models import Case
from app.events.models import Event
from app.pagination import PageParams, keyset, page_of

REQUEST_TYPES = ("information_request", "request_message")


def visible_clause(p: Principal) -> sa.ColumnElement[bool]:
    """Request events reach their two agencies; case events follow case access
    (summary access sees the case's own events only); agency events reach everyone."""
    is_request = Event.resource_type.in_(REQUEST_TYPES)
    return sa.or_(
        sa.and_(
            is_request,
            sa.or_(Event.request_from_agency_id == p.agency_id, Event.request_to_agency_id == p.agency_id),
        ),
        sa.and_(~is_request, Event.case_id.is_(None), Event.resource_type == "agency"),
        sa.and_(~is_request, Event.case_id.in_(access.full_access_case_ids(p))),
        # Summary access (TLP:GREEN, TLP:CLEAR) reaches the case's own events only.
        sa.and_(
            Event.resource_type == "case",
            Event.case_id.in_(sa.select(Case.id).where(Case.handling_code.in_(access.PUBLIC_CODES))),
        ),
    )


def list_events(
    session: Session, p: Principal, params: PageParams, *, after: int | None = None
) -> tuple[list[Event], str | None]:
    stmt = sa.select(Event).where(visible_clause(p))
    if after is not None:
        stmt = stmt.where(Event.seq > after)
    stmt = keyset(stmt, params, scope="events", keys=(Event.seq,), types=(int,))
    rows = session.execute(stmt).scalars().all()
    return page_of(rows, params, scope="events", key_of=lambda e: (e.seq,))
