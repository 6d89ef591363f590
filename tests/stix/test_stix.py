"""GET /cases/{id}/stix: a STIX 2.1 bundle that validates, each object marked with its TLP 2.0 level."""

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
import stix2
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, join, make_caller, new_case, problem_of, walk

API = "/api/v1"

TLP2 = {
    "TLP:CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "TLP:GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "TLP:AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "TLP:AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "TLP:RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}

IDENTIFIERS = [
    ("phone", "+7 701 000 00 01", "x-caseapi-phone-number"),
    ("email", "Support@Chargeback.Example", "email-addr"),
    ("iban", "KZ86 125K ZT50 0410 0100", "x-caseapi-iban"),
    ("bank_card", "4111 1111 1111 1111", "x-caseapi-bank-card"),
    ("crypto_address", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "x-caseapi-cryptocurrency-wallet"),
    ("domain", "chargeback-help.example", "domain-name"),
    ("ip", "10.0.0.1", "ipv4-addr"),
    ("ip", "2001:db8::1", "ipv6-addr"),
    ("url", "https://chargeback-help.example/form", "url"),
    ("document_number", "ab 123456", "x-caseapi-document-number"),
    ("other", "Telegram @support", "x-caseapi-identifier"),
]


def export(client: TestClient, caller: Caller, case_id: str) -> Any:
    return client.get(f"{API}/cases/{case_id}/stix", headers=caller.headers)


def build(client: TestClient, lead: Caller, handling_code: str) -> dict[str, Any]:
    case = new_case(
        client,
        lead,
        handling_code=handling_code,
        title="Call centre in Kyiv",
        summary="Fake chargeback recovery",
    )
    for kind, value, _ in IDENTIFIERS:
        body = {
            "kind": kind,
            "value": value,
            "note": "seen on victims' statements" if kind == "phone" else None,
        }
        assert (
            client.post(f"{API}/cases/{case['id']}/identifiers", json=body, headers=lead.headers).status_code
            == 201
        )
    return case


@pytest.mark.parametrize("handling_code", list(TLP2))
def test_bundle_validates_and_every_object_is_marked(
    client: TestClient, lead: Caller, handling_code: str
) -> None:
    case = build(client, lead, handling_code)
    response = export(client, lead, case["id"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/stix+json;version=2.1"
    bundle = stix2.parse(response.text, allow_custom=True)
    objects = json.loads(response.text)["objects"]
    assert len(bundle.objects) == len(objects) == 3 + len(IDENTIFIERS)
    marking = TLP2[handling_code]
    (definition,) = [o for o in objects if o["type"] == "marking-definition"]
    assert definition["id"] == marking
    assert definition["name"] == handling_code
    for obj in objects:
        if obj["type"] != "marking-definition":
            assert obj["object_marking_refs"] == [marking], obj
    (report,) = [o for o in objects if o["type"] == "report"]
    assert report["name"] == "Call centre in Kyiv"
    assert report["description"] == "Fake chargeback recovery"
    assert report["published"].startswith(case["opened_at"][:19])
    (identity,) = [o for o in objects if o["type"] == "identity"]
    assert identity["name"] == "Agency KZ-LEAD"
    assert report["created_by_ref"] == identity["id"]
    observables = [o for o in objects if o["type"] not in ("report", "identity", "marking-definition")]
    assert set(report["object_refs"]) == {identity["id"], *(o["id"] for o in observables)}
    identifiers = walk(client, f"{API}/cases/{case['id']}/identifiers", lead.headers)
    assert [(o["type"], o["value"]) for o in observables] == [
        (stix_type, x["normalized"]) for (_, _, stix_type), x in zip(IDENTIFIERS, identifiers, strict=True)
    ]
    assert observables[0]["x_caseapi_note"] == "seen on victims' statements"


def test_ids_are_stable_across_exports(client: TestClient, lead: Caller) -> None:
    case = build(client, lead, "TLP:AMBER")
    first = json.loads(export(client, lead, case["id"]).text)["objects"]
    second = json.loads(export(client, lead, case["id"]).text)["objects"]
    assert [o["id"] for o in first] == [o["id"] for o in second]
    assert len({o["id"] for o in first}) == len(first)


def test_only_full_access_exports_and_every_export_is_audited(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    outsider = make_caller(engine, "EU-STIX", Scope.read)
    public_case = build(client, lead, "TLP:GREEN")
    join(client, lead, public_case["id"], partner, role="observer")
    missing = export(client, outsider, str(uuid.uuid4()))
    hidden = export(client, outsider, public_case["id"])  # summary access is not enough
    assert hidden.status_code == missing.status_code == 404
    assert problem_of(hidden) == problem_of(missing)
    assert export(client, partner, public_case["id"]).status_code == 200
    audit = walk(client, f"{API}/audit?action=case.stix_exported", lead.headers)
    assert [(e["agency_id"], e["case_id"]) for e in audit] == [(str(partner.agency_id), public_case["id"])]
