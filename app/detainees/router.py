import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.core.deps import UnitDep
from app.core.http import Purpose, StrictJSONRoute, api_path, check_if_match, created, deleted, listed, ok
from app.core.pagination import Page, PageDep
from app.core.uow import Row
from app.detainees import service
from app.detainees.models import Detainee, DetaineeCreate, DetaineePublic, DetaineeUpdate
from app.idempotency.http import IdempotencyDep, create_once

router = APIRouter(tags=["detainees"], route_class=StrictJSONRoute)


@router.get(
    "/cases/{case_id}/detainees", response_model=Page[DetaineePublic], summary="List a case's detainees"
)
async def list_detainees(
    tx: UnitDep,
    p: Reader,
    case_id: uuid.UUID,
    page: PageDep,
    purpose: Purpose,
    review_overdue: bool | None = None,
) -> Response:
    """Scope `read`; full access to the case. `review_overdue=true` lists those whose retention review is
    past due. `full_name`, `date_of_birth` and `id_document` are returned only to a key with `personal_data`
    that sends `X-Purpose` (the disclosure is audited); otherwise they are null and `personal_data_redacted`
    is true. A case the caller may not see answers 404, exactly as one that does not exist.
    """
    rows, cursor = await service.list_detainees(tx, p, case_id, page, review_overdue=review_overdue)
    items = await service.present(tx, p, purpose, rows, case_id=case_id)
    return listed(items, cursor)


@router.post(
    "/cases/{case_id}/detainees", status_code=201, response_model=DetaineePublic, summary="Record a detainee"
)
async def create_detainee(
    tx: UnitDep,
    p: Writer,
    case_id: uuid.UUID,
    body: DetaineeCreate,
    idem: IdempotencyDep,
    purpose: Purpose,
) -> Response:
    """Scope `write`; role lead or partner; writing personal data needs `personal_data` too. `review_due`
    defaults to one year after `detained_at`. Honours `Idempotency-Key`. A case the caller may not see
    answers 404, exactly as one that does not exist.
    """
    await access.writable_case(tx, p, case_id)

    async def respond(detainee: Row) -> Response:
        [public] = await service.present(tx, p, purpose, [detainee], case_id=case_id)
        return created(public, location=api_path("detainees", detainee.id), version=detainee.version)

    async def create() -> Response:
        return await respond(await service.create_detainee(tx, p, case_id, body))

    async def replay(detainee_id: uuid.UUID) -> Response:
        return await respond(await access.readable_child(tx, p, Detainee, detainee_id))

    return await create_once(tx, p, idem, create, replay)


@router.get("/detainees/{detainee_id}", response_model=DetaineePublic, summary="Read a detainee")
async def get_detainee(tx: UnitDep, p: Reader, detainee_id: uuid.UUID, purpose: Purpose) -> Response:
    """Scope `read`; full access to its case. `full_name`, `date_of_birth` and `id_document` are returned
    only to a key with `personal_data` that sends `X-Purpose` (the disclosure is audited); otherwise they
    are null and `personal_data_redacted` is true. A detainee of a case the caller may not see answers 404,
    exactly as one that does not exist.
    """
    detainee = await access.readable_child(tx, p, Detainee, detainee_id)
    [public] = await service.present(tx, p, purpose, [detainee], case_id=detainee.case_id)
    return ok(public, version=detainee.version)


@router.patch("/detainees/{detainee_id}", response_model=DetaineePublic, summary="Change a detainee")
async def update_detainee(
    request: Request,
    tx: UnitDep,
    p: access.Editor,
    detainee_id: uuid.UUID,
    body: DetaineeUpdate,
    purpose: Purpose,
) -> Response:
    """Scope `write` and scope `read`; role lead or partner; writing personal data needs `personal_data` too.
    Needs `If- Match`. A detainee of a case the caller may not see answers 404, exactly as one that does not
    exist.
    """
    detainee, _ = await access.writable_child(tx, p, Detainee, detainee_id)
    check_if_match(request, detainee.version)
    detainee = await service.update_detainee(tx, p, detainee, body)
    [public] = await service.present(tx, p, purpose, [detainee], case_id=detainee.case_id)
    return ok(public, version=detainee.version)


@router.delete("/detainees/{detainee_id}", status_code=204, summary="Delete a detainee")
async def delete_detainee(
    request: Request, tx: UnitDep, p: access.Editor, detainee_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead or partner; and scope `personal_data` when the record holds
    personal data (deleting it erases that data). Needs `If-Match`. A detainee of a case the caller may not
    see answers 404, exactly as one that does not exist.
    """
    detainee, _ = await access.writable_child(tx, p, Detainee, detainee_id)
    check_if_match(request, detainee.version)
    await service.delete_detainee(tx, p, detainee)
    return deleted()
