"""Detainees. Personal data is stored for those allowed to see it and
returned only to a client with the `personal_data` scope that states its
purpose (X-Purpose); every such disclosure is audited."""

import uuid
from collections.abc import Iterable
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.agencies.service import require_agencies
from app.auth.models import Scope
from app.auth.service import Principal
from app.crud import add_recorded, delete_recorded, update_recorded
from app.db import utcnow
from app.detainees.models import (
    PERSONAL_FIELDS,
    Detainee,
    DetaineeCreate,
    DetaineePublic,
    DetaineeUpdate,
)
from app.errors import AppError
from app.journal import record
from app.locations.service import require_location_in_case
from app.pagination import PageParams, paginate


def may_see_personal_data(p: Principal, purpose: str | None) -> bool:
    return p.has(Scope.personal_data) and bool(purpose and purpose.strip())


def require_personal_scope(p: Principal, written: Iterable[str]) -> None:
    """403 unless the key may write the personal fields among `written`.

    Erasing is writing: a null sent for a personal field, or deleting a
    record that holds personal data, needs the scope as setting one does.
    """
    if not p.has(Scope.personal_data) and any(f in PERSONAL_FIELDS for f in written):
        raise AppError(403, "Writing personal data needs the 'personal_data' scope.", slug="forbidden")


def personal_fields_set(row: object) -> list[str]:
    """The personal fields that hold a value in `row` (a detainee, or one to create)."""
    return [f for f in PERSONAL_FIELDS if getattr(row, f) is not None]


def one_year_after(day: date) -> date:
    if day.year >= date.max.year:
        return date.max
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def to_public(detainee: Detainee, *, disclose: bool) -> DetaineePublic:
    redacted = {} if disclose else dict.fromkeys(PERSONAL_FIELDS)
    return DetaineePublic.model_validate(
        detainee, update={**redacted, "personal_data_redacted": not disclose}
    )


def present(
    session: Session,
    p: Principal,
    purpose: str | None,
    detainees: list[Detainee],
    *,
    case_id: uuid.UUID,
) -> list[DetaineePublic]:
    """Public views of detainees, with personal data only when allowed.

    A response that shows personal data is one audit entry naming every
    detainee it showed (`detail.detainee_ids`; `resource_id` too when it is
    one), so the log answers "whose data did this list or bundle disclose?"
    while a case of many detainees adds one row under the journal lock, not one each.
    """
    disclose = may_see_personal_data(p, purpose)
    if disclose and detainees:
        record(
            session,
            p.actor,
            action="personal_data.disclosed",
            resource_type="detainee",
            resource_id=detainees[0].id if len(detainees) == 1 else None,
            case_id=case_id,
            purpose=purpose,
            emit_event=False,
            detail={"detainee_ids": [str(d.id) for d in detainees]},
        )
    return [to_public(d, disclose=disclose) for d in detainees]


def list_detainees(
    session: Session, case_id: uuid.UUID, params: PageParams, *, review_overdue: bool | None
) -> tuple[list[Detainee], str | None]:
    stmt = sa.select(Detainee).where(Detainee.case_id == case_id)
    today = utcnow().date()
    if review_overdue is True:
        stmt = stmt.where(Detainee.review_due < today)
    elif review_overdue is False:
        stmt = stmt.where(Detainee.review_due >= today)
    scope = f"detainees:{case_id}"
    return paginate(session, stmt, params, scope=scope, keys=(Detainee.created_at, Detainee.id))


def create_detainee(session: Session, p: Principal, case_id: uuid.UUID, data: DetaineeCreate) -> Detainee:
    require_personal_scope(p, personal_fields_set(data))
    detained_by = data.detained_by_agency_id or p.agency_id
    require_agencies(session, {"detained_by_agency_id": detained_by})
    require_location_in_case(session, data.location_id, case_id)
    review_due = data.review_due or one_year_after((data.detained_at or utcnow()).date())
    detainee = Detainee.model_validate(
        data.model_dump(exclude={"detained_by_agency_id", "review_due"}),
        update={"case_id": case_id, "detained_by_agency_id": detained_by, "review_due": review_due},
    )
    add_recorded(session, detainee, p.actor, resource_type="detainee", case_id=case_id)
    return detainee


def update_detainee(session: Session, p: Principal, detainee: Detainee, data: DetaineeUpdate) -> Detainee:
    changes = data.changes(detainee)
    require_personal_scope(p, changes)
    require_agencies(session, {"detained_by_agency_id": changes.get("detained_by_agency_id")})
    if "location_id" in changes:
        require_location_in_case(session, changes["location_id"], detainee.case_id)
    update_recorded(
        session,
        detainee,
        changes,
        p.actor,
        resource_type="detainee",
        case_id=detainee.case_id,
        blind=frozenset(PERSONAL_FIELDS),
    )
    return detainee


def delete_detainee(session: Session, p: Principal, detainee: Detainee) -> None:
    require_personal_scope(p, personal_fields_set(detainee))
    delete_recorded(session, detainee, p.actor, resource_type="detainee", case_id=detainee.case_id)
