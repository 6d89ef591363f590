import functools
import uuid
from typing import Any

import sqlalchemy as sa

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
    derived_columns,
    origin_of,
    reference_key,
)
from app.core.crud import delete_recorded, row_type, update_recorded
from app.core.db import new_row, table_of, utcnow
from app.core.errors import conflict
from app.core.http import public, public_json
from app.core.journal import Change
from app.core.pagination import PageParams, keyset, read_page
from app.core.types import nfc, require_order
from app.core.uow import Row, Statements, Tx
from app.detainees.models import Detainee
from app.evidence.models import SeizedItem
from app.identifiers.models import Identifier
from app.locations.models import Location
from app.participants.models import Participant, Role

CASES = table_of(Case)
PARTICIPANTS = table_of(Participant)
AGENCIES = table_of(Agency)


def to_public(case: Any, level: Level) -> CasePublic:
    """The public view of a case row (a row of its columns, or a Case)."""
    return public(CasePublic, case, access=level, origin=origin_of(case))


def to_public_json(case: Any, level: Level) -> dict[str, Any]:
    """to_public() as the dict a page is written from (app.core.http.public_json)."""
    return public_json(CasePublic, case, access=level, origin=origin_of(case))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


CASE_KEYS = (CASES.c.created_at, CASES.c.id)


