import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response

from app.access import Editor
from app.auth.deps import Reader, Writer
from app.core.deps import UnitDep
from app.core.http import StrictJSONRoute, api_path, check_if_match, created, listed, ok, public
from app.core.pagination import Page, PageDep
from app.core.uow import Row
from app.idempotency.http import IdempotencyDep, create_once
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


@router.get("", response_model=Page[InformationRequestPublic], summary="List information requests")
async def list_requests(
    tx: UnitDep,
    p: Reader,
    page: PageDep,
    box: Literal["inbox", "outbox"] | None = None,
    status: RequestStatus | None = None,
) -> Response:
    """Scope `read`. Requests the caller's agency received (`box=inbox`), sent (`box=outbox`), or both.
    Requests between other agencies are never listed.
    """
    rows, cursor = await service.list_requests(tx, p, page, box=box, status=status)
    return listed([service.to_public(r) for r in rows], cursor)


@router.post(
    "", status_code=201, response_model=InformationRequestPublic, summary="Send an information request"
)
async def create_request(
    tx: UnitDep, p: Writer, body: InformationRequestCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`. From the caller's agency to another, optionally about a case the sender can read (else
    422, whether the case is hidden or missing). An agency of a peer instance only in a case that instance
    mirrors (else 422: it would never see the request). `due_at` defaults to 8 hours for `urgent` and 7
    days for `normal`. Honours `Idempotency-Key`.
    """

    def respond(req: Row) -> Response:
        return created(service.to_public(req), location=api_path("requests", req.id), version=req.version)

    async def create() -> Response:
        return respond(await service.create_request(tx, p, body))

    async def replay(request_id: uuid.UUID) -> Response:
        return respond(await service.get_request(tx, p, request_id))

    return await create_once(tx, p, idem, create, replay)


@router.get("/{request_id}", response_model=InformationRequestPublic, summary="Read an information request")
async def get_request(tx: UnitDep, p: Reader, request_id: uuid.UUID) -> Response:
    """Scope `read`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    req = await service.get_request(tx, p, request_id)
    return ok(service.to_public(req), version=req.version)


@router.patch("/{request_id}", response_model=InformationRequestPublic, summary="Move a request's status")
async def update_request(
    request: Request, tx: UnitDep, p: Editor, request_id: uuid.UUID, body: InformationRequestUpdate
) -> Response:
    """Scope `write` and scope `read`. The recipient moves `sent -> acknowledged -> answered | declined`;
    the sender moves `sent | acknowledged -> withdrawn`. Another move is 409, the other side's move 403.
    Needs `If-Match`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    req = await service.get_request(tx, p, request_id, for_update=True)
    service.require_side(req, p, body.status)
    check_if_match(request, req.version)
    req = await service.change_status(tx, p, req, body.status)
    return ok(service.to_public(req), version=req.version)


@router.get(
    "/{request_id}/messages", response_model=Page[RequestMessagePublic], summary="List a request's messages"
)
async def list_messages(tx: UnitDep, p: Reader, request_id: uuid.UUID, page: PageDep) -> Response:
    """Scope `read`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    await service.get_request(tx, p, request_id)
    rows, cursor = await service.list_messages(tx, request_id, page)
    return listed([public(RequestMessagePublic, m) for m in rows], cursor)


@router.post(
    "/{request_id}/messages",
    status_code=201,
    response_model=RequestMessagePublic,
    summary="Add a message to a request",
)
async def add_message(
    tx: UnitDep, p: Writer, request_id: uuid.UUID, body: RequestMessageCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; either agency of the request. Takes the Europol 4x4 codes; a withdrawn request takes
    no more messages (409). Honours `Idempotency-Key`. Only the two agencies see a request: to any other it
    answers 404, exactly as one that does not exist.
    """
    # Locked so that a message and a withdrawal cannot cross each other.
    req = await service.get_request(tx, p, request_id, for_update=True)

    def respond(message: Row) -> Response:
        return created(
            public(RequestMessagePublic, message),
            location=api_path("requests", req.id, "messages", message.id),
            version=None,
        )

    async def create() -> Response:
        return respond(await service.add_message(tx, p, req, body))

    async def replay(message_id: uuid.UUID) -> Response:
        return respond(await service.get_message(tx, req.id, message_id))

    return await create_once(tx, p, idem, create, replay)


@router.get(
    "/{request_id}/messages/{message_id}",
    response_model=RequestMessagePublic,
    summary="Read one message of a request",
)
async def get_message(tx: UnitDep, p: Reader, request_id: uuid.UUID, message_id: uuid.UUID) -> Response:
    """Scope `read`. Only the two agencies see a request: to any other it answers 404, exactly as one that
    does not exist.
    """
    await service.get_request(tx, p, request_id)
    return ok(public(RequestMessagePublic, await service.get_message(tx, request_id, message_id)))
