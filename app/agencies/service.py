import functools
import uuid
from typing import Any

import sqlalchemy as sa

from app.agencies.models import Agency, AgencyCreate, AgencyUpdate
from app.auth.service import Principal
from app.core.crud import insert_recorded, update_recorded
from app.core.db import table_of
from app.core.errors import AppError, conflict, forbidden, invalid, not_found
from app.core.journal import CLI, Actor
from app.core.pagination import PageParams, keyset, read_page
from app.core.uow import Row, Statements, Tx

AGENCIES = table_of(Agency)
KEYS = (AGENCIES.c.created_at, AGENCIES.c.id)


@functools.cache
def _agencies_found(count: int) -> sa.Select[Any]:
    """Which of `count` agency ids (bind parameters a0, a1, ...) exist. One
    parameter each, not an IN list: the hot statements (app.core.uow) take values."""
    ids = AGENCIES.c.id
    return sa.select(ids).where(sa.or_(*(ids == sa.bindparam(f"a{i}") for i in range(count))))


def _wanted(refs: dict[str, uuid.UUID | None], known: uuid.UUID | None) -> dict[str, uuid.UUID]:
    """The bind parameters of _agencies_found() for the references to look up."""
    wanted = sorted({v for v in refs.values() if v is not None and v != known})
    return {f"a{i}": agency_id for i, agency_id in enumerate(wanted)}


def _require_found(refs: dict[str, uuid.UUID | None], known: uuid.UUID | None, found: set[uuid.UUID]) -> None:
    for field, value in refs.items():
        if value is not None and value != known and value not in found:
            raise invalid(["body", field], "No agency with this id.")


async def require_agencies(
    db: Statements, refs: dict[str, uuid.UUID | None], *, known: uuid.UUID | None = None
) -> None:
    """422 naming the field when a referenced agency does not exist. `known`:
    an agency that does (the caller's own), which costs no query."""
    if wanted := _wanted(refs, known):
        found = {row.id for row in await db.all(_agencies_found(len(wanted)), wanted)}
        _require_found(refs, known, found)


@functools.cache
def _list_statement(*, after: bool) -> sa.Select[Any]:
    return keyset(sa.select(AGENCIES), keys=KEYS, after=after)


async def list_agencies(db: Statements, params: PageParams) -> tuple[list[Row], str | None]:
    stmt = _list_statement(after=bool(params.cursor))
    return await read_page(db, stmt, {}, params, scope="agencies", keys=KEYS)


_BY_ID = sa.select(AGENCIES).where(AGENCIES.c.id == sa.bindparam("agency_id"))
_BY_ID_LOCKED = _BY_ID.with_for_update()
_BY_CODE = sa.select(AGENCIES).where(AGENCIES.c.code == sa.bindparam("code"))
_BY_CODE_LOCKED = _BY_CODE.with_for_update()


async def get_agency(db: Statements, agency_id: uuid.UUID, *, for_update: bool = False) -> Row:
    """The agency's row (its columns); 404 when there is none."""
    agency = await db.first(_BY_ID_LOCKED if for_update else _BY_ID, {"agency_id": agency_id})
    if agency is None:
        raise not_found("agency")
    return agency


async def get_agency_by_code(db: Statements, code: str, *, for_update: bool = False) -> Row:
    """The agency with this code (the host's commands name agencies by code)."""
    agency = await db.first(_BY_CODE_LOCKED if for_update else _BY_CODE, {"code": code})
    if agency is None:
        raise AppError(404, f"No agency with code {code!r}.", slug="not-found")
    return agency


_PARENT = AGENCIES.alias("parent")
_WITH_PARENTS = (
    sa.select(AGENCIES, _PARENT.c.code.label("parent_code"))
    .outerjoin(_PARENT, _PARENT.c.id == AGENCIES.c.parent_id)
    .order_by(AGENCIES.c.code)
)


async def agencies_with_parents(db: Statements) -> list[Row]:
    """Every agency (its columns) with its parent's code (`parent_code`), by code."""
    return await db.all(_WITH_PARENTS)


_CODE_TAKEN = sa.select(AGENCIES.c.id).where(AGENCIES.c.code == sa.bindparam("code"))
_CODE_TAKEN_BY_ANOTHER = _CODE_TAKEN.where(AGENCIES.c.id != sa.bindparam("agency_id"))


async def _check_code_free(db: Statements, code: str, agency_id: uuid.UUID | None) -> None:
    if agency_id is None:
        taken = await db.first(_CODE_TAKEN, {"code": code})
    else:
        taken = await db.first(_CODE_TAKEN_BY_ANOTHER, {"code": code, "agency_id": agency_id})
    if taken is not None:
        raise conflict(f"An agency with code {code!r} exists.")


