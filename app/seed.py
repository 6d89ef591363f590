"""`caseapi seed`: the article's data from seed/*.json, inserted once.

Ids are derived from the data (uuid5), and a row that already exists is
left alone, so running the seed again changes nothing.

For a federation (`caseapi demo --federation`) each instance loads only the
agencies of its own country, and a case only at its home: the instance that
hosts its lead. The other instances receive it as a mirror, by delivery.
"""

import functools
import json
import uuid
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.agencies.models import Agency, AgencyCreate
from app.auth.models import ApiClient
from app.cases.models import Case, CaseCreate, derived_columns, reference_key
from app.core.db import new_row, table_of
from app.core.journal import CLI, Change
from app.core.uow import Tx
from app.detainees.models import Detainee, DetaineeCreate
from app.detainees.service import one_year_after
from app.evidence.models import CustodyAction, CustodyEvent, SeizedItem, SeizedItemCreate
from app.locations.models import Location, LocationCreate
from app.participants.models import Participant, Role
from app.webhooks.models import WebhookSubscription

NAMESPACE = uuid.UUID("5f0c6b1e-7a43-4c1e-9a57-2f1d3c0e8b10")

AGENCIES = table_of(Agency)
CASES = table_of(Case)
CLIENTS = table_of(ApiClient)
SUBSCRIPTIONS = table_of(WebhookSubscription)


def seed_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, ":".join(str(p) for p in parts))


def _data(record: dict[str, Any], *drop: str) -> dict[str, Any]:
    """A record without its source notes and the keys the loader resolves itself."""
    return {k: v for k, v in record.items() if not k.startswith("_") and k not in drop}


@functools.cache
def _exists(table: sa.Table) -> sa.Select[Any]:
    """Whether a row of `table` has the primary key given (its columns' names as parameters)."""
    return (
        sa.select(sa.literal_column("1"))
        .select_from(table)
        .where(*(column == sa.bindparam(column.key) for column in table.primary_key.columns))
    )


async def _add(
    tx: Tx,
    model: type[Any],
    row: dict[str, Any],
    resource_type: str,
    case_id: uuid.UUID | None,
    resource_id: uuid.UUID | None = None,
) -> bool:
    """Insert `row` (every column: app.core.db.new_row) and record its creation, unless its key exists."""
    table = table_of(model)
    if await tx.first(_exists(table), {c.key: row[c.key] for c in table.primary_key.columns}) is not None:
        return False
    await tx.insert([(table, [row])])
    tx.changes.append(Change.created(CLI, resource_type, resource_id or row["id"], case_id))
    return True


_CODES = sa.select(AGENCIES.c.code, AGENCIES.c.id, AGENCIES.c.home_instance)


async def load(
    tx: Tx, seed_dir: Path, *, countries: Collection[str] | None = None, cases: bool = True
) -> int:
    """Insert what is missing; return how many rows were added.

    `countries`: only the agencies of these countries (None: every agency).
    `cases`: the cases too, each only where its lead is at home (not held
    from a peer); every agency a case names must be known here by then.
    """
    added = 0
    agencies = json.loads((seed_dir / "agencies.json").read_text())["agencies"]
    known = await tx.all(_CODES)
    codes: dict[str, uuid.UUID] = {row.code: row.id for row in known}
    local = {row.code for row in known if row.home_instance is None}
    for record in agencies:
        if record["code"] in codes or (countries is not None and record["country"] not in countries):
            continue
        parent = codes[record["parent"]] if record.get("parent") else None
        data = AgencyCreate.model_validate({**_data(record, "parent"), "parent_id": parent})
        agency = new_row(Agency, **data.model_dump(), id=seed_id("agency", record["code"]))
        added += await _add(tx, Agency, agency, "agency", None)
        codes[data.code] = agency["id"]
        local.add(data.code)

    for path in sorted(seed_dir.glob("case-*.json")) if cases else ():
        doc = json.loads(path.read_text())
        if doc["case"]["lead"] in local:
            added += await _load_case(tx, doc, codes)
    return added


def _agency(codes: dict[str, uuid.UUID], code: str | None) -> uuid.UUID | None:
    return codes[code] if code else None


_CASE_OF_LEAD = sa.select(CASES.c.id).where(
    CASES.c.lead_agency_id == sa.bindparam("lead_agency_id"),
    CASES.c.reference_key == sa.bindparam("reference_key"),
)


async def _load_case(tx: Tx, doc: dict[str, Any], codes: dict[str, uuid.UUID]) -> int:
    spec = doc["case"]
    ref = spec["reference"]
    # References are unique per lead agency: another agency's case of the same
    # reference is not the article's.
    lead_id = codes[spec["lead"]]
    existing = await tx.scalar(
        _CASE_OF_LEAD, {"lead_agency_id": lead_id, "reference_key": reference_key(ref)}
    )
    case_id = existing or seed_id("case", ref)
    added = 0
    if existing is None:
        data = CaseCreate.model_validate(_data(spec, "lead"))
        case = new_row(
            Case,
            **data.model_dump(),
            id=case_id,
            lead_agency_id=lead_id,
            **derived_columns(data.reference, data.title, data.summary),
        )
        added += await _add(tx, Case, case, "case", case_id)
    members = [{"agency": spec["lead"], "role": Role.lead}, *doc.get("participants", [])]
    for member in members:
        agency_id = codes[member["agency"]]
        participant = new_row(Participant, case_id=case_id, agency_id=agency_id, role=Role(member["role"]))
        added += await _add(tx, Participant, participant, "participant", case_id, resource_id=agency_id)

    for n, record in enumerate(doc.get("locations", []), start=1):
        location_data = LocationCreate.model_validate(
            {
                **_data(record, "searched_by_agency"),
                "searched_by_agency_id": _agency(codes, record.get("searched_by_agency")),
            }
        )
        location = new_row(
            Location, **location_data.model_dump(), id=seed_id(ref, "location", n), case_id=case_id
        )
        added += await _add(tx, Location, location, "location", case_id)

    seized_at = datetime.fromisoformat(doc["seized_at"]) if doc.get("seized_at") else None
    for n, record in enumerate(doc.get("seized_items", []), start=1):
        item_data = SeizedItemCreate.model_validate({**_data(record), "seized_at": seized_at})
        item = new_row(SeizedItem, **item_data.model_dump(), id=seed_id(ref, "item", n), case_id=case_id)
        if await _add(tx, SeizedItem, item, "seized_item", case_id):
            added += 1
            seizure = new_row(
                CustodyEvent,
                id=seed_id(ref, "item", n, "custody", 1),
                seized_item_id=item["id"],
                seq=1,
                action=CustodyAction.seized,
                at=item["seized_at"],
                note="Seized in the operation of 23 September 2025; seizing agency not given.",
            )
            added += await _add(tx, CustodyEvent, seizure, "custody_event", case_id)

    for n, record in enumerate(doc.get("detainees", []), start=1):
        detainee_data = DetaineeCreate.model_validate(_data(record, "detained_by_agency"))
        assert detainee_data.detained_at is not None, "seed detainees carry their detention date"
        detainee = new_row(
            Detainee,
            **detainee_data.model_dump(exclude={"detained_by_agency_id", "review_due"}),
            id=seed_id(ref, "detainee", n),
            case_id=case_id,
            detained_by_agency_id=_agency(codes, record.get("detained_by_agency")),
            review_due=one_year_after(detainee_data.detained_at.date()),
        )
        added += await _add(tx, Detainee, detainee, "detainee", case_id)
    return added
