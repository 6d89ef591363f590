import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.agencies.service import require_agencies_sync
from app.auth.service import Principal
from app.core.uow import Statements
from app.crud import add_recorded_sync, delete_recorded_sync, update_recorded_sync
from app.detainees.models import Detainee
from app.errors import conflict, invalid
from app.evidence.models import SeizedItem
from app.locations.models import Location, LocationCreate, LocationUpdate
from app.pagination import PageParams, paginate_sync

_IN_CASE = sa.select(Location.id).where(
    Location.id == sa.bindparam("location_id"), Location.case_id == sa.bindparam("case_id")
)


def require_location_in_case_sync(
    session: Session, location_id: uuid.UUID | None, case_id: uuid.UUID
) -> None:
    if location_id is not None:
        found = session.execute(_IN_CASE, {"location_id": location_id, "case_id": case_id}).first()
        _require_found(found is not None)


async def require_location_in_case(db: Statements, location_id: uuid.UUID | None, case_id: uuid.UUID) -> None:
    """require_location_in_case() on the hot statements."""
    if location_id is not None:
        found = await db.first(_IN_CASE, {"location_id": location_id, "case_id": case_id})
        _require_found(found is not None)


def _require_found(found: bool) -> None:
    if not found:
        raise invalid(["body", "location_id"], "No location with this id in this case.")


def list_locations(
    session: Session, case_id: uuid.UUID, params: PageParams
) -> tuple[list[Location], str | None]:
    return paginate_sync(
        session,
        sa.select(Location).where(Location.case_id == case_id),
        params,
        scope=f"locations:{case_id}",
        keys=(Location.created_at, Location.id),
    )


def create_location(session: Session, p: Principal, case_id: uuid.UUID, data: LocationCreate) -> Location:
    require_agencies_sync(session, {"searched_by_agency_id": data.searched_by_agency_id})
    location = Location.model_validate(data, update={"case_id": case_id})
    add_recorded_sync(session, location, p.actor, resource_type="location", case_id=case_id)
    return location


def update_location(session: Session, p: Principal, location: Location, data: LocationUpdate) -> Location:
    changes = data.changes(location)
    require_agencies_sync(session, {"searched_by_agency_id": changes.get("searched_by_agency_id")})
    update_recorded_sync(
        session, location, changes, p.actor, resource_type="location", case_id=location.case_id
    )
    return location


def delete_location(session: Session, p: Principal, location: Location) -> None:
    for model in (SeizedItem, Detainee):
        used = session.execute(sa.select(model.id).where(model.location_id == location.id).limit(1)).first()
        if used:
            raise conflict("Seized items or detainees refer to this location.")
    delete_recorded_sync(session, location, p.actor, resource_type="location", case_id=location.case_id)
