import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.core.deps import UnitDep
from app.core.http import StrictJSONRoute, api_path, check_if_match, created, deleted, listed, ok
from app.core.pagination import Page, PageDep
from app.idempotency.http import IdempotencyDep, create_once
from app.participants import service
from app.participants.models import ParticipantCreate, ParticipantPublic, ParticipantUpdate

router = APIRouter(prefix="/cases/{case_id}/participants", tags=["participants"], route_class=StrictJSONRoute)

_LEAD_ONLY = "Only the lead agency changes the participants."


@router.get("", response_model=Page[ParticipantPublic], summary="List a case's participants")
async def list_participants(tx: UnitDep, p: Reader, case_id: uuid.UUID, page: PageDep) -> Response:
    """Scope `read`; full access to the case. A case the caller may not see answers 404, exactly as one that
    does not exist.
    """
    await access.readable_case(tx, p, case_id)
    items, cursor = await service.list_participants(tx, case_id, page)
    return listed(items, cursor)


@router.post("", status_code=201, response_model=ParticipantPublic, summary="Add an agency to a case")
async def add_participant(
    tx: UnitDep, p: Writer, case_id: uuid.UUID, body: ParticipantCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; role lead. The role is `partner` or `observer`. Honours `Idempotency-Key`. A case the
    caller may not see answers 404, exactly as one that does not exist.
    """
    acc = await access.writable_case(tx, p, case_id, for_update=True)
    access.require_lead(acc, _LEAD_ONLY)

    def respond(public: ParticipantPublic) -> Response:
        return created(
            public,
            location=api_path("cases", case_id, "participants", public.agency_id),
            version=public.version,
        )

    async def create() -> Response:
        return respond(await service.add_participant(tx, p, acc, body))

    async def replay(agency_id: uuid.UUID) -> Response:
        return respond(await service.read_participant(tx, case_id, agency_id))

    return await create_once(tx, p, idem, create, replay)


@router.get("/{agency_id}", response_model=ParticipantPublic, summary="Read a participant")
async def get_participant(tx: UnitDep, p: Reader, case_id: uuid.UUID, agency_id: uuid.UUID) -> Response:
    """Scope `read`; full access to the case. A case the caller may not see answers 404, exactly as one that
    does not exist.
    """
    await access.readable_case(tx, p, case_id)
    public = await service.read_participant(tx, case_id, agency_id)
    return ok(public, version=public.version)


@router.patch("/{agency_id}", response_model=ParticipantPublic, summary="Change a participant's role")
async def change_role(
    request: Request,
    tx: UnitDep,
    p: access.Editor,
    case_id: uuid.UUID,
    agency_id: uuid.UUID,
    body: ParticipantUpdate,
) -> Response:
    """Scope `write` and scope `read`; role lead. The lead's own role cannot change. Needs `If-Match`. A case
    the caller may not see answers 404, exactly as one that does not exist.
    """
    acc = await access.writable_case(tx, p, case_id)
    access.require_lead(acc, _LEAD_ONLY)
    participant = await service.get_participant(tx, case_id, agency_id, for_update=True)
    check_if_match(request, participant.version)
    public = await service.change_role(tx, p, participant, body)
    return ok(public, version=public.version)


@router.delete("/{agency_id}", status_code=204, summary="Remove an agency from a case")
async def remove_participant(
    request: Request, tx: UnitDep, p: access.Editor, case_id: uuid.UUID, agency_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead. The lead cannot be removed. Needs `If-Match`. A case the
    caller may not see answers 404, exactly as one that does not exist.
    """
    acc = await access.writable_case(tx, p, case_id)
    access.require_lead(acc, _LEAD_ONLY)
    participant = await service.get_participant(tx, case_id, agency_id, for_update=True)
    check_if_match(request, participant.version)
    await service.remove_participant(tx, p, participant)
    return deleted()
