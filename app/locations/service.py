"""Search locations of a case: where items were seized and people detained."""

import functools
import uuid
from typing import Any

import sqlalchemy as sa

from app import access
from app.agencies.service import require_agencies
from app.auth.service import Principal
from app.core.crud import delete_recorded, insert_recorded, update_recorded
from app.core.db import table_of
from app.core.errors import conflict, invalid
from app.core.pagination import PageParams, keyset, read_page
from app.core.uow import Row, Statements, Tx
from app.detainees.models import Detainee
from app.evidence.models import SeizedItem
from app.locations.models import Location, LocationCreate, LocationUpdate

LOCATIONS = table_of(Location)
KEYS = (LOCATIONS.c.created_at, LOCATIONS.c.id)

_IN_CASE = sa.select(LOCATIONS.c.id).where(
    LOCATIONS.c.id == sa.bindparam("location_id"), LOCATIONS.c.case_id == sa.bindparam("case_id")
)
# What refers to a location, which may not be deleted while anything does.
_USED = tuple(
    sa.select(table.c.id).where(table.c.location_id == sa.bindparam("location_id")).limit(1)
    for table in (table_of(SeizedItem), table_of(Detainee))
)


async def require_location_in_case(db: Statements, location_id: uuid.UUID | None, case_id: uuid.UUID) -> None:
    """422 naming `location_id` unless it is None or a location of this case."""
    if location_id is not None:
        found = await db.first(_IN_CASE, {"location_id": location_id, "case_id": case_id})
        if found is None:
            raise invalid(["body", "location_id"], "No location with this id in this case.")


@functools.cache
def _list_statement(*, after: bool) -> sa.Select[Any]:
    stmt = sa.select(LOCATIONS).where(LOCATIONS.c.case_id == sa.bindparam("case_id"))
    return access.in_case_seen_in_full(keyset(stmt, keys=KEYS, after=after), KEYS)


async def list_locations(
    db: Statements, p: Principal, case_id: uuid.UUID, params: PageParams
) -> tuple[list[Row], str | None]:
    """A page of the case's locations; 404 unless the caller sees the case in full (one statement)."""
    stmt = _list_statement(after=bool(params.cursor))
    values = access.principal_params(p) | {"case_id": case_id}
    return await read_page(db, stmt, values, params, scope=f"locations:{case_id}", keys=KEYS, in_case=True)


async def create_location(tx: Tx, p: Principal, case_id: uuid.UUID, data: LocationCreate) -> Row:
    await require_agencies(tx, {"searched_by_agency_id": data.searched_by_agency_id})
    values = data.model_dump() | {"case_id": case_id}
    return await insert_recorded(tx, Location, values, p.actor, resource_type="location", case_id=case_id)


async def update_location(tx: Tx, p: Principal, location: Row, data: LocationUpdate) -> Row:
    """Change the location (locked by the caller); the location as it is now."""
    changes = data.changes(location)
    await require_agencies(tx, {"searched_by_agency_id": changes.get("searched_by_agency_id")})
    return await update_recorded(
        tx, Location, location, changes, p.actor, resource_type="location", case_id=location.case_id
    )


async def delete_location(tx: Tx, p: Principal, location: Row) -> None:
    """Delete the location (locked by the caller); 409 while seized items or detainees refer to it."""
    for used in _USED:
        if await tx.first(used, {"location_id": location.id}) is not None:
            raise conflict("Seized items or detainees refer to this location.")
    await delete_recorded(tx, Location, location, p.actor, resource_type="location", case_id=location.case_id)
