"""Seized items and their chain of custody.

The chain is append-only: its first event is the seizure, written with the
item; each later event must not predate the one before, nor the item's
`seized_at` (which cannot move past the events that followed); a transfer must
start at the current custodian and moves the item to the receiving agency;
after `returned` or `destroyed` the chain is closed.
"""

import functools
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import access
from app.agencies.service import require_agencies, require_agencies_sync
from app.auth.service import Principal
from app.core.uow import Statements, Tx
from app.crud import add_recorded_sync, delete_recorded_sync, update_recorded_sync
from app.db import new_row, utcnow
from app.errors import conflict, invalid, not_found
from app.evidence.models import (
    Category,
    CustodyAction,
    CustodyEvent,
    CustodyEventCreate,
    ItemStatus,
    SeizedItem,
    SeizedItemCreate,
    SeizedItemUpdate,
)
from app.journal import Change
from app.locations.service import require_location_in_case, require_location_in_case_sync
from app.pagination import PageParams, keyset, paginate_sync, read_page

STATUS_AFTER = {
    CustodyAction.transferred: ItemStatus.transferred,
    CustodyAction.examined: ItemStatus.under_examination,
    CustodyAction.returned: ItemStatus.returned,
    CustodyAction.destroyed: ItemStatus.destroyed,
}
CLOSED_STATUSES = (ItemStatus.returned, ItemStatus.destroyed)


ITEM_KEYS = (SeizedItem.created_at, SeizedItem.id)


@functools.cache
def _items_statement(*, category: bool, after: bool) -> sa.Select[Any]:
    stmt = sa.select(SeizedItem).where(SeizedItem.case_id == sa.bindparam("case_id"))
    if category:
        stmt = stmt.where(SeizedItem.category == sa.bindparam("category"))
    return access.in_case_seen_in_full(keyset(stmt, keys=ITEM_KEYS, after=after), ITEM_KEYS)


async def list_items(
    reads: Statements, p: Principal, case_id: uuid.UUID, params: PageParams, *, category: Category | None
) -> tuple[list[Any], str | None]:
    """A page of the case's items; 404 unless the caller sees the case in full (one statement)."""
    stmt = _items_statement(category=category is not None, after=bool(params.cursor))
    values = access.principal_params(p) | {"case_id": case_id, "category": category}
    return await read_page(
        reads, stmt, values, params, scope=f"seized-items:{case_id}", keys=ITEM_KEYS, in_case=True
    )


async def create_item(tx: Tx, p: Principal, case_id: uuid.UUID, data: SeizedItemCreate) -> dict[str, Any]:
    """The item (its row) and its seizure, the first event of its chain; on the hot write (app.core.uow)."""
    seized_by = data.seized_by_agency_id or p.agency_id
    custodian = data.custodian_agency_id or seized_by
    refs = {"seized_by_agency_id": seized_by, "custodian_agency_id": custodian}
    await require_agencies(tx, refs, known=p.agency_id)
    await require_location_in_case(tx, data.location_id, case_id)
    item = new_row(
        SeizedItem,
        **data.model_dump(exclude={"seized_by_agency_id", "custodian_agency_id"}),
        case_id=case_id,
        seized_by_agency_id=seized_by,
        custodian_agency_id=custodian,
    )
    seizure = new_row(
        CustodyEvent,
        seized_item_id=item["id"],
        seq=1,
        action=CustodyAction.seized,
        from_agency_id=None,
        to_agency_id=custodian,
        at=item["seized_at"] or utcnow(),
        recorded_by_agency_id=p.agency_id,
    )
    await tx.insert([(SeizedItem.__table__, [item]), (CustodyEvent.__table__, [seizure])])  # type: ignore[attr-defined]
    tx.changes += [
        Change.created(p.actor, "seized_item", item["id"], case_id),
        Change.created(p.actor, "custody_event", seizure["id"], case_id),
    ]
    return item


