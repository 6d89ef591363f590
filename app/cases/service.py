import functools
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import Response
from sqlalchemy.orm import Session

from app import access
from app.access import CaseAccess, Level
from app.agencies.models import Agency
from app.auth.service import Principal
from app.cases.models import (
    CASE_ORDER,
    Case,
    CaseCreate,
    CasePublic,
    CaseStatus,
    CaseSummary,
    CaseUpdate,
    CategoryCount,
    HandlingCode,
    origin_of,
    reference_key,
)
from app.core.uow import Statements
from app.crud import add_recorded_sync, delete_recorded_sync, update_recorded_sync
from app.db import utcnow
from app.detainees.models import Detainee
from app.errors import conflict
from app.evidence.models import SeizedItem
from app.http import api_path, created, public, public_json
from app.identifiers.models import Identifier
from app.locations.models import Location
from app.pagination import PageParams, keyset, read_page
from app.participants.models import Participant, Role
from app.types import nfc, require_order


def to_public(case: Case, level: Level) -> CasePublic:
    return public(CasePublic, case, access=level, origin=origin_of(case))


def to_public_json(case: Any, level: Level) -> dict[str, Any]:
    """to_public() of a case row, for the hot reads."""
    return public_json(CasePublic, case, access=level, origin=origin_of(case))


def created_case(case: Case) -> Response:
    """The answer to a case's creation (or import): the caller's agency leads it."""
    return created(to_public(case, "full"), location=api_path("cases", case.id), version=case.version)


