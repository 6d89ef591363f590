import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.agencies import service
from app.agencies.models import AgencyCreate, AgencyPublic, AgencyUpdate
from app.auth.deps import Admin, Reader
from app.core.deps import UnitDep
from app.core.http import StrictJSONRoute, api_path, check_if_match, created, listed, ok, public
from app.core.pagination import Page, PageDep
from app.core.uow import Row
from app.idempotency.http import IdempotencyDep, create_once

router = APIRouter(prefix="/agencies", tags=["agencies"], route_class=StrictJSONRoute)


@router.get("", response_model=Page[AgencyPublic], summary="List the agencies")
async def list_agencies(tx: UnitDep, _: Reader, page: PageDep) -> Response:
    """Scope `read`. The directory of agencies is open to every key, whatever cases they take part in."""
    rows, cursor = await service.list_agencies(tx, page)
    return listed([public(AgencyPublic, a) for a in rows], cursor)


@router.post("", status_code=201, response_model=AgencyPublic, summary="Register an agency")
async def create_agency(tx: UnitDep, p: Admin, body: AgencyCreate, idem: IdempotencyDep) -> Response:
    """Scope `admin`. `parent_id` is set here and changed only on the host (`caseapi agency`): it decides
    who reads AMBER cases. Honours `Idempotency-Key`.
    """

    def respond(agency: Row) -> Response:
        return created(
            public(AgencyPublic, agency), location=api_path("agencies", agency.id), version=agency.version
        )

    async def create() -> Response:
        return respond(await service.create_agency(tx, p, body))

    async def replay(agency_id: uuid.UUID) -> Response:
        return respond(await service.get_agency(tx, agency_id))

    return await create_once(tx, p, idem, create, replay)


@router.get("/{agency_id}", response_model=AgencyPublic, summary="Read an agency")
async def get_agency(tx: UnitDep, _: Reader, agency_id: uuid.UUID) -> Response:
    """Scope `read`. Every agency is visible to every key; an unknown id answers 404."""
    agency = await service.get_agency(tx, agency_id)
    return ok(public(AgencyPublic, agency), version=agency.version)


@router.patch("/{agency_id}", response_model=AgencyPublic, summary="Change an agency")
async def update_agency(
    request: Request, tx: UnitDep, p: access.AdminEditor, agency_id: uuid.UUID, body: AgencyUpdate
) -> Response:
    """Scope `admin` and scope `read`. Needs `If-Match`. `parent_id` cannot change over HTTP. An unknown id
    answers 404.
    """
    agency = await service.get_agency(tx, agency_id, for_update=True)
    await service.require_managed(tx, p, agency)
    check_if_match(request, agency.version)
    agency = await service.update_agency(tx, p, agency, body)
    return ok(public(AgencyPublic, agency), version=agency.version)
