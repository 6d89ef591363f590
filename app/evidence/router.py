import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.db import SessionDep
from app.errors import not_found
from app.evidence import service
from app.evidence.models import (
    Category,
    CustodyEventCreate,
    CustodyEventPublic,
    SeizedItem,
    SeizedItemCreate,
    SeizedItemPublic,
    SeizedItemUpdate,
)
from app.http import StrictJSONRoute, api_path, check_if_match, created, ok, public, with_etag
from app.idempotency.service import IdempotencyDep, create_once
from app.pagination import Page, PageDep
from app.reads import ReadsDep

router = APIRouter(tags=["seized items"], route_class=StrictJSONRoute)


@router.get("/cases/{case_id}/seized-items", response_model=Page[SeizedItemPublic])
async def list_items(
    reads: ReadsDep, p: Reader, case_id: uuid.UUID, page: PageDep, category: Category | None = None
) -> Response:
    await access.read_readable_case(reads, p, case_id)
    items, cursor = await service.list_items(reads, case_id, page, category=category)
    return ok(Page(items=[public(SeizedItemPublic, x) for x in items], next_cursor=cursor))


@router.post("/cases/{case_id}/seized-items", status_code=201, response_model=SeizedItemPublic)
def create_item(
    session: SessionDep, p: Writer, case_id: uuid.UUID, body: SeizedItemCreate, idem: IdempotencyDep
) -> Response:
    access.writable_case(session, p, case_id)

    def create() -> Response:
        item = service.create_item(session, p, case_id, body)
        return created(
            public(SeizedItemPublic, item),
            location=api_path("seized-items", item.id),
            version=item.version,
        )

    return create_once(session, p, idem, create)


@router.get("/seized-items/{item_id}", response_model=SeizedItemPublic)
def get_item(session: SessionDep, p: Reader, item_id: uuid.UUID) -> Response:
    item = access.readable_child(session, p, SeizedItem, item_id)
    return ok(public(SeizedItemPublic, item), version=item.version)


@router.patch("/seized-items/{item_id}", response_model=SeizedItemPublic)
def update_item(
    request: Request,
    session: SessionDep,
    p: Writer,
    item_id: uuid.UUID,
    body: SeizedItemUpdate,
    response: Response,
) -> SeizedItemPublic:
    item, _ = access.writable_child(session, p, SeizedItem, item_id)
    check_if_match(request, item.version)
    item = service.update_item(session, p, item, body)
    with_etag(response, item.version)
    return SeizedItemPublic.model_validate(item)


@router.delete("/seized-items/{item_id}", status_code=204)
def delete_item(request: Request, session: SessionDep, p: Writer, item_id: uuid.UUID) -> Response:
    item, _ = access.writable_child(session, p, SeizedItem, item_id)
    check_if_match(request, item.version)
    service.delete_item(session, p, item)
    return Response(status_code=204)


@router.get(
    "/seized-items/{item_id}/custody", response_model=Page[CustodyEventPublic], tags=["chain of custody"]
)
def custody_chain(
    session: SessionDep, p: Reader, item_id: uuid.UUID, page: PageDep
) -> Page[CustodyEventPublic]:
    access.readable_child(session, p, SeizedItem, item_id)
    events, cursor = service.custody_chain(session, item_id, page)
    return Page(items=[CustodyEventPublic.model_validate(e) for e in events], next_cursor=cursor)


@router.post(
    "/seized-items/{item_id}/custody",
    status_code=201,
    response_model=CustodyEventPublic,
    tags=["chain of custody"],
)
def add_custody_event(
    session: SessionDep,
    p: Writer,
    item_id: uuid.UUID,
    body: CustodyEventCreate,
    idem: IdempotencyDep,
) -> Response:
    item, _ = access.writable_child(session, p, SeizedItem, item_id)

    def create() -> Response:
        event = service.add_custody_event(session, p, item, body)
        return created(
            CustodyEventPublic.model_validate(event),
            location=api_path("seized-items", item.id, "custody", event.id),
            version=None,
        )

    return create_once(session, p, idem, create)


@router.get(
    "/seized-items/{item_id}/custody/{event_id}", response_model=CustodyEventPublic, tags=["chain of custody"]
)
def get_custody_event(
    session: SessionDep, p: Reader, item_id: uuid.UUID, event_id: uuid.UUID
) -> CustodyEventPublic:
    access.readable_child(session, p, SeizedItem, item_id)
    event = service.get_custody_event(session, item_id, event_id)
    if event is None:
        raise not_found("custody event")
    return CustodyEventPublic.model_validate(event)