_PARENT_OF = sa.select(AGENCIES.c.parent_id).where(AGENCIES.c.id == sa.bindparam("agency_id"))


async def _ancestry(db: Statements, parent_id: uuid.UUID) -> list[uuid.UUID]:
    """The parent and its ancestors, nearest first; 422 when the parent does not exist."""
    chain: list[uuid.UUID] = []
    current: uuid.UUID | None = parent_id
    while current is not None:
        if current in chain:  # a cycle written on the host: never loop on it
            raise invalid(["body", "parent_id"], "The parent's hierarchy has a cycle.")
        chain.append(current)
        parent = await db.first(_PARENT_OF, {"agency_id": current})
        if parent is None:
            raise invalid(["body", "parent_id"], "No agency with this id.")
        current = parent.parent_id
    return chain


_CODE_OF = sa.select(AGENCIES.c.code).where(AGENCIES.c.id == sa.bindparam("agency_id"))


async def _require_code_under(db: Statements, code: str, namespace_id: uuid.UUID | None) -> None:
    """A code an admin key gives starts with the code of the agency it is
    named under and a hyphen (under KZ-MVD: KZ-MVD-...). Codes name agencies
    to every agency and to the host: a free one taken by a key (EUROPOL)
    would pass the key's sub-agency off as that body and keep the host from
    registering the body itself. Only the host names an agency freely."""
    namespace = None if namespace_id is None else await db.scalar(_CODE_OF, {"agency_id": namespace_id})
    if namespace is None:
        raise invalid(["body", "code"], "The code of an agency with no parent is set on the host only.")
    prefix = f"{namespace}-"
    if not code.startswith(prefix) or code == prefix:
        raise invalid(["body", "code"], f"An admin key names an agency under its parent: {prefix}...")


async def create_agency(tx: Tx, p: Principal | None, data: AgencyCreate) -> Row:
    """`p` None is the host (CLI), which places an agency anywhere in the hierarchy.

    An admin key places a new agency only under its own agency or one of its
    sub-agencies: a sub-agency reads the AMBER cases its parent takes part
    in, so a key placing one under another agency would hand whoever gets
    the new agency's keys that agency's cases. It names the new agency
    under its parent (with no parent: under the key's own agency).
    """
    if data.parent_id is not None:
        ancestry = await _ancestry(tx, data.parent_id)
        if p is not None and p.agency_id not in ancestry:
            raise forbidden("An admin key creates agencies under its own agency only.")
    if p is not None:
        await _require_code_under(tx, data.code, data.parent_id or p.agency_id)
    await _check_code_free(tx, data.code, None)
    actor = p.actor if p else CLI
    return await insert_recorded(tx, Agency, data.model_dump(), actor, resource_type="agency", case_id=None)


async def require_managed(db: Statements, p: Principal, agency: Row) -> None:
    """An admin key changes the records of its own agency and of the agencies
    under it only: another agency's code names it to every agency (filters,
    the CLI), and its name and kind are that agency's to state. An agency
    another instance hosts changes there only."""
    if agency.home_instance is not None:
        raise forbidden(f"This agency lives on {agency.home_instance}: it changes there only.")
    if agency.id == p.agency_id:
        return
    if agency.parent_id is None or p.agency_id not in await _ancestry(db, agency.parent_id):
        raise forbidden("An admin key changes its own agency and the agencies under it only.")


async def update_agency(tx: Tx, p: Principal, agency: Row, data: AgencyUpdate) -> Row:
    """Apply a PATCH to the agency (locked by the caller); the row as it is now."""
    changes = data.changes(agency)
    if changes.get("code", agency.code) != agency.code:
        await _require_code_under(tx, changes["code"], agency.parent_id)
        await _check_code_free(tx, changes["code"], agency.id)
    return await update_recorded(tx, Agency, agency, changes, p.actor, resource_type="agency", case_id=None)


async def set_parent(tx: Tx, actor: Actor, agency: Row, parent_id: uuid.UUID | None) -> bool:
    """Move an agency in the hierarchy (which decides who reads AMBER cases).

    The caller has locked the row. Returns whether anything changed: setting
    the parent it already has writes nothing and records nothing.
    """
    if agency.home_instance is not None:
        raise forbidden(f"Agency {agency.code} lives on {agency.home_instance}: it changes there only.")
    if parent_id == agency.parent_id:
        return False
    if parent_id is not None and agency.id in await _ancestry(tx, parent_id):
        raise invalid(["parent_id"], "An agency cannot be its own ancestor.")
    await update_recorded(
        tx, Agency, agency, {"parent_id": parent_id}, actor, resource_type="agency", case_id=None
    )
    return True
