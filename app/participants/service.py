import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.access import CaseAccess
from app.agencies.models import Agency
from app.agencies.service import require_agencies_sync
from app.auth.service import Principal
from app.crud import add_recorded_sync, delete_recorded_sync, update_recorded_sync
from app.errors import conflict, invalid, not_found
from app.pagination import PageParams, keyset, keyset_params, page_of
from app.participants.models import (
    Participant,
    ParticipantCreate,
    ParticipantPublic,
    ParticipantUpdate,
    Role,
)


def to_public(participant: Participant, agency_code: str) -> ParticipantPublic:
    return ParticipantPublic.model_validate(participant, update={"agency_code": agency_code})


def agency_code(session: Session, agency_id: uuid.UUID) -> str:
    return session.execute(sa.select(Agency.code).where(Agency.id == agency_id)).scalar_one()


def list_participants(
    session: Session, case_id: uuid.UUID, params: PageParams
) -> tuple[list[ParticipantPublic], str | None]:
    scope = f"participants:{case_id}"
    keys = (Participant.agency_id,)
    stmt = keyset(
        sa.select(Participant, Agency.code)
        .join(Agency, Agency.id == Participant.agency_id)
        .where(Participant.case_id == case_id),
        keys=keys,
        after=bool(params.cursor),
    )
    rows = session.execute(stmt, keyset_params(params, scope=scope, keys=keys)).all()
    page, cursor = page_of(rows, params, scope=scope, key_of=lambda r: (r[0].agency_id,))
    return [to_public(part, code) for part, code in page], cursor


def get_participant(
    session: Session, case_id: uuid.UUID, agency_id: uuid.UUID, *, for_update: bool = False
) -> Participant:
    participant = session.get(Participant, (case_id, agency_id), with_for_update=for_update)
    if participant is None:
        raise not_found("participant")
    return participant


def read_participant(session: Session, case_id: uuid.UUID, agency_id: uuid.UUID) -> ParticipantPublic:
    """A participant of a case the caller was found to read."""
    return to_public(get_participant(session, case_id, agency_id), agency_code(session, agency_id))


def add_participant(
    session: Session, p: Principal, acc: CaseAccess, data: ParticipantCreate
) -> ParticipantPublic:
    if data.role == Role.lead:
        raise invalid(["body", "role"], "A case has one lead, the agency that opened it.")
    require_agencies_sync(session, {"agency_id": data.agency_id})
    if session.get(Participant, (acc.case.id, data.agency_id)) is not None:
        raise conflict("This agency already takes part in the case.")
    participant = Participant(case_id=acc.case.id, agency_id=data.agency_id, role=data.role)
    add_recorded_sync(
        session,
        participant,
        p.actor,
        resource_type="participant",
        case_id=acc.case.id,
        resource_id=data.agency_id,
    )
    return to_public(participant, agency_code(session, data.agency_id))


def change_role(
    session: Session, p: Principal, participant: Participant, data: ParticipantUpdate
) -> ParticipantPublic:
    changes = data.changes(participant)
    if participant.role == Role.lead and changes.get("role", Role.lead) != Role.lead:
        raise conflict("The lead's role cannot change.")
    if changes.get("role") == Role.lead and participant.role != Role.lead:
        raise invalid(["body", "role"], "A case has one lead, the agency that opened it.")
    update_recorded_sync(
        session,
        participant,
        changes,
        p.actor,
        resource_type="participant",
        case_id=participant.case_id,
        resource_id=participant.agency_id,
    )
    return to_public(participant, agency_code(session, participant.agency_id))


def remove_participant(session: Session, p: Principal, participant: Participant) -> None:
    if participant.role == Role.lead:
        raise conflict("The lead agency cannot be removed from its case.")
    delete_recorded_sync(
        session,
        participant,
        p.actor,
        resource_type="participant",
        case_id=participant.case_id,
        resource_id=participant.agency_id,
    )
