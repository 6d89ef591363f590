"""Case bundles: export a case with everything under it; import one as a new case.

An import is all or nothing. The whole document is checked before the
first row is written (shape by the models, references, agencies and chains
of custody here), so a bad bundle answers 422 naming the bad field and
leaves nothing behind. Rows are then written in bulk, one INSERT per table
and not one flush per row, each recorded in the journal like a single
create would be.
"""

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.auth.service import Principal
from app.bundles.models import (
    Bundle,
    BundleCase,
    BundleCustodyEvent,
    BundleDetainee,
    BundleLocation,
    BundleParticipant,
    BundleSeizedItem,
)
from app.cases.models import Case
from app.db import bulk_insert, utcnow
from app.detainees.models import PERSONAL_FIELDS, Detainee
from app.detainees.service import one_year_after, present, require_personal_scope
from app.errors import conflict, invalid
from app.evidence.models import CustodyAction, CustodyEvent, ItemStatus, SeizedItem
from app.evidence.service import CLOSED_STATUSES, STATUS_AFTER
from app.journal import record
from app.locations.models import Location
from app.participants.models import Participant, Role

Loc = list[str | int]


# --- export ---------------------------------------------------------------------------------------------


def _ordered(session: Session, model: Any, case_id: uuid.UUID) -> list[Any]:
    return list(
        session.execute(
            sa.select(model).where(model.case_id == case_id).order_by(model.created_at, model.id)
        ).scalars()
    )


def export_case(session: Session, p: Principal, case: Case, *, purpose: str | None) -> Bundle:
    """The case as a bundle; detainees' personal data only as `present` allows (and audits)."""
    participants = session.execute(
        sa.select(Participant).where(Participant.case_id == case.id).order_by(Participant.agency_id)
    ).scalars()
    locations = _ordered(session, Location, case.id)
    items = _ordered(session, SeizedItem, case.id)
    chains: dict[uuid.UUID, list[CustodyEvent]] = defaultdict(list)
    for event in session.execute(
        sa.select(CustodyEvent)
        .join(SeizedItem, SeizedItem.id == CustodyEvent.seized_item_id)
        .where(SeizedItem.case_id == case.id)
        .order_by(CustodyEvent.seized_item_id, CustodyEvent.seq)
    ).scalars():
        chains[event.seized_item_id].append(event)
    detainees = present(
        session, p, purpose, _ordered(session, Detainee, case.id), case_id=case.id, resource_id=None
    )

    def fields(model: type[Any], row: Any) -> dict[str, Any]:
        return {name: getattr(row, name) for name in model.model_fields if hasattr(row, name)}

    return Bundle.model_construct(
        bundle_version=1,
        case=BundleCase.model_construct(**fields(BundleCase, case)),
        participants=[
            BundleParticipant.model_construct(agency_id=x.agency_id, role=x.role) for x in participants
        ],
        locations=[BundleLocation.model_construct(**fields(BundleLocation, x)) for x in locations],
        seized_items=[
            BundleSeizedItem.model_construct(
                **fields(BundleSeizedItem, item),
                custody=[
                    BundleCustodyEvent.model_construct(**fields(BundleCustodyEvent, e))
                    for e in chains[item.id]
                ],
            )
            for item in items
        ],
        detainees=[BundleDetainee.model_construct(**fields(BundleDetainee, d)) for d in detainees],
    )


# --- import: checks -------------------------------------------------------------------------------------


def _unique_ids(rows: list[Any], section: str) -> None:
    seen: set[uuid.UUID] = set()
    for n, row in enumerate(rows):
        if row.id in seen:
            raise invalid(["body", section, n, "id"], f"Another entry of {section} has this id.")
        seen.add(row.id)


def _require_locations(bundle: Bundle) -> None:
    known = {x.id for x in bundle.locations}
    for section, rows in (("seized_items", bundle.seized_items), ("detainees", bundle.detainees)):
        for n, row in enumerate(rows):
            if row.location_id is not None and row.location_id not in known:
                raise invalid(["body", section, n, "location_id"], "No location with this id in the bundle.")


