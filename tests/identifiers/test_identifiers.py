"""Identifiers under a case: validated and normalised on write, visible as the case's contents are."""

import uuid
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, join, make_agency, make_caller, new_case, problem_of, walk

API = "/api/v1"


def add(client: TestClient, caller: Caller, case_id: str, **body: Any) -> Any:
    return client.post(f"{API}/cases/{case_id}/identifiers", json=body, headers=caller.headers)


def count_identifiers(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM identifier")).scalar_one()


def test_create_normalises_and_reads_back(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    response = add(client, lead, case["id"], kind="phone", value="8 701 000 00 01", note="Caller ID")
    assert response.status_code == 201, response.text
    body = response.json()
    # No country code: read in the country of the case's lead agency (KZ).
    assert body["normalized"] == "+77010000001"
    assert body["value"] == "8 701 000 00 01"
    assert body["case_id"] == case["id"]
    assert body["note"] == "Caller ID"
    assert response.headers["location"] == f"{API}/identifiers/{body['id']}"
    assert response.headers["etag"] == '"1"'
    got = client.get(f"{API}/identifiers/{body['id']}", headers=lead.headers)
    assert got.status_code == 200
    assert got.json() == body
    assert got.headers["etag"] == '"1"'


def test_invalid_value_is_422_and_writes_nothing(client: TestClient, engine: sa.Engine, lead: Caller) -> None:
    case = new_case(client, lead)
    for kind, value in (("phone", "12345"), ("iban", "GB82 WEST 1234 5698 7654 33"), ("bank_card", "4111")):
        response = add(client, lead, case["id"], kind=kind, value=value)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["loc"] == ["body", "value"]
    for body in (
        {"kind": "fax", "value": "1"},
        {"kind": "phone"},
        {"kind": "phone", "value": "+77010000001", "normalized": "+1"},
        {"kind": "phone", "value": "+77010000001", "case_id": str(uuid.uuid4())},
    ):
        assert (
            client.post(f"{API}/cases/{case['id']}/identifiers", json=body, headers=lead.headers).status_code
            == 422
        )
    assert count_identifiers(engine) == 0


def test_list_filters_by_kind_and_pages(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    created = [
        add(client, lead, case["id"], kind="phone", value=f"+7 701 000 00 {n:02d}").json() for n in range(5)
    ]
    add(client, lead, case["id"], kind="domain", value="Chargeback-Help.example")
    everything = walk(client, f"{API}/cases/{case['id']}/identifiers", lead.headers, limit=2)
    assert len(everything) == 6
    phones = walk(client, f"{API}/cases/{case['id']}/identifiers?kind=phone", lead.headers, limit=2)
    assert [x["id"] for x in phones] == [x["id"] for x in created]
    domains = walk(client, f"{API}/cases/{case['id']}/identifiers?kind=domain", lead.headers)
    assert [x["normalized"] for x in domains] == ["chargeback-help.example"]
    assert (
        client.get(f"{API}/cases/{case['id']}/identifiers?kind=fax", headers=lead.headers).status_code == 422
    )


def test_delete_needs_if_match_and_is_recorded(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    identifier = add(client, lead, case["id"], kind="ip", value="10.0.0.1").json()
    url = f"{API}/identifiers/{identifier['id']}"
    assert client.delete(url, headers=lead.headers).status_code == 428
    assert client.delete(url, headers=lead.h(if_match='"2"')).status_code == 412
    assert client.delete(url, headers=lead.h(if_match='"1"')).status_code == 204
    assert client.get(url, headers=lead.headers).status_code == 404
    types = [
        e["type"] for e in walk(client, f"{API}/events", lead.headers) if e["resource_id"] == identifier["id"]
    ]
    assert types == ["identifier.created", "identifier.deleted"]
    audit = walk(client, f"{API}/audit?case_id={case['id']}", lead.headers)
    assert {"identifier.created", "identifier.deleted"} <= {e["action"] for e in audit}


def test_who_reads_and_who_writes(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    observer = make_caller(engine, "OSCE-OBS", Scope.read, Scope.write)
    reader = make_caller(engine, "KZ-READER", Scope.read)
    sub = make_caller(engine, "KZ-SUB", Scope.read, Scope.write, parent_id=partner.agency_id)
    outsider = make_caller(engine, "XX-NONE", Scope.read, Scope.write)
    case = new_case(client, lead, handling_code="TLP:AMBER")
    join(client, lead, case["id"], partner)
    join(client, lead, case["id"], observer, role="observer")
    join(client, lead, case["id"], reader)
    assert add(client, partner, case["id"], kind="email", value="x@example.com").status_code == 201
    assert add(client, observer, case["id"], kind="email", value="y@example.com").status_code == 403
    assert add(client, reader, case["id"], kind="email", value="y@example.com").status_code == 403
    # A sub-agency of a participant reads an AMBER case's contents, but does not change them.
    assert add(client, sub, case["id"], kind="email", value="y@example.com").status_code == 403
    listed = client.get(f"{API}/cases/{case['id']}/identifiers", headers=sub.headers)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1
    missing = client.get(f"{API}/cases/{uuid.uuid4()}/identifiers", headers=outsider.headers)
    hidden = client.get(f"{API}/cases/{case['id']}/identifiers", headers=outsider.headers)
    assert hidden.status_code == missing.status_code == 404
    assert problem_of(hidden) == problem_of(missing)
    assert problem_of(add(client, outsider, case["id"], kind="email", value="y@example.com")) == problem_of(
        missing
    )


def test_summary_access_does_not_read_identifiers(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    other = make_caller(engine, "EU-OTHER", Scope.read)
    case = new_case(client, lead, handling_code="TLP:GREEN")
    identifier = add(client, lead, case["id"], kind="ip", value="10.0.0.2").json()
    assert client.get(f"{API}/cases/{case['id']}", headers=other.headers).json()["access"] == "summary"
    assert client.get(f"{API}/cases/{case['id']}/identifiers", headers=other.headers).status_code == 404
    assert client.get(f"{API}/identifiers/{identifier['id']}", headers=other.headers).status_code == 404


def test_a_case_holding_identifiers_is_closed_not_deleted(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    add(client, lead, case["id"], kind="ip", value="10.0.0.3")
    response = client.delete(f"{API}/cases/{case['id']}", headers=lead.h(if_match='"1"'))
    assert response.status_code == 409
    assert "identifiers" in response.json()["detail"]


def test_lead_without_country_needs_international_numbers(client: TestClient, engine: sa.Engine) -> None:
    agency_id = make_agency(engine, "INTERPOL-X", country=None)
    caller = make_caller(engine, "INTERPOL-X", Scope.read, Scope.write)
    assert caller.agency_id == agency_id
    case = new_case(client, caller)
    assert add(client, caller, case["id"], kind="phone", value="701 000 00 01").status_code == 422
    assert add(client, caller, case["id"], kind="phone", value="+7 701 000 00 01").status_code == 201


def test_bundles_carry_identifiers(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    case = new_case(client, lead)
    add(client, lead, case["id"], kind="phone", value="8 701 000 00 01", note="Call centre line")
    add(client, lead, case["id"], kind="iban", value="kz86 125k zt50 0410 0100")
    bundle = client.get(f"{API}/cases/{case['id']}/bundle", headers=lead.headers).json()
    assert [(x["kind"], x["value"], x["normalized"]) for x in bundle["identifiers"]] == [
        ("phone", "8 701 000 00 01", "+77010000001"),
        ("iban", "kz86 125k zt50 0410 0100", "KZ86125KZT5004100100"),
    ]
    # Imported by a Ukrainian agency: the exported E.164 form keeps the number Kazakh.
    importer = make_agency(engine, "UA-IMPORT", country="UA")
    ua = make_caller(engine, "UA-IMPORT", Scope.read, Scope.write)
    assert ua.agency_id == importer
    bundle["case"]["reference"] = "IMPORTED-1"
    response = client.post(f"{API}/bundles", json=bundle, headers=ua.headers)
    assert response.status_code == 201, response.text
    imported = walk(client, f"{API}/cases/{response.json()['id']}/identifiers", ua.headers)
    assert [(x["value"], x["normalized"], x["note"]) for x in imported] == [
        ("8 701 000 00 01", "+77010000001", "Call centre line"),
        ("kz86 125k zt50 0410 0100", "KZ86125KZT5004100100", None),
    ]
    feed = [
        e["type"] for e in walk(client, f"{API}/events", ua.headers) if e["case_id"] == response.json()["id"]
    ]
    # The import is one change: one event, and one audit entry counting the identifiers.
    assert feed == ["case.imported"]
    entry = client.get(f"{API}/audit", params={"action": "case.imported"}, headers=ua.headers).json()["items"]
    assert entry[0]["detail"]["rows"]["identifiers"] == 2


def test_bundle_import_validates_identifiers_again(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    before = count_identifiers(engine)
    base = {"bundle_version": 1, "case": {"reference": "IMPORT-BAD", "title": "T"}}
    bad = [
        {"kind": "bank_card", "value": "4111 1111 1111 1112"},
        {"kind": "phone", "value": "+7 701 000 00 01", "normalized": "+7 000"},
    ]
    for n, (item, field) in enumerate(zip(bad, ("value", "normalized"), strict=True)):
        good = {"kind": "ip", "value": "10.0.0.1"}
        response = client.post(
            f"{API}/bundles", json={**base, "identifiers": [good, item]}, headers=lead.headers
        )
        assert response.status_code == 422, (n, response.text)
        assert response.json()["errors"][0]["loc"] == ["body", "identifiers", 1, field]
    assert count_identifiers(engine) == before
    assert client.get(f"{API}/cases", params={"q": "IMPORT-BAD"}, headers=lead.headers).json()["items"] == []
