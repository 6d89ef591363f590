import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response

from app.auth.deps import Reader, Writer
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once
from app.pagination import Page, PageDep
from app.requests import service
from app.requests.models import (
    InformationRequestCreate,
    InformationRequestPublic,
    InformationRequestUpdate,
    RequestMessageCreate,
    RequestMessagePublic,
    RequestStatus,
)

router = APIRouter(prefix="/requests", tags=["information requests"], route_class=StrictJSONRoute)


@router.get("", response_model=Page[InformationRequestPublic])
def list_requests(
    session: SessionDep,
    p: Reader,
    page: PageDep,
    box: Literal["inbox", "outbox"] | None = None,
    status: RequestStatus | None = None,
) -> Page[InformationRequestPublic]:
    """Requests the caller's agency received (`inbox`), sent (`outbox`), or both."""
    items, cursor = service.list_requests(session, p, page, box=box, status=status)
    return Page(items=[service.to_public(r) for r in items], next_cursor=cursor)


@router.post("", status_code=201, response_model=InformationRequestPublic)
def create_request(
    session: SessionDep, p: Writer, body: InformationRequestCreate, idem: IdempotencyDep
) -> Response:
    def create() -> Response:
        req = service.create_request(session, p, body)
        return created(service.to_public(req), location=api_path("requests", req.id), version=req.version)

    return create_once(session, p, idem, create)


@router.get("/{request_id}", response_model=InformationRequestPublic)
def get_request(
    session: SessionDep, p: Reader, request_id: uuid.UUID, response: Response
) -> InformationRequestPublic:
    req = service.get_request(session, p, request_id)
    with_etag(response, req.version)
    return service.to_public(req)


@router.patch("/{request_id}", response_model=InformationRequestPublic)
def update_request(
    request: Request,
    session: SessionDep,
    p: Writer,
    request_id: uuid.UUID,
    body: InformationRequestUpdate,
    response: Response,
) -> InformationRequestPublic:
    """Move the status: the recipient acknowledges, answers or declines; the sender withdraws."""
    req = service.get_request(session, p, request_id, for_update=True)
    service.require_side(req, p, body.status)
    check_if_match(request, req.version)
    req = service.change_status(session, p, req, body.status)
    with_etag(response, req.version)
    return service.to_public(req)


@router.get("/{request_id}/messages", response_model=Page[RequestMessagePublic])
def list_messages(
    session: SessionDep, p: Reader, request_id: uuid.UUID, page: PageDep
) -> Page[RequestMessagePublic]:
    service.get_request(session, p, request_id)
    items, cursor = service.list_messages(session, request_id, page)
    return Page(items=[RequestMessagePublic.model_validate(m) for m in items], next_cursor=cursor)


@router.post("/{request_id}/messages", status_code=201, response_model=RequestMessagePublic)
def add_message(
    session: SessionDep, p: Writer, request_id: uuid.UUID, body: RequestMessageCreate, idem: IdempotencyDep
) -> Response:
    # Locked so that a message and a withdrawal cannot cross each other.
    req = service.get_request(session, p, request_id, for_update=True)

    def create() -> Response:
        message = service.add_message(session, p, req, body)
        return created(
            RequestMessagePublic.model_validate(message),
            location=api_path("requests", req.id, "messages", message.id),
            version=None,
        )

    return create_once(session, p, idem, create)


@router.get("/{request_id}/messages/{message_id}", response_model=RequestMessagePublic)
def get_message(
    session: SessionDep, p: Reader, request_id: uuid.UUID, message_id: uuid.UUID
) -> RequestMessagePublic:
    service.get_request(session, p, request_id)
    return RequestMessagePublic.model_validate(service.get_message(session, request_id, message_id))
