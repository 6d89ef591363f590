import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once_sync
from app.pagination import Page, PageDep
from app.participants import service
from app.participants.models import ParticipantCreate, ParticipantPublic, ParticipantUpdate

router = APIRouter(prefix="/cases/{case_id}/participants", tags=["participants"], route_class=StrictJSONRoute)

_LEAD_ONLY = "Only the lead agency changes the participants."


@router.get("", response_model=Page[ParticipantPublic], summary="List a case's participants")
def list_participants(
    session: SessionDep, p: Reader, case_id: uuid.UUID, page: PageDep
) -> Page[ParticipantPublic]:
    """Scope `read`; full access to the case. A case the caller may not see answers 404, exactly as one that
    does not exist.
    """
    access.readable_case_sync(session, p, case_id)
    items, cursor = service.list_participants(session, case_id, page)
    return Page(items=items, next_cursor=cursor)


@router.post("", status_code=201, response_model=ParticipantPublic, summary="Add an agency to a case")
def add_participant(
    session: SessionDep, p: Writer, case_id: uuid.UUID, body: ParticipantCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; role lead. The role is `partner` or `observer`. Honours `Idempotency-Key`. A case the
    caller may not see answers 404, exactly as one that does not exist.
    """
    acc = access.writable_case_sync(session, p, case_id, for_update=True)
    access.require_lead(acc, _LEAD_ONLY)

    def respond(public: ParticipantPublic) -> Response:
        return created(
            public,
            location=api_path("cases", case_id, "participants", public.agency_id),
            version=public.version,
        )

    return create_once_sync(
        session,
        p,
        idem,
        lambda: respond(service.add_participant(session, p, acc, body)),
        lambda agency_id: respond(service.read_participant(session, case_id, agency_id)),
    )


@router.get("/{agency_id}", response_model=ParticipantPublic, summary="Read a participant")
def get_participant(
    session: SessionDep, p: Reader, case_id: uuid.UUID, agency_id: uuid.UUID, response: Response
) -> ParticipantPublic:
    """Scope `read`; full access to the case. A case the caller may not see answers 404, exactly as one that
    does not exist.
    """
    access.readable_case_sync(session, p, case_id)
    public = service.read_participant(session, case_id, agency_id)
    with_etag(response, public.version)
    return public


@router.patch("/{agency_id}", response_model=ParticipantPublic, summary="Change a participant's role")
def change_role(
    request: Request,
    session: SessionDep,
    p: access.Editor,
    case_id: uuid.UUID,
    agency_id: uuid.UUID,
    body: ParticipantUpdate,
    response: Response,
) -> ParticipantPublic:
    """Scope `write` and scope `read`; role lead. The lead's own role cannot change. Needs `If-Match`. A case
    the caller may not see answers 404, exactly as one that does not exist.
    """
    acc = access.writable_case_sync(session, p, case_id)
    access.require_lead(acc, _LEAD_ONLY)
    participant = service.get_participant(session, case_id, agency_id, for_update=True)
    check_if_match(request, participant.version)
    public = service.change_role(session, p, participant, body)
    with_etag(response, public.version)
    return public


@router.delete("/{agency_id}", status_code=204, summary="Remove an agency from a case")
def remove_participant(
    request: Request, session: SessionDep, p: access.Editor, case_id: uuid.UUID, agency_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead. The lead cannot be removed. Needs `If-Match`. A case the
    caller may not see answers 404, exactly as one that does not exist.
    """
    acc = access.writable_case_sync(session, p, case_id)
    access.require_lead(acc, _LEAD_ONLY)
    participant = service.get_participant(session, case_id, agency_id, for_update=True)
    check_if_match(request, participant.version)
    service.remove_participant(session, p, participant)
    return Response(status_code=204)
