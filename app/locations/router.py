import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once_sync
from app.locations import service
from app.locations.models import Location, LocationCreate, LocationPublic, LocationUpdate
from app.pagination import Page, PageDep

router = APIRouter(tags=["locations"], route_class=StrictJSONRoute)


@router.get(
    "/cases/{case_id}/locations",
    response_model=Page[LocationPublic],
    summary="List a case's search locations",
)
def list_locations(session: SessionDep, p: Reader, case_id: uuid.UUID, page: PageDep) -> Page[LocationPublic]:
    """Scope `read`; full access to the case. A case the caller may not see answers 404, exactly as one that
    does not exist.
    """
    access.readable_case_sync(session, p, case_id)
    items, cursor = service.list_locations(session, case_id, page)
    return Page(items=[LocationPublic.model_validate(x) for x in items], next_cursor=cursor)


@router.post(
    "/cases/{case_id}/locations",
    status_code=201,
    response_model=LocationPublic,
    summary="Record a search location",
)
def create_location(
    session: SessionDep, p: Writer, case_id: uuid.UUID, body: LocationCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; role lead or partner. Honours `Idempotency-Key`. A case the caller may not see answers
    404, exactly as one that does not exist.
    """
    access.writable_case_sync(session, p, case_id)

    def respond(location: Location) -> Response:
        return created(
            LocationPublic.model_validate(location),
            location=api_path("locations", location.id),
            version=location.version,
        )

    return create_once_sync(
        session,
        p,
        idem,
        lambda: respond(service.create_location(session, p, case_id, body)),
        lambda location_id: respond(access.readable_child_sync(session, p, Location, location_id)),
    )


@router.get("/locations/{location_id}", response_model=LocationPublic, summary="Read a search location")
def get_location(
    session: SessionDep, p: Reader, location_id: uuid.UUID, response: Response
) -> LocationPublic:
    """Scope `read`; full access to its case. A location of a case the caller may not see answers 404,
    exactly as one that does not exist.
    """
    location = access.readable_child_sync(session, p, Location, location_id)
    with_etag(response, location.version)
    return LocationPublic.model_validate(location)


@router.patch("/locations/{location_id}", response_model=LocationPublic, summary="Change a search location")
def update_location(
    request: Request,
    session: SessionDep,
    p: access.Editor,
    location_id: uuid.UUID,
    body: LocationUpdate,
    response: Response,
) -> LocationPublic:
    """Scope `write` and scope `read`; role lead or partner. Needs `If-Match`. A location of a case the caller
    may not see answers 404, exactly as one that does not exist.
    """
    location, _ = access.writable_child_sync(session, p, Location, location_id)
    check_if_match(request, location.version)
    location = service.update_location(session, p, location, body)
    with_etag(response, location.version)
    return LocationPublic.model_validate(location)


@router.delete("/locations/{location_id}", status_code=204, summary="Delete a search location")
def delete_location(
    request: Request, session: SessionDep, p: access.Editor, location_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead or partner. Not while seized items or detainees refer to it
    (409). Needs `If-Match`. A location of a case the caller may not see answers 404, exactly as one that does
    not exist.
    """
    location, _ = access.writable_child_sync(session, p, Location, location_id)
    check_if_match(request, location.version)
    service.delete_location(session, p, location)
    return Response(status_code=204)
