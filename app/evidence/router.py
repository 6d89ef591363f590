import uuid
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.core.binder import HotRoute, hot
from app.core.deps import DatabaseDep, UnitDep
from app.core.http import api_path, check_if_match, created, deleted, listed, ok, public, public_json
from app.core.pagination import Page, PageDep
from app.core.uow import Row, Tx
from app.evidence import service
from app.evidence.models import (
    Category,
    CustodyEventCreate,
    CustodyEventPublic,
    SeizedItemCreate,
    SeizedItemPublic,
    SeizedItemUpdate,
)
from app.idempotency.http import IdempotencyDep, create_once

router = APIRouter(tags=["seized items"], route_class=HotRoute)
SEIZED_ITEMS = service.SEIZED_ITEMS


@router.get(
    "/cases/{case_id}/seized-items",
    response_model=Page[SeizedItemPublic],
    summary="List a case's seized items",
)
@hot
async def list_items(
    reads: DatabaseDep, p: Reader, case_id: uuid.UUID, page: PageDep, category: Category | None = None
) -> Response:
    """Scope `read`; full access to the case. Filter by `category`. A case the caller may not see answers
    404, exactly as one that does not exist.
    """
    items, cursor = await service.list_items(reads, p, case_id, page, category=category)
    return listed([public_json(SeizedItemPublic, x) for x in items], cursor)


@router.post(
    "/cases/{case_id}/seized-items",
    status_code=201,
    response_model=SeizedItemPublic,
    summary="Record a seized item",
)
async def create_item(
    db: DatabaseDep, p: Writer, case_id: uuid.UUID, body: SeizedItemCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; role lead or partner. The seizure becomes the first event of the item's chain of
    custody. Honours `Idempotency-Key`. A case the caller may not see answers 404, exactly as one that does
    not exist.
    """

    def respond(item: Any) -> Response:
        return created(
            public(SeizedItemPublic, item),
            location=api_path("seized-items", item.id),
            version=item.version,
        )

    async def work(tx: Tx) -> Response:
        await access.writable_case(tx, p, case_id)

        async def create() -> Response:
            return respond(SimpleNamespace(**await service.create_item(tx, p, case_id, body)))

        async def replay(item_id: uuid.UUID) -> Response:
            return respond(await access.readable_child(tx, p, SEIZED_ITEMS, item_id))

        return await create_once(tx, p, idem, create, replay)

    return await db.run(work)


@router.get("/seized-items/{item_id}", response_model=SeizedItemPublic, summary="Read a seized item")
async def get_item(tx: UnitDep, p: Reader, item_id: uuid.UUID) -> Response:
    """Scope `read`; full access to its case. An item of a case the caller may not see answers 404, exactly
    as one that does not exist.
    """
    item = await access.readable_child(tx, p, SEIZED_ITEMS, item_id)
    return ok(public(SeizedItemPublic, item), version=item.version)


@router.patch("/seized-items/{item_id}", response_model=SeizedItemPublic, summary="Change a seized item")
async def update_item(
    request: Request, tx: UnitDep, p: access.Editor, item_id: uuid.UUID, body: SeizedItemUpdate
) -> Response:
    """Scope `write` and scope `read`; role lead or partner. The custodian and status change only through
    custody events. Needs `If-Match`. An item of a case the caller may not see answers 404, exactly as one
    that does not exist.
    """
    item, _ = await access.writable_child(tx, p, SEIZED_ITEMS, item_id)
    check_if_match(request, item.version)
    item = await service.update_item(tx, p, item, body)
    return ok(public(SeizedItemPublic, item), version=item.version)


@router.delete("/seized-items/{item_id}", status_code=204, summary="Delete a seized item")
async def delete_item(request: Request, tx: UnitDep, p: access.Editor, item_id: uuid.UUID) -> Response:
    """Scope `write` and scope `read`; role lead or partner. Only while its chain of custody holds nothing but
    the seizure (409 otherwise: record `returned` or `destroyed`). Needs `If-Match`. An item of a case the
    caller may not see answers 404, exactly as one that does not exist.
    """
    item, _ = await access.writable_child(tx, p, SEIZED_ITEMS, item_id)
    check_if_match(request, item.version)
    await service.delete_item(tx, p, item)
    return deleted()


@router.get(
    "/seized-items/{item_id}/custody",
    response_model=Page[CustodyEventPublic],
    tags=["chain of custody"],
    summary="List an item's chain of custody",
)
async def custody_chain(tx: UnitDep, p: Reader, item_id: uuid.UUID, page: PageDep) -> Response:
    """Scope `read`; full access to the item's case. The events in order. An item of a case the caller may
    not see answers 404, exactly as one that does not exist.
    """
    await access.readable_child(tx, p, SEIZED_ITEMS, item_id)
    events, cursor = await service.custody_chain(tx, item_id, page)
    return listed([public_json(CustodyEventPublic, e) for e in events], cursor)


@router.post(
    "/seized-items/{item_id}/custody",
    status_code=201,
    response_model=CustodyEventPublic,
    tags=["chain of custody"],
    summary="Append a custody event",
)
async def add_custody_event(
    tx: UnitDep, p: Writer, item_id: uuid.UUID, body: CustodyEventCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; role lead or partner. Events are never changed or deleted; a transfer starts at the
    current custodian and moves the item to the receiving agency. Honours `Idempotency-Key`. An item of a
    case the caller may not see answers 404, exactly as one that does not exist.
    """
    # Locked until commit: one event at a time is appended to a chain.
    item, _ = await access.writable_child(tx, p, SEIZED_ITEMS, item_id)

    def respond(event: Row) -> Response:
        return created(
            public(CustodyEventPublic, event),
            location=api_path("seized-items", item.id, "custody", event.id),
            version=None,
        )

    async def create() -> Response:
        return respond(await service.add_custody_event(tx, p, item, body))

    async def replay(event_id: uuid.UUID) -> Response:
        return respond(await service.get_custody_event(tx, item.id, event_id))

    return await create_once(tx, p, idem, create, replay)


@router.get(
    "/seized-items/{item_id}/custody/{event_id}",
    response_model=CustodyEventPublic,
    tags=["chain of custody"],
    summary="Read one custody event",
)
async def get_custody_event(tx: UnitDep, p: Reader, item_id: uuid.UUID, event_id: uuid.UUID) -> Response:
    """Scope `read`; full access to the item's case. An item of a case the caller may not see answers 404,
    exactly as one that does not exist.
    """
    await access.readable_child(tx, p, SEIZED_ITEMS, item_id)
    return ok(public(CustodyEventPublic, await service.get_custody_event(tx, item_id, event_id)))
