import uuid

from fastapi import APIRouter, Response

from app import access
from app.auth.deps import Reader, Writer
from app.bundles import service
from app.bundles.models import Bundle
from app.cases.models import CasePublic
from app.cases.service import to_public
from app.db import SessionDep
from app.http import Purpose, StrictJSONRoute, api_path, created
from app.idempotency.service import IdempotencyDep, create_once

router = APIRouter(tags=["case bundles"], route_class=StrictJSONRoute)


@router.get("/cases/{case_id}/bundle", response_model=Bundle)
def export_bundle(session: SessionDep, p: Reader, case_id: uuid.UUID, purpose: Purpose) -> Bundle:
    """The case and everything under it as one document (full access only).

    Detainees' personal data is included only for a client with the
    `personal_data` scope that sends `X-Purpose`; the disclosure is audited.
    """
    case = access.readable_case(session, p, case_id)
    return service.export_case(session, p, case, purpose=purpose)


@router.post("/bundles", status_code=201, response_model=CasePublic)
def import_bundle(session: SessionDep, p: Writer, body: Bundle, idem: IdempotencyDep) -> Response:
    """Import a bundle as a new case led by the caller's agency: all of it, or on any error nothing."""

    def create() -> Response:
        case = service.import_bundle(session, p, body)
        return created(to_public(case, "full"), location=api_path("cases", case.id), version=case.version)

    return create_once(session, p, idem, create)
