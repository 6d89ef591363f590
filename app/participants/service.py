"""Which agencies take part in a case, and in which role. Only the lead
changes them (the routers check); a role change or removal works on the
participant row the router locked FOR UPDATE (get_participant()), so that
a write already checked against the old role commits first
(access._holding_participation())."""

import uuid
from typing import Any

import sqlalchemy as sa

from app.access import CaseAccess
from app.agencies.models import Agency
from app.auth.service import Principal
from app.core.crud import row_type
from app.core.db import new_row, table_of, utcnow
from app.core.errors import conflict, invalid, not_found
from app.core.http import public
from app.core.journal import Change
from app.core.pagination import PageParams, keyset, read_page
from app.core.uow import Row, Statements, Tx
from app.participants.models import (
    Participant,
    ParticipantCreate,
    ParticipantPublic,
    ParticipantUpdate,
    Role,
)

PARTICIPANTS = table_of(Participant)
AGENCIES = table_of(Agency)
KEYS = (PARTICIPANTS.c.agency_id,)
# One participant, by the values of _this(). Not named after the columns:
# an UPDATE keeps those names for the values it sets.
_THIS = sa.and_(
    PARTICIPANTS.c.case_id == sa.bindparam("this_case"),
    PARTICIPANTS.c.agency_id == sa.bindparam("this_agency"),
)


def _this(case_id: uuid.UUID, agency_id: uuid.UUID) -> dict[str, uuid.UUID]:
    return {"this_case": case_id, "this_agency": agency_id}


def to_public(participant: Row) -> ParticipantPublic:
    """The public view of a row of _PARTICIPANT (its columns and `agency_code`)."""
    return public(ParticipantPublic, participant)


def _with_agency_code(stmt: sa.Select[Any]) -> sa.Select[Any]:
    return stmt.add_columns(AGENCIES.c.code.label("agency_code")).join(
        AGENCIES, AGENCIES.c.id == PARTICIPANTS.c.agency_id
    )


_LIST = {
    after: keyset(
        _with_agency_code(sa.select(PARTICIPANTS)).where(PARTICIPANTS.c.case_id == sa.bindparam("case_id")),
        keys=KEYS,
        after=after,
    )
    for after in (False, True)
}


def _participant_statement(*, for_update: bool) -> sa.Select[Any]:
    stmt = _with_agency_code(sa.select(PARTICIPANTS)).where(_THIS)
    # The participant row only: the agency's stays free for others.
    return stmt.with_for_update(of=PARTICIPANTS) if for_update else stmt


_PARTICIPANT = {flag: _participant_statement(for_update=flag) for flag in (False, True)}


async def list_participants(
    db: Statements, case_id: uuid.UUID, params: PageParams
) -> tuple[list[ParticipantPublic], str | None]:
    """A page of the participants of a case the caller was found to read."""
    stmt = _LIST[bool(params.cursor)]
    scope = f"participants:{case_id}"
    rows, cursor = await read_page(db, stmt, {"case_id": case_id}, params, scope=scope, keys=KEYS)
    return [to_public(row) for row in rows], cursor


async def get_participant(
    db: Statements, case_id: uuid.UUID, agency_id: uuid.UUID, *, for_update: bool = False
) -> Row:
    """A participant (its columns and `agency_code`), with `for_update` locked until commit; 404 if none."""
    participant = await db.first(_PARTICIPANT[for_update], _this(case_id, agency_id))
    if participant is None:
        raise not_found("participant")
    return participant


async def read_participant(db: Statements, case_id: uuid.UUID, agency_id: uuid.UUID) -> ParticipantPublic:
    """A participant of a case the caller was found to read."""
    return to_public(await get_participant(db, case_id, agency_id))


# The agency's code, and whether it already takes part in the case.
_JOINING = sa.select(
    AGENCIES.c.code,
    sa.exists()
    .where(PARTICIPANTS.c.case_id == sa.bindparam("this_case"), PARTICIPANTS.c.agency_id == AGENCIES.c.id)
    .label("takes_part"),
).where(AGENCIES.c.id == sa.bindparam("this_agency"))


async def add_participant(
    tx: Tx, p: Principal, acc: CaseAccess, data: ParticipantCreate
) -> ParticipantPublic:
    """Add an agency to the case (acc.case, locked by the caller: additions come one at a time)."""
    if data.role == Role.lead:
        raise invalid(["body", "role"], "A case has one lead, the agency that opened it.")
    joining = await tx.first(_JOINING, _this(acc.case.id, data.agency_id))
    if joining is None:  # as app.agencies.service.require_agencies() answers
        raise invalid(["body", "agency_id"], "No agency with this id.")
    if joining.takes_part:
        raise conflict("This agency already takes part in the case.")
    row = new_row(Participant, case_id=acc.case.id, agency_id=data.agency_id, role=data.role)
    await tx.insert([(PARTICIPANTS, [row])])
    tx.changes.append(Change.created(p.actor, "participant", data.agency_id, acc.case.id))
    return public(ParticipantPublic, row_type(PARTICIPANTS)(**row), agency_code=joining.code)


_CHANGE_ROLE = (
    sa.update(PARTICIPANTS)
    .where(_THIS)
    .values(
        role=sa.bindparam("v_role", type_=PARTICIPANTS.c.role.type),
        version=PARTICIPANTS.c.version + 1,
        updated_at=sa.bindparam("v_updated_at", type_=PARTICIPANTS.c.updated_at.type),
    )
)


async def change_role(tx: Tx, p: Principal, participant: Row, data: ParticipantUpdate) -> ParticipantPublic:
    """Change the role of `participant` (a row of get_participant(for_update=True)
    whose If-Match the caller checked). The same role again is no change: the
    row keeps its version and nothing is recorded."""
    changes = data.changes(participant)
    if participant.role == Role.lead and changes.get("role", Role.lead) != Role.lead:
        raise conflict("The lead's role cannot change.")
    if changes.get("role") == Role.lead and participant.role != Role.lead:
        raise invalid(["body", "role"], "A case has one lead, the agency that opened it.")
    role = changes.get("role", participant.role)
    if role == participant.role:
        return to_public(participant)
    at = utcnow()
    this = _this(participant.case_id, participant.agency_id)
    await tx.execute(_CHANGE_ROLE, this | {"v_role": role, "v_updated_at": at})
    tx.changes.append(
        Change(p.actor, "participant.updated", "participant", participant.agency_id, participant.case_id)
    )
    return to_public(participant._replace(role=role, version=participant.version + 1, updated_at=at))


_REMOVE = sa.delete(PARTICIPANTS).where(_THIS)


async def remove_participant(tx: Tx, p: Principal, participant: Row) -> None:
    """Remove `participant` (a row of get_participant(for_update=True) whose If-Match the caller checked)."""
    if participant.role == Role.lead:
        raise conflict("The lead agency cannot be removed from its case.")
    await tx.execute(_REMOVE, _this(participant.case_id, participant.agency_id))
    tx.changes.append(
        Change(p.actor, "participant.deleted", "participant", participant.agency_id, participant.case_id)
    )
