import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response

from app.access import Editor
from app.auth.deps import Reader, Writer
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once_sync
from app.pagination import Page, PageDep
from app.requests import service
from app.requests.models import (
    InformationRequest,
    InformationRequestCreate,
    InformationRequestPublic,
    InformationRequestUpdate,
    RequestMessage,
    RequestMessageCreate,
    RequestMessagePublic,
    RequestStatus,
)

router = APIRouter(prefix="/requests", tags=["information requests"], route_class=StrictJSONRoute)


@router.get("", response_model=Page[InformationRequestPublic], summary="List information requests")
def list_requests(
    session: SessionDep,
    p: Reader,
    page: PageDep,
    box: Literal["inbox", "outbox"] | None = None,
    status: RequestStatus | None = None,
) -> Page[InformationRequestPublic]:
    """Scope `read`. Requests the caller's agency received (`box=inbox`), sent (`box=outbox`), or both.
    Requests between other agencies are never listed.
    """
    items, cursor = service.list_requests(session, p, page, box=box, status=status)
    return Page(items=[service.to_public(r) for r in items], next_cursor=cursor)


@router.post(
    "", status_code=201, response_model=InformationRequestPublic, summary="Send an information request"
)
def create_request(
    session: SessionDep, p: Writer, body: InformationRequestCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`. From the caller's agency to another, optionally about a case the sender can read (else
    422, whether the case is hidden or missing). `due_at` defaults to 8 hours for `urgent` and 7 days for
    `normal`. Honours `Idempotency-Key`.
    """

    def respond(req: InformationRequest) -> Response:
        return created(service.to_public(req), location=api_path("requests", req.id), version=req.version)

    return create_once_sync(
        session,
        p,
        idem,
        lambda: respond(service.create_request(session, p, body)),
        lambda request_id: respond(service.get_request(session, p, request_id)),
    )


@router.get("/{request_id}", response_model=InformationRequestPublic, summary="Read an information request")
def get_request(
    session: SessionDep, p: Reader, request_id: uuid.UUID, response: Response
) -> InformationRequestPublic:
    """Scope `read`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    req = service.get_request(session, p, request_id)
    with_etag(response, req.version)
    return service.to_public(req)


@router.patch("/{request_id}", response_model=InformationRequestPublic, summary="Move a request's status")
def update_request(
    request: Request,
    session: SessionDep,
    p: Editor,
    request_id: uuid.UUID,
    body: InformationRequestUpdate,
    response: Response,
) -> InformationRequestPublic:
    """Scope `write` and scope `read`. The recipient moves `sent -> acknowledged -> answered | declined`;
    the sender moves `sent | acknowledged -> withdrawn`. Another move is 409, the other side's move 403.
    Needs `If-Match`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    req = service.get_request(session, p, request_id, for_update=True)
    service.require_side(req, p, body.status)
    check_if_match(request, req.version)
    req = service.change_status(session, p, req, body.status)
    with_etag(response, req.version)
    return service.to_public(req)


@router.get(
    "/{request_id}/messages", response_model=Page[RequestMessagePublic], summary="List a request's messages"
)
def list_messages(
    session: SessionDep, p: Reader, request_id: uuid.UUID, page: PageDep
) -> Page[RequestMessagePublic]:
    """Scope `read`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    service.get_request(session, p, request_id)
    items, cursor = service.list_messages(session, request_id, page)
    return Page(items=[RequestMessagePublic.model_validate(m) for m in items], next_cursor=cursor)


@router.post(
    "/{request_id}/messages",
    status_code=201,
    response_model=RequestMessagePublic,
    summary="Add a message to a request",
)
def add_message(
    session: SessionDep, p: Writer, request_id: uuid.UUID, body: RequestMessageCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; either agency of the request. Takes the Europol 4x4 codes; a withdrawn request takes
    no more messages (409). Honours `Idempotency-Key`. Only the two agencies see a request: to any other it
    answers 404, exactly as one that does not exist.
    """
    # Locked so that a message and a withdrawal cannot cross each other.
    req = service.get_request(session, p, request_id, for_update=True)

    def respond(message: RequestMessage) -> Response:
        return created(
            RequestMessagePublic.model_validate(message),
            location=api_path("requests", req.id, "messages", message.id),
            version=None,
        )

    return create_once_sync(
        session,
        p,
        idem,
        lambda: respond(service.add_message(session, p, req, body)),
        lambda message_id: respond(service.get_message(session, req.id, message_id)),
    )


@router.get(
    "/{request_id}/messages/{message_id}",
    response_model=RequestMessagePublic,
    summary="Read one message of a request",
)
def get_message(
    session: SessionDep, p: Reader, request_id: uuid.UUID, message_id: uuid.UUID
) -> RequestMessagePublic:
    """Scope `read`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    service.get_request(session, p, request_id)
    return RequestMessagePublic.model_validate(service.get_message(session, request_id, message_id))
