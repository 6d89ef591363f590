"""Case bundles: export a case with everything under it; import one as a new case.

An import is all or nothing. The whole document is checked before the
first row is written (shape by the models, references, agencies and chains
of custody here), so a bad bundle answers 422 naming the bad field and
leaves nothing behind. The check is bounded work whatever the document
holds: rows are validated one at a time, and a 422 shows the first errors
and counts the rest. Rows are then written in bulk, one INSERT (or COPY)
per table, before the journal lock is taken; the import is recorded as one
change, with one audit entry and one feed event (see _journal).

Attachments travel as metadata only. An import attaches a file only where
this instance holds it and the importer can already download it (see
_attachment_rows); the rest is counted, never a row naming bytes that are
not here.
"""

import functools
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from app import access
from app.agencies.models import Agency
from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.attachments.storage import Storage
from app.auth.service import Principal
from app.bundles.models import (
    MAX_ROWS,
    Bundle,
    BundleAttachment,
    BundleCase,
    BundleCustodyEvent,
    BundleDetainee,
    BundleLocation,
    BundleParticipant,
    BundleSeizedItem,
    BundleSource,
)
from app.cases.models import Case, derived_columns, origin_of
from app.cases.service import require_reference_free
from app.core.crud import row_type
from app.core.db import new_row, table_of, utcnow
from app.core.errors import (
    MAX_ERRORS,
    AppError,
    invalid,
    malformed_json,
    shown_error,
    validation_problem,
)
from app.core.http import strict_json
from app.core.journal import record
from app.core.types import RequestModel
from app.core.uow import Row, Statements, Tx, all_of, one_of
from app.detainees.models import Detainee
from app.detainees.service import one_year_after, personal_fields_set, present, require_personal_scope
from app.evidence.models import CustodyAction, CustodyEvent, ItemStatus, SeizedItem
from app.evidence.service import CLOSED_STATUSES, STATUS_AFTER
from app.identifiers import service as identifiers
from app.identifiers.models import IdentifierTransfer as BundleIdentifier
from app.locations.models import Location
from app.participants.models import Participant, Role

Loc = list[str | int]


# --- export ---------------------------------------------------------------------------------------------


_PARTICIPANTS = table_of(Participant)
_ITEMS = table_of(SeizedItem)
_CUSTODY = table_of(CustodyEvent)
_AGENCIES = table_of(Agency)


@functools.cache
def _ordered(table: sa.Table) -> sa.Select[Any]:
    """A case's rows of `table` in list order."""
    return (
        sa.select(table)
        .where(table.c.case_id == sa.bindparam("case_id"))
        .order_by(table.c.created_at, table.c.id)
    )


_CASE_PARTICIPANTS = (
    sa.select(_PARTICIPANTS)
    .where(_PARTICIPANTS.c.case_id == sa.bindparam("case_id"))
    .order_by(_PARTICIPANTS.c.agency_id)
)
_CASE_CUSTODY = (
    sa.select(_CUSTODY)
    .join(_ITEMS, _ITEMS.c.id == _CUSTODY.c.seized_item_id)
    .where(_ITEMS.c.case_id == sa.bindparam("case_id"))
    .order_by(_CUSTODY.c.seized_item_id, _CUSTODY.c.seq)
)


