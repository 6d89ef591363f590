import functools
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from app.agencies.models import Agency, AgencyCreate, AgencyUpdate
from app.auth.service import Principal
from app.core.uow import Statements
from app.crud import add_recorded_sync, update_recorded_sync
from app.errors import AppError, conflict, forbidden, invalid, not_found
from app.journal import CLI, Actor
from app.pagination import PageParams, paginate_sync


@functools.cache
def _agencies_found(count: int) -> sa.Select[Any]:
    """Which of `count` agency ids (bind parameters a0, a1, ...) exist. One
    parameter each, not an IN list: the hot statements (app.core.uow) take values."""
    return sa.select(Agency.id).where(sa.or_(*(Agency.id == sa.bindparam(f"a{i}") for i in range(count))))


def _wanted(refs: dict[str, uuid.UUID | None], known: uuid.UUID | None) -> dict[str, uuid.UUID]:
    """The bind parameters of _agencies_found() for the references to look up."""
    wanted = sorted({v for v in refs.values() if v is not None and v != known})
    return {f"a{i}": agency_id for i, agency_id in enumerate(wanted)}


def _require_found(refs: dict[str, uuid.UUID | None], known: uuid.UUID | None, found: set[uuid.UUID]) -> None:
    for field, value in refs.items():
        if value is not None and value != known and value not in found:
            raise invalid(["body", field], "No agency with this id.")


def require_agencies_sync(
    session: Session, refs: dict[str, uuid.UUID | None], *, known: uuid.UUID | None = None
) -> None:
    """422 naming the field when a referenced agency does not exist. `known`:
    an agency that does (the caller's own), which costs no query."""
    if wanted := _wanted(refs, known):
        found = set(session.execute(_agencies_found(len(wanted)), wanted).scalars())
        _require_found(refs, known, found)


async def require_agencies(
    db: Statements, refs: dict[str, uuid.UUID | None], *, known: uuid.UUID | None = None
) -> None:
    """require_agencies() on the hot statements."""
    if wanted := _wanted(refs, known):
        found = {row.id for row in await db.all(_agencies_found(len(wanted)), wanted)}
        _require_found(refs, known, found)


def list_agencies(session: Session, params: PageParams) -> tuple[list[Agency], str | None]:
    return paginate_sync(
        session, sa.select(Agency), params, scope="agencies", keys=(Agency.created_at, Agency.id)
    )


def get_agency(session: Session, agency_id: uuid.UUID, *, for_update: bool = False) -> Agency:
    agency = session.get(Agency, agency_id, with_for_update=for_update)
    if agency is None:
        raise not_found("agency")
    return agency


def get_agency_by_code(session: Session, code: str, *, for_update: bool = False) -> Agency:
    """The agency with this code (the host's commands name agencies by code)."""
    stmt = sa.select(Agency).where(Agency.code == code)
    agency = session.execute(stmt.with_for_update() if for_update else stmt).scalar_one_or_none()
    if agency is None:
        raise AppError(404, f"No agency with code {code!r}.", slug="not-found")
    return agency


def agencies_with_parents(session: Session) -> list[tuple[Agency, str | None]]:
    """Every agency with its parent's code, by code."""
    parent = aliased(Agency)
    stmt = (
        sa.select(Agency, parent.code).outerjoin(parent, parent.id == Agency.parent_id).order_by(Agency.code)
    )
    return [(agency, parent_code) for agency, parent_code in session.execute(stmt)]


def _check_code_free(session: Session, code: str, agency_id: uuid.UUID | None) -> None:
    stmt = sa.select(Agency.id).where(Agency.code == code)
    if agency_id is not None:
        stmt = stmt.where(Agency.id != agency_id)
    if session.execute(stmt).first():
        raise conflict(f"An agency with code {code!r} exists.")


