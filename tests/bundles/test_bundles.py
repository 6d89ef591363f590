"""Case bundles: export everything under a case, import it as a new case, all or nothing."""

import copy
import hashlib
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from app.auth.models import Scope
from app.core.config import Settings
from app.core.records import AuditEntry
from tests.conftest import Caller, join, make_caller, new_case, walk
from tests.test_seed import load_seed

REFERENCE = "KZ-UA-2025-KYIV-CALL-CENTRE"
PURPOSE = {"X-Purpose": "Extradition file 2025/17"}


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in SQLModel.metadata.sorted_tables
        }


def export(client: TestClient, caller: Caller, case_id: str, **headers: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/cases/{case_id}/bundle", headers={**caller.headers, **headers})
    assert response.status_code == 200, response.text
    return response.json()


def import_(client: TestClient, caller: Caller, bundle: dict[str, Any], **headers: str) -> Any:
    return client.post("/api/v1/bundles", json=bundle, headers={**caller.headers, **headers})


def comparable(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle's content with its own ids replaced by positions, so that two copies compare equal.

    Left out: what an import records of itself rather than copies (the
    case's origin, who recorded each custody event here)."""
    position = {loc["id"]: n for n, loc in enumerate(bundle["locations"])}

    def strip(row: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k != "id"}
        if "location_id" in out:
            out["location_id"] = position.get(out["location_id"])
        if "custody" in out:
            out["custody"] = [
                {k: v for k, v in e.items() if k != "recorded_by_agency_id"} for e in out["custody"]
            ]
        return out

    return {
        "case": {k: v for k, v in bundle["case"].items() if k not in ("id", "reference", "origin")},
        "locations": [strip(x) for x in bundle["locations"]],
        "seized_items": [strip(x) for x in bundle["seized_items"]],
        "detainees": [strip(x) for x in bundle["detainees"]],
    }


@pytest.fixture
def seeded(engine: sa.Engine, settings: Settings) -> str:
    load_seed(engine, settings.seed_dir)
    with engine.connect() as conn:
        return str(
            conn.execute(sa.text('SELECT id FROM "case" WHERE reference = :r'), {"r": REFERENCE}).scalar_one()
        )


# --- a small bundle made through the single routes ------------------------------------------------------


def build_case(client: TestClient, lead: Caller, partner: Caller, items: int = 5) -> str:
    """A case with locations, items (one with a full chain) and a detainee with personal data."""
    case = new_case(client, lead, summary="Built for the bundle tests", victim_regions=["KZ", "EU"])
    join(client, lead, case["id"], partner)
    locs = [
        client.post(
            f"/api/v1/cases/{case['id']}/locations",
            json={
                "label": f"Flat {n}",
                "city": "Kyiv",
                "country": "UA",
                "searched_at": "2025-09-23T06:00:00Z",
            },
            headers=lead.headers,
        ).json()
        for n in range(2)
    ]
    item_ids = []
    for n in range(items):
        body = {
            "category": "computer" if n % 2 else "mobile_phone",
            "description": f"Item {n}",
            "quantity": n + 1 if n != 2 else None,
            "location_id": locs[n % 2]["id"],
            "seized_at": "2025-09-23T07:00:00Z",
        }
        response = client.post(f"/api/v1/cases/{case['id']}/seized-items", json=body, headers=lead.headers)
        assert response.status_code == 201, response.text
        item_ids.append(response.json()["id"])
    custody = f"/api/v1/seized-items/{item_ids[0]}/custody"
    for event in (
        {
            "action": "transferred",
            "to_agency_id": str(partner.agency_id),
            "at": "2025-09-24T10:00:00Z",
            "note": "By courier",
        },
        {"action": "examined", "at": "2025-09-25T10:00:00Z", "note": "Imaged"},
        {"action": "returned", "at": "2025-09-26T10:00:00Z"},
    ):
        assert client.post(custody, json=event, headers=partner.headers).status_code == 201
    detainee = client.post(
        f"/api/v1/cases/{case['id']}/detainees",
        json={
            "label": "Suspect A",
            "nationality": "UA",
            "detained_at": "2025-09-23T08:00:00Z",
            "location_id": locs[1]["id"],
            "custody_status": "in_custody",
            "charges": ["fraud"],
            "full_name": "Ivan Petrenko",
            "date_of_birth": "1990-02-03",
            "id_document": "UA-PASS-123",
        },
        headers=lead.headers,
    )
    assert detainee.status_code == 201, detainee.text
    return case["id"]


# --- export ---------------------------------------------------------------------------------------------


def test_export_shape_and_references(client: TestClient, lead: Caller, partner: Caller) -> None:
    case_id = build_case(client, lead, partner)
    bundle = export(client, lead, case_id)
    assert bundle["bundle_version"] == 1
    assert bundle["case"]["id"] == case_id
    assert sorted((p["agency_id"], p["role"]) for p in bundle["participants"]) == sorted(
        [(str(lead.agency_id), "lead"), (str(partner.agency_id), "partner")]
    )
    loc_ids = {x["id"] for x in bundle["locations"]}
    assert len(loc_ids) == 2
    assert {x["location_id"] for x in bundle["seized_items"] + bundle["detainees"]} <= loc_ids
    first = bundle["seized_items"][0]
    assert [e["action"] for e in first["custody"]] == ["seized", "transferred", "examined", "returned"]
    assert (first["status"], first["custodian_agency_id"]) == ("returned", str(partner.agency_id))
    assert [x["description"] for x in bundle["seized_items"]] == [f"Item {n}" for n in range(5)]


def test_export_needs_full_access(
    client: TestClient, engine: sa.Engine, lead: Caller, outsider: Caller
) -> None:
    hidden = new_case(client, lead)
    public = new_case(client, lead, handling_code="TLP:GREEN")
    for case in (hidden, public):
        response = client.get(f"/api/v1/cases/{case['id']}/bundle", headers=outsider.headers)
        assert response.status_code == 404
    # The outsider sees the green case's own fields, but not what is under it.
    assert client.get(f"/api/v1/cases/{public['id']}", headers=outsider.headers).status_code == 200
    assert client.get(f"/api/v1/cases/{uuid.uuid4()}/bundle", headers=outsider.headers).status_code == 404
    observer = make_caller(engine, "XX-OBSERVER", Scope.read)
    join(client, lead, hidden["id"], observer, role="observer")
    assert client.get(f"/api/v1/cases/{hidden['id']}/bundle", headers=observer.headers).status_code == 200


def test_export_redacts_personal_data_unless_scope_and_purpose(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner)

    def disclosures() -> int:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(AuditEntry.action == "personal_data.disclosed")
            ).scalar_one()

    before = disclosures()
    for caller, headers in ((lead, {}), (partner, PURPOSE), (partner, {})):
        [det] = export(client, caller, case_id, **headers)["detainees"]
        assert det["personal_data_redacted"] is True
        assert (det["full_name"], det["date_of_birth"], det["id_document"]) == (None, None, None)
        assert (det["label"], det["charges"]) == ("Suspect A", ["fraud"])
    assert disclosures() == before

    [det] = export(client, lead, case_id, **PURPOSE)["detainees"]
    assert det["personal_data_redacted"] is False
    assert (det["full_name"], det["date_of_birth"], det["id_document"]) == (
        "Ivan Petrenko",
        "1990-02-03",
        "UA-PASS-123",
    )
    with engine.connect() as conn:
        entry = conn.execute(
            sa.select(AuditEntry)
            .where(AuditEntry.action == "personal_data.disclosed")
            .order_by(AuditEntry.seq.desc())
        ).first()
    assert disclosures() == before + 1
    assert entry is not None
    assert (str(entry.case_id), entry.purpose, entry.agency_id) == (
        case_id,
        PURPOSE["X-Purpose"],
        lead.agency_id,
    )


# --- round trip -----------------------------------------------------------------------------------------


def test_seeded_case_round_trips(client: TestClient, engine: sa.Engine, seeded: str) -> None:
    kz = make_caller(engine, "KZ-MVD", Scope.read, Scope.write, Scope.personal_data)
    original = export(client, kz, seeded, **PURPOSE)
    assert (len(original["locations"]), len(original["seized_items"]), len(original["detainees"])) == (
        11,
        4,
        9,
    )
    before = counts(engine)

    copy_ = copy.deepcopy(original)
    copy_["case"]["reference"] = "KZ-UA-2025-KYIV-CALL-CENTRE/COPY"
    response = import_(client, kz, copy_)
    assert response.status_code == 201, response.text
    case = response.json()
    assert response.headers["location"] == f"/api/v1/cases/{case['id']}"
    assert response.headers["etag"] == '"1"'
    assert (case["reference"], case["lead_agency_id"], case["access"]) == (
        copy_["case"]["reference"],
        str(kz.agency_id),
        "full",
    )

    after = counts(engine)
    for table, added in (
        ("case", 1),
        ("location", 11),
        ("seized_item", 4),
        ("custody_event", 4),
        ("detainee", 9),
    ):
        assert after[table] - before[table] == added, table
    assert after["participant"] - before["participant"] == 1

    again = export(client, kz, case["id"], **PURPOSE)
    assert comparable(again) == comparable(original)
    # Every row is new: no id is shared with the original.
    for section in ("locations", "seized_items", "detainees"):
        assert not {x["id"] for x in again[section]} & {x["id"] for x in original[section]}
    # The summary of the copy tells the same story as the original's.
    summary = client.get(f"/api/v1/cases/{seeded}/summary", headers=kz.headers).json()
    copied = client.get(f"/api/v1/cases/{case['id']}/summary", headers=kz.headers).json()
    assert {k: v for k, v in copied.items() if k != "case_id"} == {
        k: v for k, v in summary.items() if k != "case_id"
    }


def test_round_trip_keeps_chains_personal_data_and_order(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner)
    original = export(client, lead, case_id, **PURPOSE)
    original["case"]["reference"] = "COPY-1"
    response = import_(client, lead, original)
    assert response.status_code == 201, response.text
    again = export(client, lead, response.json()["id"], **PURPOSE)
    assert comparable(again) == comparable(original)
    assert again["detainees"][0]["full_name"] == "Ivan Petrenko"
    assert [e["action"] for e in again["seized_items"][0]["custody"]] == [
        "seized",
        "transferred",
        "examined",
        "returned",
    ]
    # Through the single routes, too.
    item = again["seized_items"][0]
    chain = walk(client, f"/api/v1/seized-items/{item['id']}/custody", lead.headers)
    assert [(e["seq"], e["action"], e["note"]) for e in chain] == [
        (1, "seized", None),
        (2, "transferred", "By courier"),
        (3, "examined", "Imaged"),
        (4, "returned", None),
    ]
    got = client.get(f"/api/v1/seized-items/{item['id']}", headers=lead.headers).json()
    assert (got["status"], got["custodian_agency_id"], got["version"]) == (
        "returned",
        str(partner.agency_id),
        1,
    )


def test_import_is_led_by_importer_and_carries_no_participants(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "UA-COPY"
    response = import_(client, partner, bundle)
    assert response.status_code == 201, response.text
    new_id = response.json()["id"]
    parts = walk(client, f"/api/v1/cases/{new_id}/participants", partner.headers)
    assert [(p["agency_id"], p["role"]) for p in parts] == [(str(partner.agency_id), "lead")]
    # The exporting lead is not let in by the bundle.
    assert client.get(f"/api/v1/cases/{new_id}", headers=lead.headers).status_code == 404
    # A redacted export imports with the personal data left empty.
    [det] = export(client, partner, new_id)["detainees"]
    assert det["personal_data_redacted"] is True


def test_an_import_is_one_audit_entry_and_one_event(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, admin: Caller
) -> None:
    case_id = build_case(client, lead, partner, items=3)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "COPY-AUDITED"
    raw = json.dumps(bundle).encode()
    response = client.post(
        "/api/v1/bundles", content=raw, headers={**lead.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    new_id = response.json()["id"]
    events = [e for e in walk(client, "/api/v1/events", lead.headers, limit=200) if e["case_id"] == new_id]
    assert [(e["type"], e["resource_id"]) for e in events] == [("case.imported", new_id)]
    with engine.connect() as conn:
        [entry] = conn.execute(sa.select(AuditEntry).where(AuditEntry.case_id == uuid.UUID(new_id))).all()
    assert (entry.action, entry.resource_type, str(entry.resource_id)) == ("case.imported", "case", new_id)
    # The importing client and agency, the document's digest and what it created.
    assert (entry.agency_id, entry.client_id) == (lead.agency_id, lead.client_id)
    assert entry.detail == {
        "bundle_sha256": hashlib.sha256(raw).hexdigest(),
        "origin_case_id": case_id,
        "rows": {
            "participants": 1,
            "locations": 2,
            "seized_items": 3,
            "custody_events": 6,
            "detainees": 1,
            "identifiers": 0,
            "attachments": 0,
        },
        "attachments_missing": 0,
    }
    assert client.get("/api/v1/audit/verify", headers=admin.headers).json()["ok"] is True
    # The partner is no participant of the copy: it sees none of its events.
    assert not [
        e for e in walk(client, "/api/v1/events", partner.headers, limit=200) if e["case_id"] == new_id
    ]


def test_a_large_import_keeps_the_audit_chain_and_the_feed_whole(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, admin: Caller
) -> None:
    """Enough rows that PostgreSQL writes them with COPY."""
    case_id = build_case(client, lead, partner, items=1)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "COPY-LARGE"
    [item] = bundle["seized_items"]
    bundle["seized_items"] = [{**copy.deepcopy(item), "id": str(uuid.uuid4())} for _ in range(120)]
    new_id = import_(client, lead, bundle).json()["id"]
    assert client.get("/api/v1/audit/verify", headers=admin.headers).json()["ok"] is True
    feed = walk(client, "/api/v1/events", lead.headers, limit=200)
    seqs = [e["seq"] for e in feed]
    assert seqs == sorted(set(seqs))
    assert [e["type"] for e in feed if e["case_id"] == new_id] == ["case.imported"]
    items = walk(client, f"/api/v1/cases/{new_id}/seized-items", lead.headers, limit=200)
    assert [x["description"] for x in items] == [item["description"]] * 120
    chains = export(client, lead, new_id)["seized_items"]
    assert sum(len(x["custody"]) for x in chains) == 120 * len(item["custody"])


def test_import_idempotency(client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller) -> None:
    case_id = build_case(client, lead, partner, items=1)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "ONCE"
    first = import_(client, lead, bundle, **{"Idempotency-Key": "bundle-1"})
    before = counts(engine)
    again = import_(client, lead, bundle, **{"Idempotency-Key": "bundle-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert counts(engine) == before


def test_an_import_s_key_is_bound_to_the_bytes_sent(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    """The fingerprint is the raw body's: the same document re-serialised (other spacing or key
    order) is another body, as is the same body with another X-Purpose."""
    case_id = build_case(client, lead, partner, items=1)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "BYTES"
    raw = json.dumps(bundle).encode()

    def send(body: bytes, **headers: str) -> Any:
        return client.post(
            "/api/v1/bundles",
            content=body,
            headers={
                **lead.headers,
                "Content-Type": "application/json",
                "Idempotency-Key": "bytes",
                **headers,
            },
        )

    first = send(raw)
    assert first.status_code == 201, first.text
    before = counts(engine)
    again = send(raw)
    assert (again.status_code, again.json(), again.headers["idempotent-replayed"]) == (
        201,
        first.json(),
        "true",
    )
    for other in (
        send(json.dumps(bundle, indent=1).encode()),
        send(json.dumps(bundle, sort_keys=True).encode()),
        send(raw, **PURPOSE),
    ):
        assert other.status_code == 422, other.text
        assert other.json()["type"] == "urn:caseapi:problem:idempotency-key-reused"
    assert counts(engine) == before


def test_import_needs_write_scope(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner, items=1)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "NOPE"
    reader = make_caller(engine, lead.agency_code, Scope.read)
    assert import_(client, reader, bundle).status_code == 403


# --- all or nothing ---------------------------------------------------------------------------------------


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


UNKNOWN = str(uuid.UUID(int=7))

# (path to change, new value, the loc the 422 must name)
BAD = [
    (["seized_items", 3, "quantity"], 0, ["body", "seized_items", 3, "quantity"]),
    (["seized_items", 1, "category"], "spaceship", ["body", "seized_items", 1, "category"]),
    (["seized_items", 4, "version"], 2, ["body", "seized_items", 4, "version"]),
    (["seized_items", 4, "case_id"], UNKNOWN, ["body", "seized_items", 4, "case_id"]),
    (["seized_items", 2, "location_id"], UNKNOWN, ["body", "seized_items", 2, "location_id"]),
    (["seized_items", 2, "seized_by_agency_id"], UNKNOWN, ["body", "seized_items", 2, "seized_by_agency_id"]),
    (
        ["seized_items", 0, "custody", 1, "to_agency_id"],
        UNKNOWN,
        ["body", "seized_items", 0, "custody", 1, "to_agency_id"],
    ),
    (
        ["seized_items", 0, "custody", 0, "action"],
        "examined",
        ["body", "seized_items", 0, "custody", 0, "action"],
    ),
    (
        ["seized_items", 0, "custody", 2, "action"],
        "seized",
        ["body", "seized_items", 0, "custody", 2, "action"],
    ),
    (
        ["seized_items", 0, "custody", 2, "at"],
        "2025-09-01T00:00:00Z",
        ["body", "seized_items", 0, "custody", 2, "at"],
    ),
    (
        ["seized_items", 0, "custody", 3, "action"],
        "transferred",
        ["body", "seized_items", 0, "custody", 3, "to_agency_id"],
    ),
    (["seized_items", 0, "custodian_agency_id"], None, ["body", "seized_items", 0, "custodian_agency_id"]),
    (["seized_items", 0, "status"], "seized", ["body", "seized_items", 0, "status"]),
    (["seized_items", 1, "custody"], [], ["body", "seized_items", 1, "custody"]),
    (["locations", 1, "country"], "XX", ["body", "locations", 1, "country"]),
    (["locations", 0, "bogus"], 1, ["body", "locations", 0, "bogus"]),
    (["locations", 0, "searched_by_agency_id"], UNKNOWN, ["body", "locations", 0, "searched_by_agency_id"]),
    (["detainees", 0, "custody_status"], "free", ["body", "detainees", 0, "custody_status"]),
    (["detainees", 0, "location_id"], UNKNOWN, ["body", "detainees", 0, "location_id"]),
    (["case", "handling_code"], "TLP:PURPLE", ["body", "case", "handling_code"]),
    (["case", "lead_agency_id"], UNKNOWN, ["body", "case", "lead_agency_id"]),
    (["case", "title"], "", ["body", "case", "title"]),
    (["bundle_version"], 2, ["body", "bundle_version"]),
    (["participants", 0, "role"], "boss", ["body", "participants", 0, "role"]),
]


@pytest.mark.parametrize(("path", "value", "loc"), BAD, ids=[".".join(map(str, b[0])) for b in BAD])
def test_bad_bundle_is_422_naming_the_field_and_creates_nothing(
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    path: list[Any],
    value: Any,
    loc: list[Any],
) -> None:
    case_id = build_case(client, lead, partner)
    bundle = export(client, lead, case_id, **PURPOSE)
    bundle["case"]["reference"] = "WOULD-BE-NEW"
    _set(bundle, path, value)
    before = counts(engine)
    response = import_(client, lead, bundle)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert loc in [e["loc"] for e in response.json()["errors"]]
    assert counts(engine) == before


def test_duplicate_ids_in_a_section_are_422(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "DUP"
    bundle["locations"][1]["id"] = bundle["locations"][0]["id"]
    before = counts(engine)
    response = import_(client, lead, bundle)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "locations", 1, "id"]
    assert counts(engine) == before


def test_taken_reference_is_409_and_creates_nothing(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner)
    bundle = export(client, lead, case_id)
    before = counts(engine)
    response = import_(client, lead, bundle)
    assert response.status_code == 409
    assert counts(engine) == before


def test_personal_data_import_needs_the_scope(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner)
    bundle = export(client, lead, case_id, **PURPOSE)
    bundle["case"]["reference"] = "PD"
    before = counts(engine)
    assert import_(client, partner, bundle).status_code == 403
    assert counts(engine) == before