def replay_created_case(session: Session, p: Principal, case_id: uuid.UUID) -> Response:
    """The same answer to an Idempotency-Key replay, for the case as the caller sees it now."""
    acc = access.case_access_sync(session, p, case_id)
    return created(
        to_public(acc.case, acc.level), location=api_path("cases", case_id), version=acc.case.version
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


CASE_KEYS = (Case.created_at, Case.id)


@functools.cache
def _list_statement(
    *, with_parent: bool, status: bool, handling_code: bool, q: bool, participant: bool, after: bool
) -> sa.Select[Any]:
    """The case list, one statement per combination of filters (values are bind parameters)."""
    stmt, full, visible = access.with_case_access(
        sa.select(Case), case_id=Case.id, handling_code=Case.handling_code, with_parent=with_parent
    )
    stmt = stmt.add_columns(full.label("full")).where(visible)
    if status:
        stmt = stmt.where(Case.status == sa.bindparam("status"))
    if handling_code:
        stmt = stmt.where(Case.handling_code == sa.bindparam("handling_code"))
    if q:
        pattern = sa.bindparam("pattern", type_=sa.String)
        stmt = stmt.where(Case.search_text.like(pattern, escape="\\"))
    if participant:
        # Who takes part is under the case: a summary reader must not rebuild
        # the participants by filtering, so the filter matches full access only.
        stmt = stmt.where(
            full,
            sa.exists().where(
                Participant.case_id == Case.id,
                Participant.agency_id == Agency.id,
                Agency.code == sa.bindparam("participant"),
            ),
        )
    return keyset(stmt, keys=CASE_KEYS, after=after)


async def list_cases(
    reads: Statements,
    p: Principal,
    params: PageParams,
    *,
    status: CaseStatus | None,
    q: str | None,
    handling_code: HandlingCode | None,
    participant: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = _list_statement(
        with_parent=p.parent_agency_id is not None,
        status=status is not None,
        handling_code=handling_code is not None,
        q=bool(q),
        participant=bool(participant),
        after=bool(params.cursor),
    )
    values = access.principal_params(p) | {
        "status": status,
        "handling_code": handling_code,
        # Text is stored in NFC and searched case-folded: a search spelled otherwise would find nothing.
        "pattern": f"%{_escape_like(nfc(q).casefold())}%" if q else None,
        "participant": participant,
    }
    page, cursor = await read_page(reads, stmt, values, params, scope="cases", keys=CASE_KEYS)
    return [to_public_json(row, "full" if row.full else "summary") for row in page], cursor


def require_reference_free(
    session: Session, lead_agency_id: uuid.UUID, reference: str, *, case_id: uuid.UUID | None = None
) -> None:
    """409 when the lead agency has another case with this reference (up to
    case and Unicode compatibility forms). Only the lead's own cases count:
    another agency's references are never confirmed, whatever their code."""
    stmt = sa.select(Case.id).where(
        Case.lead_agency_id == lead_agency_id, Case.reference_key == reference_key(reference)
    )
    if case_id is not None:
        stmt = stmt.where(Case.id != case_id)
    if session.execute(stmt).first():
        raise conflict(f"Your agency already has a case with reference {reference!r}.")


def create_case(session: Session, p: Principal, data: CaseCreate) -> Case:
    require_reference_free(session, p.agency_id, data.reference)
    now = utcnow()
    case = Case.model_validate(data, update={"lead_agency_id": p.agency_id})
    case.opened_at = case.opened_at or now
    # Both sent were checked by the schema; a default has to agree as well.
    require_order(CASE_ORDER, {"opened_at": case.opened_at, "closed_at": case.closed_at}, {"closed_at"})
    if case.status == CaseStatus.closed and case.closed_at is None:
        case.closed_at = max(now, case.opened_at)
    add_recorded_sync(session, case, p.actor, resource_type="case", case_id=case.id)
    lead = Participant(case_id=case.id, agency_id=p.agency_id, role=Role.lead)
    add_recorded_sync(
        session, lead, p.actor, resource_type="participant", case_id=case.id, resource_id=p.agency_id
    )
    return case


def update_case(session: Session, p: Principal, acc: CaseAccess, data: CaseUpdate) -> Case:
    changes = data.changes(acc.case)
    case = acc.case
    if "handling_code" in changes and changes["handling_code"] != case.handling_code:
        access.require_lead(acc, "Only the lead agency changes the handling code.")
    if "reference" in changes and changes["reference"] != case.reference:
        # The reference is the lead's numbering, and whether it is free tells
        # of the lead's other cases, which a partner may not see.
        access.require_lead(acc, "Only the lead agency changes the reference.")
        require_reference_free(session, case.lead_agency_id, changes["reference"], case_id=case.id)
    if changes.get("status") == CaseStatus.closed and case.closed_at is None:
        opened_at = changes.get("opened_at", case.opened_at)
        changes.setdefault("closed_at", max(utcnow(), opened_at) if opened_at else utcnow())
    update_recorded_sync(session, case, changes, p.actor, resource_type="case", case_id=case.id)
    return case


def delete_case(session: Session, p: Principal, acc: CaseAccess) -> None:
    case = acc.case
    for model in (Location, SeizedItem, Detainee, Identifier):
        if session.execute(sa.select(model.id).where(model.case_id == case.id).limit(1)).first():
            raise conflict(
                "The case still holds locations, seized items, detainees or identifiers; "
                "set its status to 'closed' instead."
            )
    participants = session.execute(sa.select(Participant).where(Participant.case_id == case.id)).scalars()
    for participant in participants.all():
        delete_recorded_sync(
            session,
            participant,
            p.actor,
            resource_type="participant",
            case_id=case.id,
            resource_id=participant.agency_id,
        )
    delete_recorded_sync(session, case, p.actor, resource_type="case", case_id=case.id)


def summarize(session: Session, case: Case) -> CaseSummary:
    locations = session.execute(
        sa.select(sa.func.count()).select_from(Location).where(Location.case_id == case.id)
    ).scalar_one()
    items = session.execute(
        sa.select(
            SeizedItem.category,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(SeizedItem.quantity), 0),
            sa.func.count().filter(SeizedItem.quantity.is_(None)),
        )
        .where(SeizedItem.case_id == case.id)
        .group_by(SeizedItem.category)
    ).all()
    detainees = session.execute(
        sa.select(Detainee.custody_status, sa.func.count())
        .where(Detainee.case_id == case.id)
        .group_by(Detainee.custody_status)
    ).all()
    return CaseSummary(
        case_id=case.id,
        locations=locations,
        seized_items={
            str(cat.value): CategoryCount(items=n, quantity=int(total), unknown_quantity=unknown)
            for cat, n, total, unknown in items
        },
        detainees={str(status.value): n for status, n in detainees},
    )