def _ancestry(session: Session, parent_id: uuid.UUID) -> list[uuid.UUID]:
    """The parent and its ancestors, nearest first; 422 when the parent does not exist."""
    chain: list[uuid.UUID] = []
    current: uuid.UUID | None = parent_id
    while current is not None:
        if current in chain:  # a cycle written on the host: never loop on it
            raise invalid(["body", "parent_id"], "The parent's hierarchy has a cycle.")
        chain.append(current)
        parent = session.get(Agency, current)
        if parent is None:
            raise invalid(["body", "parent_id"], "No agency with this id.")
        current = parent.parent_id
    return chain


def _require_code_under(session: Session, code: str, namespace_id: uuid.UUID | None) -> None:
    """A code an admin key gives starts with the code of the agency it is
    named under and a hyphen (under KZ-MVD: KZ-MVD-...). Codes name agencies
    to every agency and to the host: a free one taken by a key (EUROPOL)
    would pass the key's sub-agency off as that body and keep the host from
    registering the body itself. Only the host names an agency freely."""
    namespace = session.get(Agency, namespace_id) if namespace_id is not None else None
    if namespace is None:
        raise invalid(["body", "code"], "The code of an agency with no parent is set on the host only.")
    prefix = f"{namespace.code}-"
    if not code.startswith(prefix) or code == prefix:
        raise invalid(["body", "code"], f"An admin key names an agency under its parent: {prefix}...")


def create_agency(session: Session, p: Principal | None, data: AgencyCreate) -> Agency:
    """`p` None is the host (CLI), which places an agency anywhere in the hierarchy.

    An admin key places a new agency only under its own agency or one of its
    sub-agencies: a sub-agency reads the AMBER cases its parent takes part
    in, so a key placing one under another agency would hand whoever gets
    the new agency's keys that agency's cases. It names the new agency
    under its parent (with no parent: under the key's own agency).
    """
    if data.parent_id is not None:
        ancestry = _ancestry(session, data.parent_id)
        if p is not None and p.agency_id not in ancestry:
            raise forbidden("An admin key creates agencies under its own agency only.")
    if p is not None:
        _require_code_under(session, data.code, data.parent_id or p.agency_id)
    _check_code_free(session, data.code, None)
    agency = Agency.model_validate(data)
    add_recorded_sync(session, agency, p.actor if p else CLI, resource_type="agency", case_id=None)
    return agency


def require_managed(session: Session, p: Principal, agency: Agency) -> None:
    """An admin key changes the records of its own agency and of the agencies
    under it only: another agency's code names it to every agency (filters,
    the CLI), and its name and kind are that agency's to state. An agency
    another instance hosts changes there only."""
    if agency.home_instance is not None:
        raise forbidden(f"This agency lives on {agency.home_instance}: it changes there only.")
    if agency.id == p.agency_id:
        return
    if agency.parent_id is None or p.agency_id not in _ancestry(session, agency.parent_id):
        raise forbidden("An admin key changes its own agency and the agencies under it only.")


def update_agency(session: Session, p: Principal, agency: Agency, data: AgencyUpdate) -> Agency:
    changes = data.changes(agency)
    if changes.get("code", agency.code) != agency.code:
        _require_code_under(session, changes["code"], agency.parent_id)
        _check_code_free(session, changes["code"], agency.id)
    update_recorded_sync(session, agency, changes, p.actor, resource_type="agency", case_id=None)
    return agency


def set_parent(session: Session, actor: Actor, agency: Agency, parent_id: uuid.UUID | None) -> bool:
    """Move an agency in the hierarchy (which decides who reads AMBER cases).

    The caller has locked the row. Returns whether anything changed: setting
    the parent it already has writes nothing and records nothing.
    """
    if agency.home_instance is not None:
        raise forbidden(f"Agency {agency.code} lives on {agency.home_instance}: it changes there only.")
    if parent_id == agency.parent_id:
        return False
    if parent_id is not None and agency.id in _ancestry(session, parent_id):
        raise invalid(["parent_id"], "An agency cannot be its own ancestor.")
    update_recorded_sync(
        session, agency, {"parent_id": parent_id}, actor, resource_type="agency", case_id=None
    )
    return True
