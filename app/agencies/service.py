import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.agencies.models import Agency, AgencyCreate, AgencyUpdate
from app.auth.service import Principal
from app.crud import add_recorded, update_recorded
from app.errors import conflict, invalid, not_found
from app.journal import CLI
from app.pagination import PageParams, paginate


def require_agencies(session: Session, refs: dict[str, uuid.UUID | None]) -> None:
    """422 naming the field when a referenced agency does not exist."""
    wanted = {v for v in refs.values() if v is not None}
    if not wanted:
        return
    found = set(session.execute(sa.select(Agency.id).where(Agency.id.in_(wanted))).scalars())
    for field, value in refs.items():
        if value is not None and value not in found:
            raise invalid(["body", field], "No agency with this id.")


def list_agencies(session: Session, params: PageParams) -> tuple[list[Agency], str | None]:
    return paginate(session, sa.select(Agency), params, scope="agencies", keys=(Agency.created_at, Agency.id))


def get_agency(session: Session, agency_id: uuid.UUID, *, for_update: bool = False) -> Agency:
    agency = session.get(Agency, agency_id, with_for_update=for_update)
    if agency is None:
        raise not_found("agency")
    return agency


def _check_code_free(session: Session, code: str, agency_id: uuid.UUID | None) -> None:
    stmt = sa.select(Agency.id).where(Agency.code == code)
    if agency_id is not None:
        stmt = stmt.where(Agency.id != agency_id)
    if session.execute(stmt).first():
        raise conflict(f"An agency with code {code!r} exists.")


def _check_parent(session: Session, agency_id: uuid.UUID | None, parent_id: uuid.UUID) -> None:
    """The parent exists and is not the agency itself or one of its descendants."""
    seen: set[uuid.UUID] = set()
    current: uuid.UUID | None = parent_id
    while current is not None:
        if current == agency_id or current in seen:
            raise invalid(["body", "parent_id"], "An agency cannot be its own ancestor.")
        seen.add(current)
        parent = session.get(Agency, current)
        if parent is None:
            raise invalid(["body", "parent_id"], "No agency with this id.")
        current = parent.parent_id


def create_agency(session: Session, p: Principal | None, data: AgencyCreate) -> Agency:
    _check_code_free(session, data.code, None)
    if data.parent_id is not None:
        _check_parent(session, None, data.parent_id)
    agency = Agency.model_validate(data)
    add_recorded(session, agency, p.actor if p else CLI, resource_type="agency", case_id=None)
    return agency


def update_agency(session: Session, p: Principal, agency: Agency, data: AgencyUpdate) -> Agency:
    changes = data.changes(agency)
    if "code" in changes:
        _check_code_free(session, changes["code"], agency.id)
    if changes.get("parent_id") is not None:
        _check_parent(session, agency.id, changes["parent_id"])
    update_recorded(session, agency, changes, p.actor, resource_type="agency", case_id=None)
    return agency
