"""The one place that decides what a client may see and do in a case.

Seeing: participants see a case and everything under it. Under TLP:AMBER,
so do the sub-agencies of participants (agencies whose parent_id is a
participant). Under TLP:GREEN and TLP:CLEAR every agency sees the case's own
fields ("summary" access) but nothing under it. Anything else is invisible
and answers 404, exactly as if it did not exist.

Changing: lead and partners with the `write` scope change the case and what
is under it; only the lead changes participants and the handling code.
"""

import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from app.auth.models import Scope
from app.auth.service import Principal
from app.cases.models import Case, HandlingCode
from app.errors import AppError, forbidden, not_found
from app.participants.models import Participant, Role

PUBLIC_CODES = (HandlingCode.green, HandlingCode.clear)

Level = Literal["full", "summary"]


@dataclass(frozen=True)
class CaseAccess:
    case: Case
    level: Level
    role: Role | None  # the caller's own agency's role, None if not a participant


def _is_participant(case_id: sa.ColumnElement[uuid.UUID], agency_id: Any) -> sa.Exists:
    return sa.exists().where(Participant.case_id == case_id, Participant.agency_id == agency_id)


def with_case_access(
    stmt: sa.Select[Any],
    p: Principal,
    *,
    case_id: sa.ColumnElement[uuid.UUID],
    handling_code: sa.ColumnElement[Any],
) -> tuple[sa.Select[Any], sa.ColumnElement[bool], sa.ColumnElement[bool]]:
    """Outer-join the caller's participation (and its parent's) onto rows of cases.

    Returns the statement and two row-level conditions: `full` (the caller
    sees the case and everything under it) and `visible` (it sees at least
    the case's own fields). Each row costs a primary-key probe of the
    participant table, so a page costs the same at a thousand cases or a
    million, however many cases the caller takes part in.
    """
    own = aliased(Participant)
    stmt = stmt.outerjoin(own, sa.and_(own.case_id == case_id, own.agency_id == p.agency_id))
    full: sa.ColumnElement[bool] = own.agency_id.is_not(None)
    if p.parent_agency_id is not None:
        parent = aliased(Participant)
        stmt = stmt.outerjoin(
            parent, sa.and_(parent.case_id == case_id, parent.agency_id == p.parent_agency_id)
        )
        full = sa.or_(full, sa.and_(handling_code == HandlingCode.amber, parent.agency_id.is_not(None)))
    visible = sa.or_(handling_code.in_(PUBLIC_CODES), full)
    return stmt, full, visible


def level_of(case: Case, own_role: Role | None, parent_takes_part: bool) -> Level | None:
    """Access to one case, given the role of the caller's agency and whether its parent takes part."""
    if own_role is not None:
        return "full"
    if case.handling_code == HandlingCode.amber and parent_takes_part:
        return "full"
    if case.handling_code in PUBLIC_CODES:
        return "summary"
    return None


def _case_access_statement(*, for_update: bool) -> sa.Select[Any]:
    own_role = (
        sa.select(Participant.role)
        .where(Participant.case_id == Case.id, Participant.agency_id == sa.bindparam("agency_id"))
        .scalar_subquery()
    )
    parent_takes_part = _is_participant(Case.id, sa.bindparam("parent_id"))
    stmt = sa.select(Case, own_role, parent_takes_part).where(Case.id == sa.bindparam("case_id"))
    return stmt.with_for_update(of=Case) if for_update else stmt  # type: ignore[arg-type]


# Built once: this lookup runs on every request about a case, and building
# and keying a statement costs more than the database takes to answer it.
_CASE_ACCESS = {flag: _case_access_statement(for_update=flag) for flag in (False, True)}


def case_access(
    session: Session, p: Principal, case_id: uuid.UUID, *, for_update: bool = False
) -> CaseAccess:
    """The case and the caller's access to it; 404 when the caller may not see it.

    One round trip: the caller's role and its parent's participation come
    with the case row.
    """
    row = session.execute(
        _CASE_ACCESS[for_update],
        {"case_id": case_id, "agency_id": p.agency_id, "parent_id": p.parent_agency_id},
    ).first()
    if row is None:
        raise not_found("case")
    case, role, parent_in = row
    role = Role(role) if role is not None else None
    level = level_of(case, role, bool(parent_in))
    if level is None:
        raise not_found("case")
    return CaseAccess(case=case, level=level, role=role)


def readable_case(session: Session, p: Principal, case_id: uuid.UUID) -> Case:
    """A case whose contents the caller may read; 404 otherwise."""
    access = case_access(session, p, case_id)
    if access.level != "full":
        raise not_found("case")
    return access.case


def require_writer(access: CaseAccess, p: Principal) -> None:
    if access.level != "full":
        raise not_found("case")
    if not p.has(Scope.write):
        raise AppError(403, "This action needs the 'write' scope.", slug="forbidden")
    if access.role not in (Role.lead, Role.partner):
        raise forbidden("Only the lead and partner agencies change this case.")


def writable_case(
    session: Session, p: Principal, case_id: uuid.UUID, *, for_update: bool = False
) -> CaseAccess:
    """A case the caller may change (lead or partner with `write`)."""
    access = case_access(session, p, case_id, for_update=for_update)
    require_writer(access, p)
    return access


def require_lead(access: CaseAccess, detail: str) -> None:
    if access.role != Role.lead:
        raise forbidden(detail)


class CaseChild(Protocol):
    id: uuid.UUID
    case_id: uuid.UUID


C = TypeVar("C", bound=CaseChild)


def readable_child(session: Session, p: Principal, model: type[C], child_id: uuid.UUID) -> C:
    """A row under a case (location, seized item, detainee) the caller may read."""
    row = session.get(model, child_id)
    if row is None:
        raise not_found(model.__tablename__)  # type: ignore[attr-defined]
    try:
        readable_case(session, p, row.case_id)
    except AppError as exc:
        raise not_found(model.__tablename__) from exc  # type: ignore[attr-defined]
    return row


def writable_child(
    session: Session, p: Principal, model: type[C], child_id: uuid.UUID
) -> tuple[C, CaseAccess]:
    """A row under a case the caller may change, locked until commit."""
    row = session.get(model, child_id, with_for_update=True)
    if row is None:
        raise not_found(model.__tablename__)  # type: ignore[attr-defined]
    try:
        acc = case_access(session, p, row.case_id)
        if acc.level != "full":
            raise not_found("case")
    except AppError as exc:
        raise not_found(model.__tablename__) from exc  # type: ignore[attr-defined]
    require_writer(acc, p)
    return row, acc
