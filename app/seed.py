"""`caseapi seed`: the article's data from seed/*.json, inserted once.

Ids are derived from the data (uuid5), and a row that already exists is
left alone, so running the seed again changes nothing.
"""

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.agencies.models import Agency, AgencyCreate
from app.cases.models import Case, CaseCreate, reference_key
from app.crud import add_recorded_sync
from app.detainees.models import Detainee, DetaineeCreate
from app.detainees.service import one_year_after
from app.evidence.models import CustodyAction, CustodyEvent, SeizedItem, SeizedItemCreate
from app.journal import CLI
from app.locations.models import Location, LocationCreate
from app.participants.models import Participant, Role

NAMESPACE = uuid.UUID("5f0c6b1e-7a43-4c1e-9a57-2f1d3c0e8b10")


def seed_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, ":".join(str(p) for p in parts))


def _data(record: dict[str, Any], *drop: str) -> dict[str, Any]:
    """A record without its source notes and the keys the loader resolves itself."""
    return {k: v for k, v in record.items() if not k.startswith("_") and k not in drop}


def _add(
    session: Session,
    obj: Any,
    resource_type: str,
    case_id: uuid.UUID | None,
    resource_id: uuid.UUID | None = None,
) -> bool:
    key = (obj.case_id, obj.agency_id) if isinstance(obj, Participant) else obj.id
    if session.get(type(obj), key) is not None:
        return False
    add_recorded_sync(
        session, obj, CLI, resource_type=resource_type, case_id=case_id, resource_id=resource_id
    )
    return True


def load(session: Session, seed_dir: Path) -> int:
    """Insert what is missing; return how many rows were added."""
    added = 0
    agencies = json.loads((seed_dir / "agencies.json").read_text())["agencies"]
    codes: dict[str, uuid.UUID] = dict(session.execute(sa.select(Agency.code, Agency.id)).all())
    for record in agencies:
        if record["code"] in codes:
            continue
        parent = codes[record["parent"]] if record.get("parent") else None
        data = AgencyCreate.model_validate({**_data(record, "parent"), "parent_id": parent})
        agency = Agency.model_validate(data, update={"id": seed_id("agency", record["code"])})
        added += _add(session, agency, "agency", None)
        codes[agency.code] = agency.id

    for path in sorted(seed_dir.glob("case-*.json")):
        added += _load_case(session, json.loads(path.read_text()), codes)
    return added


def _agency(codes: dict[str, uuid.UUID], code: str | None) -> uuid.UUID | None:
    return codes[code] if code else None


def _load_case(session: Session, doc: dict[str, Any], codes: dict[str, uuid.UUID]) -> int:
    spec = doc["case"]
    ref = spec["reference"]
    # References are unique per lead agency: another agency's case of the same
    # reference is not the article's.
    lead_id = codes[spec["lead"]]
    existing = session.execute(
        sa.select(Case.id).where(Case.lead_agency_id == lead_id, Case.reference_key == reference_key(ref))
    ).scalar_one_or_none()
    case_id = existing or seed_id("case", ref)
    added = 0
    if existing is None:
        data = CaseCreate.model_validate(_data(spec, "lead"))
        case = Case.model_validate(data, update={"id": case_id, "lead_agency_id": lead_id})
        added += _add(session, case, "case", case_id)
    members = [{"agency": spec["lead"], "role": Role.lead}, *doc.get("participants", [])]
    for member in members:
        agency_id = codes[member["agency"]]
        participant = Participant(case_id=case_id, agency_id=agency_id, role=member["role"])
        added += _add(session, participant, "participant", case_id, resource_id=agency_id)

    for n, record in enumerate(doc.get("locations", []), start=1):
        data = LocationCreate.model_validate(
            {
                **_data(record, "searched_by_agency"),
                "searched_by_agency_id": _agency(codes, record.get("searched_by_agency")),
            }
        )
        location = Location.model_validate(
            data, update={"id": seed_id(ref, "location", n), "case_id": case_id}
        )
        added += _add(session, location, "location", case_id)

    seized_at = datetime.fromisoformat(doc["seized_at"]) if doc.get("seized_at") else None
    for n, record in enumerate(doc.get("seized_items", []), start=1):
        data = SeizedItemCreate.model_validate({**_data(record), "seized_at": seized_at})
        item = SeizedItem.model_validate(data, update={"id": seed_id(ref, "item", n), "case_id": case_id})
        if _add(session, item, "seized_item", case_id):
            added += 1
            seizure = CustodyEvent(
                id=seed_id(ref, "item", n, "custody", 1),
                seized_item_id=item.id,
                seq=1,
                action=CustodyAction.seized,
                at=item.seized_at,
                note="Seized in the operation of 23 September 2025; seizing agency not given.",
            )
            added += _add(session, seizure, "custody_event", case_id)

    for n, record in enumerate(doc.get("detainees", []), start=1):
        data = DetaineeCreate.model_validate(_data(record, "detained_by_agency"))
        assert data.detained_at is not None, "seed detainees carry their detention date"
        detainee = Detainee.model_validate(
            data.model_dump(exclude={"detained_by_agency_id", "review_due"}),
            update={
                "id": seed_id(ref, "detainee", n),
                "case_id": case_id,
                "detained_by_agency_id": _agency(codes, record.get("detained_by_agency")),
                "review_due": one_year_after(data.detained_at.date()),
            },
        )
        added += _add(session, detainee, "detainee", case_id)
    return added
