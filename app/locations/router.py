import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.core.deps import UnitDep
from app.core.http import (
    StrictJSONRoute,
    api_path,
    check_if_match,
    created,
    deleted,
    listed,
    ok,
    public,
    public_json,
)
from app.core.pagination import Page, PageDep
from app.core.uow import Row
from app.idempotency.http import IdempotencyDep, create_once
from app.locations import service
from app.locations.models import LocationCreate, LocationPublic, LocationUpdate

router = APIRouter(tags=["locations"], route_class=StrictJSONRoute)
LOCATIONS = service.LOCATIONS


@router.get(
    "/cases/{case_id}/locations",
    response_model=Page[LocationPublic],
    summary="List a case's search locations",
)
async def list_locations(tx: UnitDep, p: Reader, case_id: uuid.UUID, page: PageDep) -> Response:
    """Scope `read`; full access to the case. A case the caller may not see answers 404, exactly as one that
    does not exist.
    """
    items, cursor = await service.list_locations(tx, p, case_id, page)
    return listed([public_json(LocationPublic, x) for x in items], cursor)


@router.post(
    "/cases/{case_id}/locations",
    status_code=201,
    response_model=LocationPublic,
    summary="Record a search location",
)
async def create_location(
    tx: UnitDep, p: Writer, case_id: uuid.UUID, body: LocationCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; role lead or partner. Honours `Idempotency-Key`. A case the caller may not see answers
    404, exactly as one that does not exist.
    """
    await access.writable_case(tx, p, case_id)

    def respond(location: Row) -> Response:
        return created(
            public(LocationPublic, location),
            location=api_path("locations", location.id),
            version=location.version,
        )

    async def create() -> Response:
        return respond(await service.create_location(tx, p, case_id, body))

    async def replay(location_id: uuid.UUID) -> Response:
        return respond(await access.readable_child(tx, p, LOCATIONS, location_id))

    return await create_once(tx, p, idem, create, replay)


@router.get("/locations/{location_id}", response_model=LocationPublic, summary="Read a search location")
async def get_location(tx: UnitDep, p: Reader, location_id: uuid.UUID) -> Response:
    """Scope `read`; full access to its case. A location of a case the caller may not see answers 404,
    exactly as one that does not exist.
    """
    location = await access.readable_child(tx, p, LOCATIONS, location_id)
    return ok(public(LocationPublic, location), version=location.version)


@router.patch("/locations/{location_id}", response_model=LocationPublic, summary="Change a search location")
async def update_location(
    request: Request, tx: UnitDep, p: access.Editor, location_id: uuid.UUID, body: LocationUpdate
) -> Response:
    """Scope `write` and scope `read`; role lead or partner. Needs `If-Match`. A location of a case the caller
    may not see answers 404, exactly as one that does not exist.
    """
    location, _ = await access.writable_child(tx, p, LOCATIONS, location_id)
    check_if_match(request, location.version)
    location = await service.update_location(tx, p, location, body)
    return ok(public(LocationPublic, location), version=location.version)


@router.delete("/locations/{location_id}", status_code=204, summary="Delete a search location")
async def delete_location(
    request: Request, tx: UnitDep, p: access.Editor, location_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead or partner. Not while seized items or detainees refer to it
    (409). Needs `If-Match`. A location of a case the caller may not see answers 404, exactly as one that does
    not exist.
    """
    location, _ = await access.writable_child(tx, p, LOCATIONS, location_id)
    check_if_match(request, location.version)
    await service.delete_location(tx, p, location)
    return deleted()
