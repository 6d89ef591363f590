import uuid

from fastapi import APIRouter, Response

from app import access
from app.auth.deps import Reader
from app.core.deps import WriteUnitDep
from app.core.journal import record
from app.stix import service

router = APIRouter(tags=["STIX"])


@router.get(
    "/cases/{case_id}/stix",
    operation_id="cases.stix",
    summary="Export a case as a STIX 2.1 bundle",
    response_class=Response,
    responses={200: {"content": {service.MEDIA_TYPE: {"schema": {"type": "object"}}}}},
)
async def export_stix(tx: WriteUnitDep, p: Reader, case_id: uuid.UUID) -> Response:
    """Scope `read`; full access to the case. The case as a STIX 2.1 bundle: a `report`, the lead
    agency's `identity`, the identifiers as observables (the standard ones where STIX has one, else
    types declared by `extension-definition` objects in the bundle), each marked with the TLP 2.0
    marking definition of the case's handling code. Every export is audited. A case the caller may
    not see answers 404, exactly as one that does not exist.
    """
    case = await access.readable_case(tx, p, case_id)
    body = await service.case_bundle(tx, case)
    record(
        tx,
        p.actor,
        action="case.stix_exported",
        resource_type="case",
        resource_id=case.id,
        case_id=case.id,
        emit_event=False,
    )
    return Response(body, media_type=service.MEDIA_TYPE)