async def export_case(tx: Tx, p: Principal, case: Row, *, purpose: str | None) -> Bundle:
    """The case as a bundle; detainees' personal data only as `present` allows (and audits)."""
    this = {"case_id": case.id}
    participants = await tx.all(_CASE_PARTICIPANTS, this)
    locations = await tx.all(_ordered(table_of(Location)), this)
    items = await tx.all(_ordered(_ITEMS), this)
    chains: dict[uuid.UUID, list[Row]] = defaultdict(list)
    for event in await tx.all(_CASE_CUSTODY, this):
        chains[event.seized_item_id].append(event)
    detainees = await present(
        tx, p, purpose, await tx.all(_ordered(table_of(Detainee)), this), case_id=case.id
    )
    files = await tx.all(_ordered(table_of(Attachment)), this)

    def fields(model: type[Any], row: Any) -> dict[str, Any]:
        return {name: getattr(row, name) for name in model.model_fields if hasattr(row, name)}

    return Bundle.model_construct(
        bundle_version=1,
        exported_from=BundleSource.model_construct(
            case_id=case.id, lead_agency_id=case.lead_agency_id, exported_at=utcnow()
        ),
        case=BundleCase.model_construct(**fields(BundleCase, case), origin=origin_of(case)),
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
        identifiers=[
            BundleIdentifier.model_construct(**fields(BundleIdentifier, x))
            for x in await identifiers.export_for_bundle(tx, case.id)
        ],
        attachments=[BundleAttachment.model_construct(**fields(BundleAttachment, x)) for x in files],
    )


# --- import: parsing ------------------------------------------------------------------------------------

_SECTIONS: dict[str, type[RequestModel]] = {
    "participants": BundleParticipant,
    "locations": BundleLocation,
    "seized_items": BundleSeizedItem,
    "detainees": BundleDetainee,
    "attachments": BundleAttachment,
}


class _Errors:
    """The first MAX_ERRORS validation errors, and how many there were."""

    def __init__(self) -> None:
        self.shown: list[dict[str, Any]] = []
        self.total = 0

    def add(self, exc: ValidationError, prefix: Loc) -> None:
        self.total += exc.error_count()
        room = MAX_ERRORS - len(self.shown)
        if room > 0:
            for err in exc.errors(include_url=False, include_context=False, include_input=False)[:room]:
                self.shown.append(shown_error({**err, "loc": [*prefix, *err["loc"]]}))


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def parse_bundle(raw: bytes) -> Bundle:
    """The request body as a Bundle, or a 400/422 whose size and cost do not
    grow with the number of errors in it.

    Validating the document in one go would hold every error at once (a
    32 MiB body of unknown keys is millions of them); the rows of each
    section are validated one at a time instead, keeping the first errors
    and counting the rest. An object with more unknown fields than any
    request model allows is one error (app.core.types.RequestModel).
    """
    try:
        document = strict_json(raw)  # a key given twice is a 400, as on every route with a body
    except (ValueError, RecursionError):
        raise malformed_json() from None
    errors = _Errors()
    if isinstance(document, dict):
        for name, model in _SECTIONS.items():
            rows = document.get(name)
            if not isinstance(rows, list) or len(rows) > MAX_ROWS:
                continue  # the Bundle's own validation below names the problem
            valid = []
            for n, row in enumerate(rows):
                try:
                    valid.append(model.model_validate(row))
                except ValidationError as exc:
                    errors.add(exc, ["body", name, n])
            document[name] = valid
    try:
        bundle = Bundle.model_validate(document)
    except ValidationError as exc:
        errors.add(exc, ["body"])
    if errors.total:
        raise validation_problem(errors.shown, errors.total)
    return bundle


# --- import: checks -------------------------------------------------------------------------------------


def _unique_ids(rows: list[Any], section: str) -> None:
    seen: set[uuid.UUID] = set()
    for n, row in enumerate(rows):
        if row.id in seen:
            raise invalid(["body", section, n, "id"], f"Another entry of {section} has this id.")
        seen.add(row.id)


def _require_locations(bundle: Bundle) -> None:
    known = {x.id for x in bundle.locations}
    sections: tuple[tuple[str, Sequence[BundleSeizedItem | BundleDetainee]], ...] = (
        ("seized_items", bundle.seized_items),
        ("detainees", bundle.detainees),
    )
    for section, rows in sections:
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
            for name in ("from_agency_id", "to_agency_id"):
                yield ["body", "seized_items", n, "custody", k, name], getattr(event, name)
    for n, det in enumerate(bundle.detainees):
        yield ["body", "detainees", n, "detained_by_agency_id"], det.detained_by_agency_id


