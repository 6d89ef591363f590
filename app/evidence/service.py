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

from app import access
from app.agencies.service import require_agencies
from app.auth.service import Principal
from app.core.crud import delete_recorded, insert_recorded, update_recorded
from app.core.db import new_row, table_of, utcnow
from app.core.errors import conflict, invalid, not_found
from app.core.journal import Change
from app.core.pagination import PageParams, keyset, read_page, rows_under
from app.core.uow import Row, Statements, Tx
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
from app.locations.service import require_location_in_case

STATUS_AFTER = {
    CustodyAction.transferred: ItemStatus.transferred,
    CustodyAction.examined: ItemStatus.under_examination,
    CustodyAction.returned: ItemStatus.returned,
    CustodyAction.destroyed: ItemStatus.destroyed,
}
CLOSED_STATUSES = (ItemStatus.returned, ItemStatus.destroyed)


SEIZED_ITEMS = table_of(SeizedItem)
CUSTODY_EVENTS = table_of(CustodyEvent)
ITEM_KEYS = (SEIZED_ITEMS.c.created_at, SEIZED_ITEMS.c.id)
EVENT_KEYS = (CUSTODY_EVENTS.c.seq,)

_OF_ITEM = CUSTODY_EVENTS.c.seized_item_id == sa.bindparam("item_id")
# The last event of a chain: what the next one must not predate, and its seq + 1.
_LAST_EVENT = (
    sa.select(CUSTODY_EVENTS.c.seq, CUSTODY_EVENTS.c.at)
    .where(_OF_ITEM)
    .order_by(CUSTODY_EVENTS.c.seq.desc())
    .limit(1)
)
# The earliest event after the seizure (the chain's first, seq 1), which
# the item's seized_at may not pass.
_FIRST_LATER_AT = sa.select(sa.func.min(CUSTODY_EVENTS.c.at).label("at")).where(
    _OF_ITEM, CUSTODY_EVENTS.c.seq > 1
)
_AFTER_SEIZURE = (
    sa.select(CUSTODY_EVENTS.c.id).where(_OF_ITEM, CUSTODY_EVENTS.c.action != CustodyAction.seized).limit(1)
)
_DELETE_CHAIN = sa.delete(CUSTODY_EVENTS).where(_OF_ITEM)
_EVENT = sa.select(CUSTODY_EVENTS).where(_OF_ITEM, CUSTODY_EVENTS.c.id == sa.bindparam("event_id"))


@functools.cache
def _items_statement(*, category: bool, after: bool) -> sa.Select[Any]:
    stmt = sa.select(SEIZED_ITEMS).where(SEIZED_ITEMS.c.case_id == sa.bindparam("case_id"))
    if category:
        stmt = stmt.where(SEIZED_ITEMS.c.category == sa.bindparam("category"))
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
    """The item (its row) and its seizure, the first event of its chain, in one statement."""
    seized_by = data.seized_by_agency_id or p.agency_id
    custodian = data.custodian_agency_id or seized_by
    refs: dict[str, uuid.UUID | None] = {"seized_by_agency_id": seized_by, "custodian_agency_id": custodian}
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
    await tx.insert([(SEIZED_ITEMS, [item]), (CUSTODY_EVENTS, [seizure])])
    tx.changes.extend(
        [
            Change.created(p.actor, "seized_item", item["id"], case_id),
            Change.created(p.actor, "custody_event", seizure["id"], case_id),
        ]
    )
    return item


async def update_item(tx: Tx, p: Principal, item: Row, data: SeizedItemUpdate) -> Row:
    """Change the item (locked by the caller); the item as it is now."""
    changes = data.changes(item)
    seized_at = changes.get("seized_at")
    if seized_at is not None and seized_at != item.seized_at:
        first_later = await tx.scalar(_FIRST_LATER_AT, {"item_id": item.id})
        if first_later is not None and seized_at > first_later:
            raise invalid(["body", "seized_at"], "seized_at must not be after the events that followed it.")
    if "location_id" in changes:
        await require_location_in_case(tx, changes["location_id"], item.case_id)
    return await update_recorded(
        tx, SeizedItem, item, changes, p.actor, resource_type="seized_item", case_id=item.case_id
    )


async def delete_item(tx: Tx, p: Principal, item: Row) -> None:
    """Delete the item (locked by the caller) with its seizure, the only event it may have."""
    if await tx.first(_AFTER_SEIZURE, {"item_id": item.id}) is not None:
        raise conflict(
            "The chain of custody has events after the seizure; record 'returned' or "
            "'destroyed' instead of deleting."
        )
    await tx.execute(_DELETE_CHAIN, {"item_id": item.id})
    await delete_recorded(tx, SeizedItem, item, p.actor, resource_type="seized_item", case_id=item.case_id)


async def custody_chain(
    db: Statements, item_id: uuid.UUID, params: PageParams
) -> tuple[list[Row], str | None]:
    """A page of the item's events in order; the caller checked it may read the item."""
    column = CUSTODY_EVENTS.c.seized_item_id
    return await rows_under(db, column, item_id, params, scope=f"custody:{item_id}", keys=EVENT_KEYS)


async def add_custody_event(tx: Tx, p: Principal, item: Row, data: CustodyEventCreate) -> Row:
    """Append one event; the caller holds the item's row lock, so the last
    event read here stays the last until commit."""
    await require_agencies(tx, {"from_agency_id": data.from_agency_id, "to_agency_id": data.to_agency_id})
    if data.action == CustodyAction.seized:
        raise conflict("An item is seized once: the seizure is the first event of its chain.")
    if item.status in CLOSED_STATUSES:
        raise conflict(f"The item was {item.status.value}; its chain of custody is closed.")
    last = await tx.first(_LAST_EVENT, {"item_id": item.id})
    assert last is not None, "every item's chain begins with its seizure"
    at = data.at or utcnow()
    if at < last.at:
        raise conflict("A custody event cannot predate the previous event of the chain.")
    if item.seized_at is not None and at < item.seized_at:
        raise conflict("A custody event cannot predate the seizure.")
    from_agency = data.from_agency_id
    changes: dict[str, Any] = {"status": STATUS_AFTER[data.action]}
    if data.action == CustodyAction.transferred:
        if data.to_agency_id is None:
            raise invalid(["body", "to_agency_id"], "A transfer names the receiving agency.")
        from_agency = from_agency or item.custodian_agency_id
        if from_agency != item.custodian_agency_id:
            raise conflict("A transfer starts at the item's current custodian.")
        if data.to_agency_id == item.custodian_agency_id:
            raise conflict("The receiving agency already holds the item.")
        changes["custodian_agency_id"] = data.to_agency_id
    values = {
        "seized_item_id": item.id,
        "seq": last.seq + 1,
        "action": data.action,
        "from_agency_id": from_agency,
        "to_agency_id": data.to_agency_id,
        "at": at,
        "note": data.note,
        "recorded_by_agency_id": p.agency_id,
    }
    event = await insert_recorded(
        tx, CustodyEvent, values, p.actor, resource_type="custody_event", case_id=item.case_id
    )
    await update_recorded(
        tx, SeizedItem, item, changes, p.actor, resource_type="seized_item", case_id=item.case_id
    )
    return event


async def get_custody_event(db: Statements, item_id: uuid.UUID, event_id: uuid.UUID) -> Row:
    """One event of the item's chain; the caller checked it may read the item."""
    event = await db.first(_EVENT, {"item_id": item_id, "event_id": event_id})
    if event is None:
        raise not_found("custody event")
    return event
