import uuid

from fastapi import APIRouter, Request, Response

from app.agencies import service
from app.agencies.models import AgencyCreate, AgencyPublic, AgencyUpdate
from app.auth.deps import Admin, Reader
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once
from app.pagination import Page, PageDep

router = APIRouter(prefix="/agencies", tags=["agencies"], route_class=StrictJSONRoute)


@router.get("", response_model=Page[AgencyPublic])
def list_agencies(session: SessionDep, _: Reader, page: PageDep) -> Page[AgencyPublic]:
    items, cursor = service.list_agencies(session, page)
    return Page(items=[AgencyPublic.model_validate(a) for a in items], next_cursor=cursor)


@router.post("", status_code=201, response_model=AgencyPublic)
def create_agency(
    request: Request, session: SessionDep, p: Admin, body: AgencyCreate, idem: IdempotencyDep
) -> Response:
    def create() -> Response:
        agency = service.create_agency(session, p, body)
        return created(
            AgencyPublic.model_validate(agency),
            location=api_path("agencies", agency.id),
            version=agency.version,
        )

    return create_once(session, p, idem, create)


@router.get("/{agency_id}", response_model=AgencyPublic)
def get_agency(session: SessionDep, _: Reader, agency_id: uuid.UUID, response: Response) -> AgencyPublic:
    agency = service.get_agency(session, agency_id)
    with_etag(response, agency.version)
    return AgencyPublic.model_validate(agency)


@router.patch("/{agency_id}", response_model=AgencyPublic)
def update_agency(
    request: Request,
    session: SessionDep,
    p: Admin,
    agency_id: uuid.UUID,
    body: AgencyUpdate,
    response: Response,
) -> AgencyPublic:
    agency = service.get_agency(session, agency_id, for_update=True)
    check_if_match(request, agency.version)
    agency = service.update_agency(session, p, agency, body)
    with_etag(response, agency.version)
    return AgencyPublic.model_validate(agency)
