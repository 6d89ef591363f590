import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.cases import service
from app.cases.models import (
    CaseCreate,
    CasePublic,
    CaseStatus,
    CaseSummary,
    CaseUpdate,
    HandlingCode,
)
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, ok, with_etag
from app.idempotency.service import IdempotencyDep, create_once
from app.pagination import Page, PageDep
from app.reads import ReadsDep

router = APIRouter(prefix="/cases", tags=["cases"], route_class=StrictJSONRoute)


@router.get("", response_model=Page[CasePublic])
async def list_cases(
    reads: ReadsDep,
    p: Reader,
    page: PageDep,
    status: CaseStatus | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in reference, title or summary")] = None,
    handling_code: HandlingCode | None = None,
    participant: Annotated[str | None, Query(max_length=40, description="An agency code")] = None,
) -> Response:
    items, cursor = await service.list_cases(
        reads, p, page, status=status, q=q, handling_code=handling_code, participant=participant
    )
    return ok(Page(items=items, next_cursor=cursor))


@router.post("", status_code=201, response_model=CasePublic)
def create_case(
    request: Request, session: SessionDep, p: Writer, body: CaseCreate, idem: IdempotencyDep
) -> Response:
    def create() -> Response:
        case = service.create_case(session, p, body)
        return created(
            service.to_public(case, "full"), location=api_path("cases", case.id), version=case.version
        )

    return create_once(session, p, idem, create)


@router.get("/{case_id}", response_model=CasePublic)
async def get_case(reads: ReadsDep, p: Reader, case_id: uuid.UUID) -> Response:
    acc = await access.read_case_access(reads, p, case_id)
    return ok(service.to_public(acc.case, acc.level), version=acc.case.version)


@router.patch("/{case_id}", response_model=CasePublic)
def update_case(
    request: Request,
    session: SessionDep,
    p: Writer,
    case_id: uuid.UUID,
    body: CaseUpdate,
    response: Response,
) -> CasePublic:
    acc = access.writable_case(session, p, case_id, for_update=True)
    check_if_match(request, acc.case.version)
    case = service.update_case(session, p, acc, body)
    with_etag(response, case.version)
    return service.to_public(case, "full")


@router.delete("/{case_id}", status_code=204)
def delete_case(request: Request, session: SessionDep, p: Writer, case_id: uuid.UUID) -> Response:
    acc = access.writable_case(session, p, case_id, for_update=True)
    access.require_lead(acc, "Only the lead agency deletes a case.")
    check_if_match(request, acc.case.version)
    service.delete_case(session, p, acc)
    return Response(status_code=204)


@router.get("/{case_id}/summary", response_model=CaseSummary)
def case_summary(session: SessionDep, p: Reader, case_id: uuid.UUID) -> CaseSummary:
    return service.summarize(session, access.readable_case(session, p, case_id))