def _agency_refs(bundle: Bundle) -> Iterator[tuple[Loc, uuid.UUID | None]]:
    for n, loc in enumerate(bundle.locations):
        yield ["body", "locations", n, "searched_by_agency_id"], loc.searched_by_agency_id
    for n, item in enumerate(bundle.seized_items):
        yield ["body", "seized_items", n, "seized_by_agency_id"], item.seized_by_agency_id
        yield ["body", "seized_items", n, "custodian_agency_id"], item.custodian_agency_id
        for k, event in enumerate(item.custody):
            for name in ("from_agency_id", "to_agency_id", "recorded_by_agency_id"):
                yield ["body", "seized_items", n, "custody", k, name], getattr(event, name)
    for n, det in enumerate(bundle.detainees):
        yield ["body", "detainees", n, "detained_by_agency_id"], det.detained_by_agency_id


def _require_agencies(session: Session, bundle: Bundle) -> None:
    refs = [(loc, agency_id) for loc, agency_id in _agency_refs(bundle) if agency_id is not None]
    wanted = {agency_id for _, agency_id in refs}
    found = (
        set(session.execute(sa.select(Agency.id).where(Agency.id.in_(wanted))).scalars()) if wanted else set()
    )
    for loc, agency_id in refs:
        if agency_id not in found:
            raise invalid(loc, "No agency with this id on this instance.")


def _replay_chain(item: BundleSeizedItem, at: Loc) -> tuple[list[dict[str, Any]], ItemStatus]:
    """The item's chain checked by the rules of app.evidence.service: the events
    to write and the status they leave the item in.

    The seizure hands the item to its first custodian; each later event keeps
    time order, a transfer starts at the current custodian and moves the item
    on, and nothing follows `returned` or `destroyed`. The chain must end
    where the item says it is (custodian and status).
    """
    first = item.custody[0]
    if first.action != CustodyAction.seized:
        raise invalid([*at, "custody", 0, "action"], "A chain of custody starts with the seizure.")
    custodian, status = first.to_agency_id, ItemStatus.seized
    events = [{**first.model_dump(), "seq": 1}]
    for k, event in enumerate(item.custody[1:], start=1):
        loc = [*at, "custody", k]
        if event.action == CustodyAction.seized:
            raise invalid([*loc, "action"], "An item is seized once: the seizure is the first event.")
        if status in CLOSED_STATUSES:
            raise invalid([*loc, "action"], f"The item was {status.value}; its chain of custody is closed.")
        if event.at < item.custody[k - 1].at:
            raise invalid([*loc, "at"], "A custody event cannot predate the previous event of the chain.")
        if item.seized_at is not None and event.at < item.seized_at:
            raise invalid([*loc, "at"], "A custody event cannot predate the seizure (seized_at).")
        data = {**event.model_dump(), "seq": k + 1}
        if event.action == CustodyAction.transferred:
            if event.to_agency_id is None:
                raise invalid([*loc, "to_agency_id"], "A transfer names the receiving agency.")
            data["from_agency_id"] = event.from_agency_id or custodian
            if data["from_agency_id"] != custodian:
                raise invalid([*loc, "from_agency_id"], "A transfer starts at the item's current custodian.")
            if event.to_agency_id == custodian:
                raise invalid([*loc, "to_agency_id"], "The receiving agency already holds the item.")
            custodian = event.to_agency_id
        status = STATUS_AFTER[event.action]
        events.append(data)
    if item.custodian_agency_id != custodian:
        raise invalid([*at, "custodian_agency_id"], "The custodian is not where the chain of custody ends.")
    if item.status is not None and item.status != status:
        raise invalid([*at, "status"], f"The chain of custody leaves the item {status.value}.")
    return events, status


# --- import: writing ------------------------------------------------------------------------------------


