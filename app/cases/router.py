import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.auth.service import Principal
from app.cases import service
from app.cases.models import (
    CaseCreate,
    CasePublic,
    CaseStatus,
    CaseSummary,
    CaseUpdate,
    HandlingCode,
)
from app.core.binder import HotRoute, hot
from app.core.deps import DatabaseDep, UnitDep
from app.core.http import api_path, check_if_match, created, deleted, listed, ok
from app.core.pagination import Page, PageDep
from app.core.uow import Statements
from app.idempotency.http import IdempotencyDep, create_once

router = APIRouter(prefix="/cases", tags=["cases"], route_class=HotRoute)


def created_case(case: Any) -> Response:
    """The answer to a case's creation (or import; a row or a Case): the caller's agency leads it."""
    return created(service.to_public(case, "full"), location=api_path("cases", case.id), version=case.version)


async def replay_created_case(db: Statements, p: Principal, case_id: uuid.UUID) -> Response:
    """The same answer to an Idempotency-Key replay, for the case as the caller sees it now."""
    acc = await access.case_access(db, p, case_id)
    return created(
        service.to_public(acc.case, acc.level), location=api_path("cases", case_id), version=acc.case.version
    )


@router.get("", response_model=Page[CasePublic], summary="List the cases the caller sees")
@hot
async def list_cases(
    reads: DatabaseDep,
    p: Reader,
    page: PageDep,
    status: CaseStatus | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in reference, title or summary")] = None,
    handling_code: HandlingCode | None = None,
    participant: Annotated[str | None, Query(max_length=40, description="An agency code")] = None,
) -> Response:
    """Scope `read`. Every case the caller's agency takes part in (or reads as a sub-agency of a participant
    under TLP:AMBER), and TLP:GREEN and TLP:CLEAR cases of other agencies with `"access": "summary"`. Cases
    the caller may not see are left out, never counted or hinted at.
    """
    items, cursor = await service.list_cases(
        reads, p, page, status=status, q=q, handling_code=handling_code, participant=participant
    )
    return listed(items, cursor)


@router.post("", status_code=201, response_model=CasePublic, summary="Open a case")
async def create_case(tx: UnitDep, p: Writer, body: CaseCreate, idem: IdempotencyDep) -> Response:
    """Scope `write`. The caller's agency becomes the case's lead. `reference` is unique per lead agency.
    Honours `Idempotency-Key`.
    """

    async def create() -> Response:
        return created_case(await service.create_case(tx, p, body))

    async def replay(case_id: uuid.UUID) -> Response:
        return await replay_created_case(tx, p, case_id)

    return await create_once(tx, p, idem, create, replay)


@router.get("/{case_id}", response_model=CasePublic, summary="Read a case")
@hot
async def get_case(reads: DatabaseDep, p: Reader, case_id: uuid.UUID) -> Response:
    """Scope `read`. Participants (and, under TLP:AMBER, their sub-agencies) read it in full; under
    TLP:GREEN and TLP:CLEAR every agency reads its own fields (`"access": "summary"`). A case the caller may
    not see answers 404, exactly as one that does not exist.
    """
    acc = await access.case_access(reads, p, case_id)
    return ok(service.to_public_json(acc.case, acc.level), version=acc.case.version)


@router.patch("/{case_id}", response_model=CasePublic, summary="Change a case")
async def update_case(
    request: Request, tx: UnitDep, p: access.Editor, case_id: uuid.UUID, body: CaseUpdate
) -> Response:
    """Scope `write` and scope `read`; role lead or partner. Only the lead changes the handling code. Needs
    `If-Match`. A case the caller may not see answers 404, exactly as one that does not exist.
    """
    acc = await access.writable_case(tx, p, case_id, for_update=True)
    check_if_match(request, acc.case.version)
    case = await service.update_case(tx, p, acc, body)
    return ok(service.to_public(case, "full"), version=case.version)


@router.delete("/{case_id}", status_code=204, summary="Delete an empty case")
async def delete_case(request: Request, tx: UnitDep, p: access.Editor, case_id: uuid.UUID) -> Response:
    """Scope `write` and scope `read`; role lead. Only a case that holds no locations, seized items or
    detainees (409 otherwise: close it instead). Needs `If-Match`. A case the caller may not see answers 404,
    exactly as one that does not exist.
    """
    acc = await access.writable_case(tx, p, case_id, for_update=True)
    access.require_lead(acc, "Only the lead agency deletes a case.")
    check_if_match(request, acc.case.version)
    await service.delete_case(tx, p, acc)
    return deleted()


@router.get(
    "/{case_id}/summary",
    response_model=CaseSummary,
    summary="Count what a case holds",
    operation_id="cases.summary",
)
async def case_summary(tx: UnitDep, p: Reader, case_id: uuid.UUID) -> Response:
    """Scope `read`; full access to the case. Locations, seized items by category (sum of known quantities
    and how many are unknown), detainees by custody status. A case the caller may not see answers 404,
    exactly as one that does not exist.
    """
    return ok(await service.summarize(tx, await access.readable_case(tx, p, case_id)))