@functools.cache
def _list_statement(
    *, with_parent: bool, status: bool, handling_code: bool, q: bool, participant: bool, after: bool
) -> sa.Select[Any]:
    """The case list, one statement per combination of filters (values are bind parameters)."""
    stmt, full, visible = access.with_case_access(
        sa.select(CASES), case_id=CASES.c.id, handling_code=CASES.c.handling_code, with_parent=with_parent
    )
    stmt = stmt.add_columns(full.label("full")).where(visible)
    if status:
        stmt = stmt.where(CASES.c.status == sa.bindparam("status"))
    if handling_code:
        stmt = stmt.where(CASES.c.handling_code == sa.bindparam("handling_code"))
    if q:
        pattern = sa.bindparam("pattern", type_=sa.String)
        stmt = stmt.where(CASES.c.search_text.like(pattern, escape="\\"))
    if participant:
        # Who takes part is under the case: a summary reader must not rebuild
        # the participants by filtering, so the filter matches full access only.
        stmt = stmt.where(
            full,
            sa.exists().where(
                PARTICIPANTS.c.case_id == CASES.c.id,
                PARTICIPANTS.c.agency_id == AGENCIES.c.id,
                AGENCIES.c.code == sa.bindparam("participant"),
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


def _reference_taken_statement(*, other_than: bool) -> sa.Select[Any]:
    stmt = sa.select(CASES.c.id).where(
        CASES.c.lead_agency_id == sa.bindparam("lead_agency_id"),
        CASES.c.reference_key == sa.bindparam("reference_key"),
    )
    if other_than:
        stmt = stmt.where(CASES.c.id != sa.bindparam("case_id"))
    return stmt.limit(1)


_REFERENCE_TAKEN = {flag: _reference_taken_statement(other_than=flag) for flag in (False, True)}


async def require_reference_free(
    db: Statements, lead_agency_id: uuid.UUID, reference: str, *, case_id: uuid.UUID | None = None
) -> None:
    """409 when the lead agency has another case with this reference (up to
    case and Unicode compatibility forms). Only the lead's own cases count:
    another agency's references are never confirmed, whatever their code."""
    values = {"lead_agency_id": lead_agency_id, "reference_key": reference_key(reference)}
    if case_id is not None:
        values["case_id"] = case_id
    if await db.first(_REFERENCE_TAKEN[case_id is not None], values):
        raise conflict(f"Your agency already has a case with reference {reference!r}.")


async def create_case(tx: Tx, p: Principal, data: CaseCreate) -> Row:
    """The case, led by the caller's agency: the case and its lead's
    participation inserted in one statement, each change recorded."""
    await require_reference_free(tx, p.agency_id, data.reference)
    now = utcnow()
    values = data.model_dump()
    opened_at = values["opened_at"] or now
    closed_at = values["closed_at"]
    # Both sent were checked by the schema; a default has to agree as well.
    require_order(CASE_ORDER, {"opened_at": opened_at, "closed_at": closed_at}, {"closed_at"})
    if values["status"] == CaseStatus.closed and closed_at is None:
        closed_at = max(now, opened_at)
    values |= {"lead_agency_id": p.agency_id, "opened_at": opened_at, "closed_at": closed_at}
    case = new_row(Case, **values, **derived_columns(data.reference, data.title, data.summary))
    lead = new_row(Participant, case_id=case["id"], agency_id=p.agency_id, role=Role.lead)
    await tx.insert([(CASES, [case]), (PARTICIPANTS, [lead])])
    tx.changes.extend(
        [
            Change.created(p.actor, "case", case["id"], case["id"]),
            Change.created(p.actor, "participant", p.agency_id, case["id"]),
        ]
    )
    return row_type(CASES)(**case)


_DERIVED_FROM = ("reference", "title", "summary")


async def update_case(tx: Tx, p: Principal, acc: CaseAccess, data: CaseUpdate) -> Row:
    """Apply `data` to the case (acc.case: a row the caller locked and whose
    If-Match it checked); the case as it is now."""
    changes = data.changes(acc.case)
    case = acc.case
    if "handling_code" in changes and changes["handling_code"] != case.handling_code:
        access.require_lead(acc, "Only the lead agency changes the handling code.")
    if "share_personal_data" in changes and changes["share_personal_data"] != case.share_personal_data:
        # Where personal data goes is the lead's decision, like the handling code.
        access.require_lead(acc, "Only the lead agency decides whether personal data is shared.")
    if "reference" in changes and changes["reference"] != case.reference:
        # The reference is the lead's numbering, and whether it is free tells
        # of the lead's other cases, which a partner may not see.
        access.require_lead(acc, "Only the lead agency changes the reference.")
        await require_reference_free(tx, case.lead_agency_id, changes["reference"], case_id=case.id)
    if changes.get("status") == CaseStatus.closed and case.closed_at is None:
        opened_at = changes.get("opened_at", case.opened_at)
        changes.setdefault("closed_at", max(utcnow(), opened_at) if opened_at else utcnow())
    if any(name in changes and changes[name] != getattr(case, name) for name in _DERIVED_FROM):
        changes |= derived_columns(*(changes.get(name, getattr(case, name)) for name in _DERIVED_FROM))
    return await update_recorded(tx, Case, case, changes, p.actor, resource_type="case", case_id=case.id)


def _holds_anything_statement() -> sa.Select[Any]:
    held = [
        sa.exists().where(table_of(model).c.case_id == sa.bindparam("case_id"))
        for model in (Location, SeizedItem, Detainee, Identifier)
    ]
    return sa.select(sa.or_(*held).label("holds"))


_HOLDS_ANYTHING = _holds_anything_statement()
_PARTICIPANTS_OF = (
    sa.select(PARTICIPANTS.c.agency_id)
    .where(PARTICIPANTS.c.case_id == sa.bindparam("case_id"))
    .order_by(PARTICIPANTS.c.created_at, PARTICIPANTS.c.agency_id)
)
_DELETE_PARTICIPANTS = sa.delete(PARTICIPANTS).where(PARTICIPANTS.c.case_id == sa.bindparam("case_id"))


async def delete_case(tx: Tx, p: Principal, acc: CaseAccess) -> None:
    """Delete an empty case (acc.case, locked by the caller) and its
    participants, each participation's end recorded before the case's."""
    case = acc.case
    this = {"case_id": case.id}
    if await tx.scalar(_HOLDS_ANYTHING, this):
        raise conflict(
            "The case still holds locations, seized items, detainees or identifiers; "
            "set its status to 'closed' instead."
        )
    agencies = [row.agency_id for row in await tx.all(_PARTICIPANTS_OF, this)]
    await tx.execute(_DELETE_PARTICIPANTS, this)
    tx.changes.extend(Change(p.actor, "participant.deleted", "participant", a, case.id) for a in agencies)
    await delete_recorded(tx, Case, case, p.actor, resource_type="case", case_id=case.id)


LOCATIONS = table_of(Location)
SEIZED_ITEMS = table_of(SeizedItem)
DETAINEES = table_of(Detainee)

_LOCATIONS_COUNTED = sa.select(sa.func.count().label("n")).where(
    LOCATIONS.c.case_id == sa.bindparam("case_id")
)
_ITEMS_COUNTED = (
    sa.select(
        SEIZED_ITEMS.c.category,
        sa.func.count().label("n"),
        sa.func.coalesce(sa.func.sum(SEIZED_ITEMS.c.quantity), 0).label("total"),
        sa.func.count().filter(SEIZED_ITEMS.c.quantity.is_(None)).label("unknown"),
    )
    .where(SEIZED_ITEMS.c.case_id == sa.bindparam("case_id"))
    .group_by(SEIZED_ITEMS.c.category)
)
_DETAINEES_COUNTED = (
    sa.select(DETAINEES.c.custody_status, sa.func.count().label("n"))
    .where(DETAINEES.c.case_id == sa.bindparam("case_id"))
    .group_by(DETAINEES.c.custody_status)
)


async def summarize(db: Statements, case: Row) -> CaseSummary:
    """What a case (a row the caller reads in full) holds, counted."""
    this = {"case_id": case.id}
    locations = await db.scalar(_LOCATIONS_COUNTED, this)
    items = await db.all(_ITEMS_COUNTED, this)
    detainees = await db.all(_DETAINEES_COUNTED, this)
    return CaseSummary(
        case_id=case.id,
        locations=locations,
        seized_items={
            str(cat.value): CategoryCount(items=n, quantity=int(total), unknown_quantity=unknown)
            for cat, n, total, unknown in items
        },
        detainees={str(status.value): n for status, n in detainees},
    )
