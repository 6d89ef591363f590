import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.agencies import service
from app.agencies.models import Agency, AgencyCreate, AgencyPublic, AgencyUpdate
from app.auth.deps import Admin, Reader
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once_sync
from app.pagination import Page, PageDep

router = APIRouter(prefix="/agencies", tags=["agencies"], route_class=StrictJSONRoute)


@router.get("", response_model=Page[AgencyPublic], summary="List the agencies")
def list_agencies(session: SessionDep, _: Reader, page: PageDep) -> Page[AgencyPublic]:
    """Scope `read`. The directory of agencies is open to every key, whatever cases they take part in."""
    items, cursor = service.list_agencies(session, page)
    return Page(items=[AgencyPublic.model_validate(a) for a in items], next_cursor=cursor)


@router.post("", status_code=201, response_model=AgencyPublic, summary="Register an agency")
def create_agency(
    request: Request, session: SessionDep, p: Admin, body: AgencyCreate, idem: IdempotencyDep
) -> Response:
    """Scope `admin`. `parent_id` is set here and changed only on the host (`caseapi agency`): it decides
    who reads AMBER cases. Honours `Idempotency-Key`.
    """

    def respond(agency: Agency) -> Response:
        return created(
            AgencyPublic.model_validate(agency),
            location=api_path("agencies", agency.id),
            version=agency.version,
        )

    return create_once_sync(
        session,
        p,
        idem,
        lambda: respond(service.create_agency(session, p, body)),
        lambda agency_id: respond(service.get_agency(session, agency_id)),
    )


@router.get("/{agency_id}", response_model=AgencyPublic, summary="Read an agency")
def get_agency(session: SessionDep, _: Reader, agency_id: uuid.UUID, response: Response) -> AgencyPublic:
    """Scope `read`. Every agency is visible to every key; an unknown id answers 404."""
    agency = service.get_agency(session, agency_id)
    with_etag(response, agency.version)
    return AgencyPublic.model_validate(agency)


@router.patch("/{agency_id}", response_model=AgencyPublic, summary="Change an agency")
def update_agency(
    request: Request,
    session: SessionDep,
    p: access.AdminEditor,
    agency_id: uuid.UUID,
    body: AgencyUpdate,
    response: Response,
) -> AgencyPublic:
    """Scope `admin` and scope `read`. Needs `If-Match`. `parent_id` cannot change over HTTP. An unknown id
    answers 404.
    """
    agency = service.get_agency(session, agency_id, for_update=True)
    service.require_managed(session, p, agency)
    check_if_match(request, agency.version)
    agency = service.update_agency(session, p, agency, body)
    with_etag(response, agency.version)
    return AgencyPublic.model_validate(agency)
