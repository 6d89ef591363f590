import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.bundles import service
from app.bundles.imports import BundleImports, Idempotent
from app.bundles.models import Bundle
from app.cases.models import CasePublic
from app.core.deps import UnitDep
from app.core.errors import AppError
from app.core.http import Purpose, StrictJSONRoute, ok
from app.core.observability.metrics import BundleImportOutcome, Metrics
from app.idempotency.http import IdempotencyKeyHeader

router = APIRouter(tags=["case bundles"], route_class=StrictJSONRoute)


@router.get(
    "/cases/{case_id}/bundle",
    response_model=Bundle,
    summary="Export a case as one document",
    operation_id="cases.bundle",
)
async def export_bundle(tx: UnitDep, p: Reader, case_id: uuid.UUID, purpose: Purpose) -> Response:
    """Scope `read`; full access to the case. The case and everything under it, with `bundle_version: 1`.
    `full_name`, `date_of_birth` and `id_document` are returned only to a key with `personal_data` that
    sends `X-Purpose` (the disclosure is audited); otherwise they are null and `personal_data_redacted` is
    true. Attachments are listed by their metadata, without their bytes. A case the caller may not see
    answers 404, exactly as one that does not exist.
    """
    case = await access.readable_case(tx, p, case_id)
    return ok(await service.export_case(tx, p, case, purpose=purpose))


@router.post(
    "/bundles",
    status_code=201,
    response_model=CasePublic,
    summary="Import a case bundle",
    operation_id="bundles.import",
    # The body is read raw, once the import is admitted, and validated by
    # service.parse_bundle in an import process, a bounded amount of work
    # whatever it holds; documented as the Bundle it must be.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Bundle"}}},
        }
    },
)
async def import_bundle(request: Request, p: Writer, key: IdempotencyKeyHeader = None) -> Response:
    """Scope `write` (and `personal_data` to import personal data). A new case led by the caller's agency
    with new ids for every row: all of it, or on any error 422 and nothing. Participants are not carried
    over; the case keeps the bundle's handling code or a stricter one, and its `origin`. An attachment is
    attached only when this instance stores its file and the caller can already download it; the audit
    entry counts the others as `attachments_missing`. Honours `Idempotency-Key` for the same bytes: the
    same document sent with other spacing or key order counts as another body (422).
    """
    imports: BundleImports = request.app.state.bundle_imports
    metrics: Metrics = request.app.state.metrics
    idempotent = (
        None if key is None else Idempotent(key, request.url.path, request.headers.get("x-purpose", ""))
    )
    try:
        response = await imports.run(p, request.body, idempotent)
    except Exception as exc:
        metrics.bundle_imported(_outcome(exc))
        raise
    metrics.bundle_imported("replayed" if "idempotent-replayed" in response.headers else "imported")
    return response


def _outcome(exc: Exception) -> BundleImportOutcome:
    """How an import that did not answer 201 ended, for the imports counter."""
    if isinstance(exc, AppError):
        if exc.slug == "busy":
            return "busy"
        if exc.slug == "import-interrupted":
            return "interrupted"
        if exc.status < 500:
            return "rejected"
    return "failed"
