import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.db import SessionDep
from app.detainees import service
from app.detainees.models import Detainee, DetaineeCreate, DetaineePublic, DetaineeUpdate
from app.http import Purpose, StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once
from app.pagination import Page, PageDep

router = APIRouter(tags=["detainees"], route_class=StrictJSONRoute)


@router.get(
    "/cases/{case_id}/detainees", response_model=Page[DetaineePublic], summary="List a case's detainees"
)
def list_detainees(
    session: SessionDep,
    p: Reader,
    case_id: uuid.UUID,
    page: PageDep,
    purpose: Purpose,
    review_overdue: bool | None = None,
) -> Page[DetaineePublic]:
    """Scope `read`; full access to the case. `review_overdue=true` lists those whose retention review is
    past due. `full_name`, `date_of_birth` and `id_document` are returned only to a key with `personal_data`
    that sends `X-Purpose` (the disclosure is audited); otherwise they are null and `personal_data_redacted`
    is true. A case the caller may not see answers 404, exactly as one that does not exist.
    """
    access.readable_case(session, p, case_id)
    rows, cursor = service.list_detainees(session, case_id, page, review_overdue=review_overdue)
    items = service.present(session, p, purpose, rows, case_id=case_id)
    return Page(items=items, next_cursor=cursor)


@router.post(
    "/cases/{case_id}/detainees", status_code=201, response_model=DetaineePublic, summary="Record a detainee"
)
def create_detainee(
    session: SessionDep,
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
    access.writable_case(session, p, case_id)

    def respond(detainee: Detainee) -> Response:
        [public] = service.present(session, p, purpose, [detainee], case_id=case_id)
        return created(public, location=api_path("detainees", detainee.id), version=detainee.version)

    return create_once(
        session,
        p,
        idem,
        lambda: respond(service.create_detainee(session, p, case_id, body)),
        lambda detainee_id: respond(access.readable_child(session, p, Detainee, detainee_id)),
    )


@router.get("/detainees/{detainee_id}", response_model=DetaineePublic, summary="Read a detainee")
def get_detainee(
    session: SessionDep,
    p: Reader,
    detainee_id: uuid.UUID,
    response: Response,
    purpose: Purpose,
) -> DetaineePublic:
    """Scope `read`; full access to its case. `full_name`, `date_of_birth` and `id_document` are returned
    only to a key with `personal_data` that sends `X-Purpose` (the disclosure is audited); otherwise they
    are null and `personal_data_redacted` is true. A detainee of a case the caller may not see answers 404,
    exactly as one that does not exist.
    """
    detainee = access.readable_child(session, p, Detainee, detainee_id)
    with_etag(response, detainee.version)
    [public] = service.present(session, p, purpose, [detainee], case_id=detainee.case_id)
    return public


@router.patch("/detainees/{detainee_id}", response_model=DetaineePublic, summary="Change a detainee")
def update_detainee(
    request: Request,
    session: SessionDep,
    p: access.Editor,
    detainee_id: uuid.UUID,
    body: DetaineeUpdate,
    response: Response,
    purpose: Purpose,
) -> DetaineePublic:
    """Scope `write` and scope `read`; role lead or partner; writing personal data needs `personal_data` too.
    Needs `If- Match`. A detainee of a case the caller may not see answers 404, exactly as one that does not
    exist.
    """
    detainee, _ = access.writable_child(session, p, Detainee, detainee_id)
    check_if_match(request, detainee.version)
    detainee = service.update_detainee(session, p, detainee, body)
    with_etag(response, detainee.version)
    [public] = service.present(session, p, purpose, [detainee], case_id=detainee.case_id)
    return public


@router.delete("/detainees/{detainee_id}", status_code=204, summary="Delete a detainee")
def delete_detainee(
    request: Request, session: SessionDep, p: access.Editor, detainee_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead or partner; and scope `personal_data` when the record holds
    personal data (deleting it erases that data). Needs `If-Match`. A detainee of a case the caller may not
    see answers 404, exactly as one that does not exist.
    """
    detainee, _ = access.writable_child(session, p, Detainee, detainee_id)
    check_if_match(request, detainee.version)
    service.delete_detainee(session, p, detainee)
    return Response(status_code=204)