def update_item(session: Session, p: Principal, item: SeizedItem, data: SeizedItemUpdate) -> SeizedItem:
    changes = data.changes(item)
    seized_at = changes.get("seized_at")
    if seized_at is not None and seized_at != item.seized_at:
        later = [event.at for event in _chain(session, item.id)[1:]]
        if later and seized_at > min(later):
            raise invalid(["body", "seized_at"], "seized_at must not be after the events that followed it.")
    if "location_id" in changes:
        require_location_in_case_sync(session, changes["location_id"], item.case_id)
    update_recorded_sync(session, item, changes, p.actor, resource_type="seized_item", case_id=item.case_id)
    return item


def _chain(session: Session, item_id: uuid.UUID) -> list[CustodyEvent]:
    return list(
        session.execute(
            sa.select(CustodyEvent).where(CustodyEvent.seized_item_id == item_id).order_by(CustodyEvent.seq)
        ).scalars()
    )


def delete_item(session: Session, p: Principal, item: SeizedItem) -> None:
    chain = _chain(session, item.id)
    if any(event.action != CustodyAction.seized for event in chain):
        raise conflict(
            "The chain of custody has events after the seizure; record 'returned' or "
            "'destroyed' instead of deleting."
        )
    for event in chain:
        session.delete(event)
    delete_recorded_sync(session, item, p.actor, resource_type="seized_item", case_id=item.case_id)


def custody_chain(
    session: Session, item_id: uuid.UUID, params: PageParams
) -> tuple[list[CustodyEvent], str | None]:
    scope = f"custody:{item_id}"
    return paginate_sync(
        session,
        sa.select(CustodyEvent).where(CustodyEvent.seized_item_id == item_id),
        params,
        scope=scope,
        keys=(CustodyEvent.seq,),
    )


def add_custody_event(
    session: Session, p: Principal, item: SeizedItem, data: CustodyEventCreate
) -> CustodyEvent:
    """Append one event; the caller holds the item's row lock."""
    require_agencies_sync(session, {"from_agency_id": data.from_agency_id, "to_agency_id": data.to_agency_id})
    if data.action == CustodyAction.seized:
        raise conflict("An item is seized once: the seizure is the first event of its chain.")
    if item.status in CLOSED_STATUSES:
        raise conflict(f"The item was {item.status.value}; its chain of custody is closed.")
    last = _chain(session, item.id)[-1]
    at = data.at or utcnow()
    if at < last.at:
        raise conflict("A custody event cannot predate the previous event of the chain.")
    if item.seized_at is not None and at < item.seized_at:
        raise conflict("A custody event cannot predate the seizure.")
    from_agency = data.from_agency_id
    changes: dict[str, object] = {"status": STATUS_AFTER[data.action]}
    if data.action == CustodyAction.transferred:
        if data.to_agency_id is None:
            raise invalid(["body", "to_agency_id"], "A transfer names the receiving agency.")
        from_agency = from_agency or item.custodian_agency_id
        if from_agency != item.custodian_agency_id:
            raise conflict("A transfer starts at the item's current custodian.")
        if data.to_agency_id == item.custodian_agency_id:
            raise conflict("The receiving agency already holds the item.")
        changes["custodian_agency_id"] = data.to_agency_id
    event = CustodyEvent(
        seized_item_id=item.id,
        seq=last.seq + 1,
        action=data.action,
        from_agency_id=from_agency,
        to_agency_id=data.to_agency_id,
        at=at,
        note=data.note,
        recorded_by_agency_id=p.agency_id,
    )
    add_recorded_sync(session, event, p.actor, resource_type="custody_event", case_id=item.case_id)
    update_recorded_sync(session, item, changes, p.actor, resource_type="seized_item", case_id=item.case_id)
    return event


def get_custody_event(session: Session, item_id: uuid.UUID, event_id: uuid.UUID) -> CustodyEvent:
    event = session.execute(
        sa.select(CustodyEvent).where(CustodyEvent.id == event_id, CustodyEvent.seized_item_id == item_id)
    ).scalar_one_or_none()
    if event is None:
        raise not_found("custody event")
    return event
