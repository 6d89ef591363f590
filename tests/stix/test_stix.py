"""GET /cases/{id}/stix: a STIX 2.1 bundle that passes `stix2-validator --strict`, each object
marked with its TLP 2.0 level."""

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
import stix2
from fastapi.testclient import TestClient
from stix2validator import ValidationOptions, validate_instance

from app.auth.models import Scope
from app.core.config import Settings
from tests.conftest import Caller, join, make_caller, new_case, problem_of, walk
from tests.test_seed import load_seed

API = "/api/v1"

TLP2 = {
    "TLP:CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "TLP:GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "TLP:AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "TLP:AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "TLP:RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}

IDENTIFIERS = [
    ("phone", "+7 701 000 00 01", "caseapi-phone-number"),
    ("email", "Support@Chargeback.Example", "email-addr"),
    ("iban", "KZ86 125K ZT50 0410 0100", "caseapi-iban"),
    ("bank_card", "4111 1111 1111 1111", "caseapi-bank-card"),
    ("crypto_address", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "caseapi-cryptocurrency-wallet"),
    ("domain", "chargeback-help.example", "domain-name"),
    ("ip", "10.0.0.1", "ipv4-addr"),
    ("ip", "2001:db8::1", "ipv6-addr"),
    ("url", "https://chargeback-help.example/form", "url"),
    ("document_number", "ab 123456", "caseapi-document-number"),
    ("other", "Telegram @support", "caseapi-identifier"),
]
STANDARD = {"email-addr", "domain-name", "ipv4-addr", "ipv6-addr", "url"}
NOTES_EXTENSION = "extension-definition--c1e25c22-ecb5-4416-9c66-d91d533db587"


def assert_strictly_valid(bundle: dict[str, Any]) -> None:
    """What `stix2-validator --strict` says, warnings included."""
    results = validate_instance(bundle, ValidationOptions(strict=True, version="2.1"))
    assert results.is_valid, [str(e) for e in results.errors]
    assert not results.warnings, [str(w) for w in results.warnings]


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
    assert_strictly_valid(json.loads(response.text))
    bundle = stix2.parse(response.text, allow_custom=True)  # the library knows no types of ours
    objects = json.loads(response.text)["objects"]
    # The marking, caseapi's identity and one extension definition per type of ours and
    # the notes' (6 + 1), the lead's identity, the report, the observables.
    assert len(bundle.objects) == len(objects) == 1 + 1 + 7 + 2 + len(IDENTIFIERS)
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
    (identity,) = [o for o in objects if o["type"] == "identity" and o["identity_class"] == "organization"]
    assert identity["name"] == "Agency KZ-LEAD"
    assert report["created_by_ref"] == identity["id"]
    definitions = {o["id"]: o for o in objects if o["type"] == "extension-definition"}
    observables = [
        o
        for o in objects
        if o["type"] not in ("report", "identity", "marking-definition", "extension-definition")
    ]
    assert set(report["object_refs"]) == {identity["id"], *(o["id"] for o in observables)}
    identifiers = walk(client, f"{API}/cases/{case['id']}/identifiers", lead.headers)
    assert [(o["type"], o["value"]) for o in observables] == [
        (stix_type, x["normalized"]) for (_, _, stix_type), x in zip(IDENTIFIERS, identifiers, strict=True)
    ]
    for observable in observables:
        # A standard observable where STIX has one; else a type of ours, defined in the bundle.
        new_sco = [k for k, v in observable.get("extensions", {}).items() if v["extension_type"] == "new-sco"]
        if observable["type"] in STANDARD:
            assert new_sco == [], observable
        else:
            (definition,) = new_sco
            assert definitions[definition]["name"] == observable["type"]
            assert definitions[definition]["extension_types"] == ["new-sco"]
    assert observables[0]["extensions"][NOTES_EXTENSION]["notes"] == ["seen on victims' statements"]


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


def test_a_standard_observable_has_the_standard_deterministic_id(client: TestClient, lead: Caller) -> None:
    """The id STIX 2.1 computes from the value: a receiver merges it with the same address from elsewhere."""
    case = build(client, lead, "TLP:AMBER")
    objects = json.loads(export(client, lead, case["id"]).text)["objects"]
    (email,) = [o for o in objects if o["type"] == "email-addr"]
    assert email["id"] == stix2.v21.EmailAddress(value=email["value"]).id


def test_an_identifier_given_twice_is_one_observable_with_both_notes(
    client: TestClient, lead: Caller
) -> None:
    case = new_case(client, lead)
    for note in ("from the first victim", "from the second victim"):
        body = {"kind": "phone", "value": "+7 701 000 00 01", "note": note}
        created = client.post(f"{API}/cases/{case['id']}/identifiers", json=body, headers=lead.headers)
        assert created.status_code == 201, created.text
    bundle = json.loads(export(client, lead, case["id"]).text)
    assert_strictly_valid(bundle)
    (phone,) = [o for o in bundle["objects"] if o["type"] == "caseapi-phone-number"]
    notes = phone["extensions"][NOTES_EXTENSION]["notes"]
    assert notes == ["from the first victim", "from the second victim"]


def test_a_case_opened_in_year_one_exports_a_valid_bundle(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead, opened_at="0001-01-02T00:00:00Z")
    response = export(client, lead, case["id"])
    assert response.status_code == 200, response.text
    bundle = json.loads(response.text)
    (report,) = [o for o in bundle["objects"] if o["type"] == "report"]
    assert report["published"] == "0001-01-02T00:00:00.000Z"
    assert_strictly_valid(bundle)
    stix2.parse(response.text)


def test_the_seeded_case_exports_a_strictly_valid_bundle(
    client: TestClient, engine: sa.Engine, settings: Settings
) -> None:
    load_seed(engine, settings.seed_dir)
    kz = make_caller(engine, "KZ-MVD", Scope.read)
    [case] = walk(client, f"{API}/cases", kz.headers)
    response = export(client, kz, case["id"])
    assert response.status_code == 200, response.text
    assert_strictly_valid(json.loads(response.text))