def import_bundle(session: Session, p: Principal, bundle: Bundle) -> Case:
    """Create the bundle's case, led by the caller's agency, with new ids for every row.

    The bundle's participants are not carried over: on this instance, who
    takes part in a case is decided by its lead, and the importing agency
    becomes that lead. Listing agencies that agreed to share with the
    exporter would grant them access here that nobody here decided. The
    importer adds participants afterwards. For the same reason their
    agencies need not exist here; every agency a carried-over row names
    (searched by, seized by, custodian, custody events, detained by) must.

    Values are kept as exported, not defaulted as a single create would:
    an unknown seizing agency stays unknown rather than becoming the importer.
    """
    for section in ("locations", "seized_items", "detainees"):
        _unique_ids(getattr(bundle, section), section)
    _require_locations(bundle)
    _require_agencies(session, bundle)
    chains = [_replay_chain(item, ["body", "seized_items", n]) for n, item in enumerate(bundle.seized_items)]
    for det in bundle.detainees:
        require_personal_scope(p, det.model_dump(include=set(PERSONAL_FIELDS)))
    reference = bundle.case.reference
    if session.execute(sa.select(Case.id).where(Case.reference == reference)).first():
        raise conflict(f"A case with reference {reference!r} exists.")

    now = utcnow()
    # Rows get creation times a microsecond apart in bundle order: lists are
    # ordered by (created_at, id), so the new case lists them, and exports
    # them again, in the order they came.
    ticks = (now + timedelta(microseconds=n) for n in range(10**9))

    def stamps() -> dict[str, datetime]:
        at = next(ticks)
        return {"created_at": at, "updated_at": at}

    case = Case.model_validate(
        bundle.case.model_dump(exclude={"id"}), update={"lead_agency_id": p.agency_id, **stamps()}
    )
    session.add(case)
    session.flush()
    lead = {"case_id": case.id, "agency_id": p.agency_id, "role": Role.lead, "version": 1, **stamps()}

    location_ids = {x.id: uuid.uuid4() for x in bundle.locations}
    locations = [
        {
            **x.model_dump(exclude={"id"}),
            "id": location_ids[x.id],
            "case_id": case.id,
            "version": 1,
            **stamps(),
        }
        for x in bundle.locations
    ]
    items: list[dict[str, Any]] = []
    custody: list[dict[str, Any]] = []
    for item, (chain, status) in zip(bundle.seized_items, chains, strict=True):
        item_id = uuid.uuid4()
        data = item.model_dump(exclude={"id", "status", "custody"})
        items.append(
            {
                **data,
                "id": item_id,
                "case_id": case.id,
                "location_id": location_ids.get(data["location_id"]),
                "status": status,
                "version": 1,
                **stamps(),
            }
        )
        custody.extend(
            {**event, "id": uuid.uuid4(), "seized_item_id": item_id, **stamps()} for event in chain
        )
    detainees = []
    for det in bundle.detainees:
        data = det.model_dump(exclude={"id", "personal_data_redacted"})
        review_due = data["review_due"] or one_year_after((det.detained_at or now).date())
        detainees.append(
            {
                **data,
                "id": uuid.uuid4(),
                "case_id": case.id,
                "location_id": location_ids.get(data["location_id"]),
                "review_due": review_due,
                "version": 1,
                **stamps(),
            }
        )

    for model, rows in (
        (Participant, [lead]),
        (Location, locations),
        (SeizedItem, items),
        (CustodyEvent, custody),
        (Detainee, detainees),
    ):
        bulk_insert(session, model.__table__, rows)  # type: ignore[attr-defined]

    _journal(session, p, case, locations=locations, items=items, custody=custody, detainees=detainees)
    return case


def _journal(session: Session, p: Principal, case: Case, **sections: list[dict[str, Any]]) -> None:
    """One record per created row, like the single routes, and one for the import itself."""

    def note(action: str, resource_type: str, resource_id: uuid.UUID, *, emit: bool = True) -> None:
        record(
            session,
            p.actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            case_id=case.id,
            emit_event=emit,
        )

    note("case.created", "case", case.id)
    note("participant.created", "participant", p.agency_id)
    for section, resource_type in (
        ("locations", "location"),
        ("items", "seized_item"),
        ("custody", "custody_event"),
        ("detainees", "detainee"),
    ):
        for row in sections[section]:
            note(f"{resource_type}.created", resource_type, row["id"])
    note("bundle.imported", "case", case.id, emit=False)