# Agencies looked up per statement: one statement shape, whatever the bundle names.
_AGENCY_CHUNK = 100
_AGENCIES_FOUND = sa.select(_AGENCIES.c.id).where(one_of(_AGENCIES.c.id, "agency", _AGENCY_CHUNK))


async def _require_agencies(db: Statements, bundle: Bundle) -> None:
    refs = [(loc, agency_id) for loc, agency_id in _agency_refs(bundle) if agency_id is not None]
    wanted = sorted({agency_id for _, agency_id in refs})
    found = {row.id for row in await all_of(db, _AGENCIES_FOUND, "agency", wanted, _AGENCY_CHUNK, {})}
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


async def _require_handling_code(db: Statements, p: Principal, bundle: Bundle) -> None:
    """The bundle's handling code, or a stricter one, never a looser one.

    The document's own code is the importer's to raise: an import keeps it.
    A document can be edited, so where it names a case of this instance
    (its id, or `exported_from`) that the caller sees, that case's code is
    the floor: an observer of a TLP:RED case cannot re-import it as its
    own TLP:CLEAR case. A case the caller does not see is not consulted, so
    the answer tells nothing about it.
    """
    wanted = bundle.case.handling_code
    claimed = (bundle.case.id, bundle.exported_from.case_id if bundle.exported_from else None)
    for case_id in {x for x in claimed if x is not None}:
        try:
            source = (await access.case_access(db, p, case_id)).case
        except AppError:  # not there, or not for this caller: the same to it
            continue
        if source.handling_code.strictness > wanted.strictness:
            raise invalid(
                ["body", "case", "handling_code"],
                f"The case this bundle was exported from is {source.handling_code.value}: "
                "an import keeps its handling code or takes a stricter one.",
            )


# --- import: writing ------------------------------------------------------------------------------------


