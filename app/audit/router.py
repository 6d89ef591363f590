import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from app.audit import service
from app.audit.models import AuditEntryPublic
from app.auth.deps import current_principal
from app.auth.models import Scope
from app.auth.service import Principal
from app.core.deps import DatabaseDep, UnitDep
from app.core.errors import AppError
from app.core.http import listed, public
from app.core.pagination import Page, PageDep
from app.core.records import AuditVerification

router = APIRouter(prefix="/audit", tags=["audit"])


async def _auditor(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not (principal.has(Scope.read) or principal.has(Scope.admin)):
        raise AppError(403, "Reading the audit log needs the 'read' or 'admin' scope.", slug="forbidden")
    return principal


Auditor = Annotated[Principal, Depends(_auditor)]


@router.get("", response_model=Page[AuditEntryPublic], summary="Read the audit trail")
async def list_entries(
    tx: UnitDep,
    p: Auditor,
    page: PageDep,
    case_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Scope `read` or scope `admin`. What the caller's agency did, and what was done to cases it
    leads; an `admin` key adds what the agencies under its own did, and the entries about the agencies
    and API clients it manages. Never another agency's entry of a case the caller's agency does not see
    in full. `purpose` (personal data: it may name a suspect) is shown to a key with the `personal_data`
    scope only, else null. Filters `case_id` and `action`. The whole instance's log is read on the host:
    `caseapi audit list`.
    """
    rows, cursor = await service.list_entries(tx, p, page, case_id=case_id, action=action)
    hide = {} if p.has(Scope.personal_data) else {"purpose": None}
    return listed([public(AuditEntryPublic, e, **hide) for e in rows], cursor)


async def _admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.has(Scope.admin):
        raise AppError(403, "Verifying the audit chain needs the 'admin' scope.", slug="forbidden")
    return principal


@router.get(
    "/verify", response_model=AuditVerification, summary="Verify the audit chain", operation_id="audit.verify"
)
async def verify(db: DatabaseDep, _: Annotated[Principal, Depends(_admin)]) -> AuditVerification:
    """Scope `admin`. Verifies the entries written since the last verified checkpoint, then moves it:
    `ok`, the number of entries, and the head hash to record somewhere the database administrators cannot
    write. A missing checkpoint, or one not written with the audit key, is a finding (`ok: false`,
    `reason`) and moves nothing. `caseapi audit verify` checks the whole chain.
    """
    # On the database itself, not in a unit of work: the walk reads outside
    # any transaction, and only a good result's checkpoint is written, briefly.
    return await service.check(db, full=False)
