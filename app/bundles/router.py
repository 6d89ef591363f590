import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.bundles import service
from app.bundles.models import Bundle
from app.cases.models import CasePublic
from app.cases.service import to_public
from app.db import SessionDep
from app.http import Purpose, api_path, created
from app.idempotency.service import IdempotencyDep, create_once

router = APIRouter(tags=["case bundles"])


@router.get("/cases/{case_id}/bundle", response_model=Bundle)
def export_bundle(session: SessionDep, p: Reader, case_id: uuid.UUID, purpose: Purpose = None) -> Bundle:
    """The case and everything under it as one document (full access only).

    Detainees' personal data is included only for a client with the
    `personal_data` scope that sends `X-Purpose`; the disclosure is audited.
    """
    case = access.readable_case(session, p, case_id)
    return service.export_case(session, p, case, purpose=purpose)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


@router.post(
    "/bundles",
    status_code=201,
    response_model=CasePublic,
    # The body is read raw and validated by service.parse_bundle, a bounded
    # amount of work whatever it holds; documented as the Bundle it must be.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Bundle"}}},
        }
    },
)
def import_bundle(
    session: SessionDep, p: Writer, raw: Annotated[bytes, Depends(_raw_body)], idem: IdempotencyDep
) -> Response:
    """Import a bundle as a new case led by the caller's agency: all of it, or on any error nothing."""
    body = service.parse_bundle(raw)

    def create() -> Response:
        case = service.import_bundle(session, p, body, digest=service.digest(raw))
        return created(to_public(case, "full"), location=api_path("cases", case.id), version=case.version)

    return create_once(session, p, idem, create)