async def import_bundle(
    tx: Tx, p: Principal, bundle: Bundle, *, digest: str, storage: Storage, hold: ExitStack
) -> Row:
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
    The agencies named (seized by, custodian, custody from and to, detained
    by, searched by) are what the bundle states, as a writer states them
    through the single routes; what this instance records as fact is who
    imported them: every custody event is recorded by the importing agency,
    the case carries the bundle's `origin` and digest, and the one audit
    entry names the importing client and agency.

    `hold` keeps the storage lock, once the attachments are checked, until
    the caller commits (see _attachment_rows).
    """
    for section in ("locations", "seized_items", "detainees"):
        _unique_ids(getattr(bundle, section), section)
    _require_locations(bundle)
    await _require_agencies(tx, bundle)
    await _require_handling_code(tx, p, bundle)
    chains = [_replay_chain(item, ["body", "seized_items", n]) for n, item in enumerate(bundle.seized_items)]
    for det in bundle.detainees:
        require_personal_scope(p, personal_fields_set(det))
    identifier_rows = await identifiers.rows_for_import(
        tx, bundle.identifiers, lead_agency_id=p.agency_id, loc=["body", "identifiers"]
    )
    await require_reference_free(tx, p.agency_id, bundle.case.reference)

    now = utcnow()
    # Rows get creation times a microsecond apart in bundle order: lists are
    # ordered by (created_at, id), so the new case lists them, and exports
    # them again, in the order they came.
    ticks = (now + timedelta(microseconds=n) for n in range(10**9))

    def stamps() -> dict[str, datetime]:
        at = next(ticks)
        return {"created_at": at, "updated_at": at}

    source = bundle.exported_from or BundleSource()
    case = row_type(table_of(Case))(
        **new_row(
            Case,
            **bundle.case.model_dump(exclude={"id", "origin"}),
            lead_agency_id=p.agency_id,
            origin_bundle_sha256=digest,
            origin_case_id=source.case_id or bundle.case.id,
            origin_lead_agency_id=source.lead_agency_id,
            origin_exported_at=source.exported_at,
            **derived_columns(bundle.case.reference, bundle.case.title, bundle.case.summary),
            **stamps(),
        )
    )
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
            {
                **event,
                "id": uuid.uuid4(),
                "seized_item_id": item_id,
                "recorded_by_agency_id": p.agency_id,
                **stamps(),
            }
            for event in chain
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

    await tx.insert([(table_of(Case), [case._asdict()])])
    for model, rows in (
        (Participant, [lead]),
        (Location, locations),
        (SeizedItem, items),
        (CustodyEvent, custody),
        (Detainee, detainees),
    ):
        await tx.insert_many(table_of(model), rows)

    identifier_rows = [
        {**row, "case_id": case.id, "created_at": stamps()["created_at"]} for row in identifier_rows
    ]
    await identifiers.insert_imported(tx, identifier_rows)
    attachment_rows, attachments_missing = await _attachment_rows(
        tx,
        p,
        bundle.attachments,
        storage,
        hold,
        case_id=case.id,
        created_at=lambda: stamps()["created_at"],
    )
    await tx.insert_many(table_of(Attachment), attachment_rows)
    _journal(
        tx,
        p,
        case,
        digest,
        participants=[lead],
        locations=locations,
        seized_items=items,
        custody_events=custody,
        detainees=detainees,
        identifiers=identifier_rows,
        attachments=attachment_rows,
        attachments_missing=attachments_missing,
    )
    return case


async def _attachment_rows(
    db: Statements,
    p: Principal,
    entries: list[BundleAttachment],
    storage: Storage,
    hold: ExitStack,
    *,
    case_id: uuid.UUID,
    created_at: Callable[[], datetime],
) -> tuple[list[dict[str, Any]], int]:
    """The attachment rows to create, and how many entries have no file to attach.

    A bundle carries no bytes, so an entry becomes a row only where the file
    is already here and the importer can already download it (another
    attachment of a case it sees in full or of one of its requests): then
    the new case refers to it as an upload of the same content would.
    Knowing a sha256 is not having the file, so a file only other agencies
    can read counts as missing, exactly as one that is not here.

    Checked under the storage lock, which `hold` keeps until the import
    commits: a deletion's reference check (app.attachments.service.release)
    cannot see the new rows before then, and would otherwise remove a file
    they are about to name.
    """
    if not entries:
        return [], 0
    hold.enter_context(storage.lock())
    sizes = await attachments.visible_files(db, p, (x.sha256 for x in entries))
    rows: list[dict[str, Any]] = []
    for n, entry in enumerate(entries):
        size = sizes.get(entry.sha256)
        if size is None or not storage.exists(entry.sha256):
            continue
        if size != entry.size:
            raise invalid(["body", "attachments", n, "size"], f"The file with this sha256 is {size} bytes.")
        rows.append(
            {
                **entry.model_dump(exclude={"created_at"}),
                "id": uuid.uuid4(),
                "case_id": case_id,
                "request_id": None,
                "message_id": None,
                "uploaded_by_agency_id": p.agency_id,
                "version": 1,
                "created_at": created_at(),
            }
        )
    return rows, len(entries) - len(rows)


def _journal(
    tx: Tx,
    p: Principal,
    case: Row,
    digest: str,
    *,
    attachments_missing: int,
    **sections: list[dict[str, Any]],
) -> None:
    """The import is one change, recorded once: one audit entry and one feed event.

    An entry and an event per row would have to be written under the
    journal lock, which every writer of the instance waits for: a large
    import held it for seconds. The entry names the importing client and
    agency, the digest of the document and how many rows of each kind it
    created (and how many attachments it found no file for); the rows
    themselves are the case's, each row's own `created_at` is the import's,
    and feed readers learn of them from `case.imported`.
    """
    record(
        tx,
        p.actor,
        action="case.imported",
        resource_type="case",
        resource_id=case.id,
        case_id=case.id,
        detail={
            "bundle_sha256": digest,
            "origin_case_id": None if case.origin_case_id is None else str(case.origin_case_id),
            "rows": {name: len(rows) for name, rows in sections.items()},
            "attachments_missing": attachments_missing,
        },
    )
