"""Reading the change feed. Events are written by app.journal."""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import access
from app.auth.service import Principal
from app.cases.models import Case
from app.events.models import Event
from app.pagination import PageParams, paginate

REQUEST_TYPES = ("information_request", "request_message")


def visible_events(p: Principal) -> sa.Select[Any]:
    """Request events reach their two agencies; case events follow case access
    (summary access sees the case's own events only); agency events reach everyone."""
    stmt = sa.select(Event).outerjoin(Case, Case.id == Event.case_id)
    stmt, full, _ = access.with_case_access(stmt, p, case_id=Event.case_id, handling_code=Case.handling_code)
    is_request = Event.resource_type.in_(REQUEST_TYPES)
    return stmt.where(
        sa.or_(
            sa.and_(
                is_request,
                sa.or_(
                    Event.request_from_agency_id == p.agency_id, Event.request_to_agency_id == p.agency_id
                ),
            ),
            sa.and_(~is_request, Event.case_id.is_(None), Event.resource_type == "agency"),
            sa.and_(~is_request, full),
            sa.and_(Event.resource_type == "case", Case.handling_code.in_(access.PUBLIC_CODES)),
        )
    )


def list_events(
    session: Session, p: Principal, params: PageParams, *, after: int | None = None
) -> tuple[list[Event], str | None]:
    stmt = visible_events(p)
    if after is not None:
        stmt = stmt.where(Event.seq > after)
    return paginate(session, stmt, params, scope="events", keys=(Event.seq,))
