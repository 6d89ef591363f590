"""Bundles sent by a hostile agency with a valid key: documents built to
exhaust a worker, to pass its own acts off as another agency's, or to
launder a TLP:RED case into one everybody reads."""

import json
import tracemalloc
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.bundles.service import parse_bundle
from app.core.errors import MAX_ERRORS, AppError
from app.core.records import AuditEntry
from tests.bundles.test_bundles import build_case, counts, export
from tests.conftest import Caller, join, make_caller, new_case

API = "/api/v1"


def post_raw(client: TestClient, caller: Caller, raw: bytes) -> Any:
    return client.post(
        f"{API}/bundles", content=raw, headers={**caller.headers, "Content-Type": "application/json"}
    )


def locations_with_unknown_keys(rows: int, keys: int) -> bytes:
    """`rows` locations, each with `keys` fields no location has: one error per key."""
    return json.dumps(
        {
            "bundle_version": 1,
            "case": {"reference": "HOSTILE", "title": "T"},
            "locations": [
                {"id": str(uuid.uuid4()), "label": "L", **{f"x{k}": 0 for k in range(keys)}}
                for _ in range(rows)
            ],
        }
    ).encode()


# --- bounded work, bounded answers ------------------------------------------------------------------------


def test_many_errors_answer_the_first_ones_and_a_count(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    raw = locations_with_unknown_keys(rows=5000, keys=20)  # 100 000 errors in 1.2 MB
    before = counts(engine)
    response = post_raw(client, lead, raw)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["error_count"] == 5000 * 20
    assert len(body["errors"]) == MAX_ERRORS
    assert body["errors"][0]["loc"] == ["body", "locations", 0, "x0"]
    assert len(response.content) < 8 * 1024
    assert counts(engine) == before


def test_an_object_of_a_million_unknown_keys_is_one_error(client: TestClient, lead: Caller) -> None:
    keys = {f"k{n}": 0 for n in range(1_000_000)}
    raw = json.dumps({"bundle_version": 1, "case": {"reference": "R", "title": "T", **keys}}).encode()
    response = post_raw(client, lead, raw)
    assert response.status_code == 422
    body = response.json()
    assert body["error_count"] == 1
    assert body["errors"][0]["loc"] == ["body", "case"]
    assert "1000000 fields" in body["errors"][0]["msg"]
    assert len(response.content) < 2 * 1024


def test_validation_memory_stays_that_of_the_parsed_document() -> None:
    """A bundle of 100 000 errors used to hold them all at once (about 15 times
    the memory of the parsed document); now validation adds almost nothing."""
    raw = locations_with_unknown_keys(rows=5000, keys=20)
    tracemalloc.start()
    try:
        json.loads(raw)
        _, parsing = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with pytest.raises(AppError) as refused:
            parse_bundle(raw)
        _, validating = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 422
    assert validating < 2 * parsing, (validating, parsing)


def test_every_route_bounds_its_422_and_never_echoes_the_input(client: TestClient, lead: Caller) -> None:
    """The shared handler: 20 unknown fields (each its own error) and two
    missing required ones, one of them named by a 100 000-character key."""
    long_key = "A" * 100_000
    body = {long_key: 1, **{f"x{n}": 1 for n in range(19)}}
    response = client.post(f"{API}/cases", json=body, headers=lead.headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["error_count"] == 22
    assert len(problem["errors"]) == MAX_ERRORS
    assert long_key not in response.text
    assert len(response.content) < 8 * 1024
    # Past the bound, the unknown fields of one object are one error.
    many = {f"x{n}": 1 for n in range(10_000)}
    response = client.post(
        f"{API}/cases", json={"reference": "R", "title": "T", **many}, headers=lead.headers
    )
    assert response.status_code == 422
    assert response.json()["error_count"] == 1
    assert len(response.content) < 2 * 1024


def test_malformed_json_is_400(client: TestClient, lead: Caller) -> None:
    for raw in (b'{"bundle_version": 1,', b"[" * 100_000):
        response = post_raw(client, lead, raw)
        assert response.status_code == 400
        assert response.json()["type"] == "urn:caseapi:problem:malformed-json"


# --- whose acts ------------------------------------------------------------------------------------------


def test_an_import_is_the_importer_s_act(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    """The partner's custody events come back as recorded by the importer; the
    agencies the bundle names stay what it claims, and the case says where
    the bundle came from."""
    case_id = build_case(client, lead, partner)
    original = export(client, lead, case_id)
    assert original["exported_from"]["case_id"] == case_id
    assert original["exported_from"]["lead_agency_id"] == str(lead.agency_id)
    importer = make_caller(engine, "XX-IMPORTER", Scope.read, Scope.write)
    original["case"]["reference"] = "IMPORTED"
    response = client.post(f"{API}/bundles", json=original, headers=importer.headers)
    assert response.status_code == 201, response.text
    case = response.json()
    origin = {
        "case_id": case_id,
        "lead_agency_id": str(lead.agency_id),
        "exported_at": original["exported_from"]["exported_at"],
    }
    assert {k: case["origin"][k] for k in origin} == origin
    assert len(case["origin"]["bundle_sha256"]) == 64
    assert (
        client.get(f"{API}/cases/{case['id']}", headers=importer.headers).json()["origin"] == case["origin"]
    )

    copy = export(client, importer, case["id"])
    assert copy["case"]["origin"] == case["origin"]
    assert copy["exported_from"]["case_id"] == case["id"]
    assert copy["exported_from"]["lead_agency_id"] == str(importer.agency_id)
    [first, *_] = copy["seized_items"]
    assert {e["recorded_by_agency_id"] for item in copy["seized_items"] for e in item["custody"]} == {
        str(importer.agency_id)
    }
    # What the bundle claims about seizure and custody is kept as claimed.
    assert (first["seized_by_agency_id"], first["custodian_agency_id"]) == (
        str(lead.agency_id),
        str(partner.agency_id),
    )
    assert [(e["from_agency_id"], e["to_agency_id"]) for e in first["custody"]][:2] == [
        (None, str(lead.agency_id)),
        (str(lead.agency_id), str(partner.agency_id)),
    ]
    # Every audit entry about the new case is the importer's.
    with engine.connect() as conn:
        actors = conn.execute(
            sa.select(AuditEntry.agency_id, AuditEntry.client_id).where(
                AuditEntry.case_id == uuid.UUID(case["id"])
            )
        ).all()
    assert set(actors) == {(importer.agency_id, importer.client_id)}


def test_a_bundle_cannot_name_a_recorder(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case_id = build_case(client, lead, partner, items=1)
    bundle = export(client, lead, case_id)
    bundle["case"]["reference"] = "FORGED-RECORDER"
    for event in bundle["seized_items"][0]["custody"]:
        event["recorded_by_agency_id"] = str(partner.agency_id)
    new_id = client.post(f"{API}/bundles", json=bundle, headers=lead.headers).json()["id"]
    chain = export(client, lead, new_id)["seized_items"][0]["custody"]
    assert {e["recorded_by_agency_id"] for e in chain} == {str(lead.agency_id)}


# --- handling codes --------------------------------------------------------------------------------------


@pytest.fixture
def red_case(client: TestClient, engine: sa.Engine, lead: Caller) -> tuple[str, Caller]:
    """A TLP:RED case with an observer that may export it."""
    case = new_case(client, lead, handling_code="TLP:RED")
    client.post(
        f"{API}/cases/{case['id']}/locations", json={"label": "Safe house"}, headers=lead.headers
    ).raise_for_status()
    observer = make_caller(engine, "XX-OBSERVER", Scope.read, Scope.write)
    join(client, lead, case["id"], observer, role="observer")
    return case["id"], observer


@pytest.mark.parametrize(
    "strip", [(), ("case",), ("exported_from",)], ids=["as-exported", "no-case-id", "no-source"]
)
def test_an_observer_cannot_reimport_a_red_case_as_clear(
    client: TestClient,
    engine: sa.Engine,
    red_case: tuple[str, Caller],
    strip: tuple[str, ...],
) -> None:
    case_id, observer = red_case
    bundle = export(client, observer, case_id)
    bundle["case"].update(reference="OBSERVER-OWN", handling_code="TLP:CLEAR")
    if "case" in strip:
        bundle["case"].pop("id")
    if "exported_from" in strip:
        bundle.pop("exported_from")
    before = counts(engine)
    response = client.post(f"{API}/bundles", json=bundle, headers=observer.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "case", "handling_code"]
    assert counts(engine) == before


def test_an_import_keeps_the_code_or_a_stricter_one(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case = new_case(client, lead, handling_code="TLP:AMBER+STRICT")
    join(client, lead, case["id"], partner)
    bundle = export(client, partner, case["id"])
    for n, (code, status) in enumerate(
        [("TLP:AMBER", 422), ("TLP:CLEAR", 422), ("TLP:AMBER+STRICT", 201), ("TLP:RED", 201)]
    ):
        bundle["case"].update(reference=f"COPY-{n}", handling_code=code)
        response = client.post(f"{API}/bundles", json=bundle, headers=partner.headers)
        assert response.status_code == status, (code, response.text)
        if status == 201:
            assert response.json()["handling_code"] == code


def test_a_case_the_importer_cannot_see_is_not_consulted(
    client: TestClient, engine: sa.Engine, outsider: Caller, red_case: tuple[str, Caller]
) -> None:
    """A leaked bundle of a RED case the importer does not take part in
    imports as it says, exactly as one naming no case here: the answer
    tells nothing of the hidden case."""
    case_id, observer = red_case
    bundle = export(client, observer, case_id)
    bundle["case"].update(handling_code="TLP:CLEAR")
    answers = []
    for n, named in enumerate((case_id, str(uuid.uuid4()))):
        bundle["case"].update(reference=f"LEAKED-{n}", id=named)
        bundle["exported_from"]["case_id"] = named
        response = client.post(f"{API}/bundles", json=bundle, headers=outsider.headers)
        answers.append((response.status_code, response.json()["handling_code"]))
    assert answers == [(201, "TLP:CLEAR")] * 2
