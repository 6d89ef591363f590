import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller, join, new_case


def test_create_case_makes_caller_lead(client: TestClient, lead: Caller) -> None:
    response = client.post("/api/v1/cases", json={"reference": "R-1", "title": "T"}, headers=lead.headers)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/api/v1/cases/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body["lead_agency_id"] == str(lead.agency_id)
    assert body["access"] == "full"
    assert body["handling_code"] == "TLP:AMBER"
    parts = client.get(f"/api/v1/cases/{body['id']}/participants", headers=lead.headers).json()
    assert [(p["agency_code"], p["role"]) for p in parts["items"]] == [("KZ-LEAD", "lead")]


def test_outsider_sees_nothing_of_amber_case(client: TestClient, lead: Caller, outsider: Caller) -> None:
    case = new_case(client, lead)
    response = client.get(f"/api/v1/cases/{case['id']}", headers=outsider.headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/cases", headers=outsider.headers).json()["items"] == []


def test_partner_edits_with_if_match(client: TestClient, lead: Caller, partner: Caller) -> None:
    case = new_case(client, lead)
    join(client, lead, case["id"], partner)
    url = f"/api/v1/cases/{case['id']}"
    assert client.patch(url, json={"title": "x"}, headers=partner.headers).status_code == 428
    assert client.patch(url, json={"title": "x"}, headers=partner.h(if_match='"9"')).status_code == 412
    ok = client.patch(url, json={"title": "x"}, headers=partner.h(if_match='"1"'))
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] == '"2"'
    assert ok.json()["title"] == "x"
    # The partner may not change the handling code.
    denied = client.patch(url, json={"handling_code": "TLP:RED"}, headers=partner.h(if_match='"2"'))
    assert denied.status_code == 403


# Default_Ignorable_Code_Point, by class: each renders as nothing, so a
# reference holding one looks like the same reference without it.
INVISIBLE = {
    "soft hyphen": "\u00ad",
    "tag character": "\U000e0041",
    "language tag": "\U000e0001",
    "variation selector": "\ufe0f",
    "supplementary variation selector": "\U000e0100",
    "Mongolian variation selector": "\u180b",
    "Hangul filler": "\u3164",
    "halfwidth Hangul filler": "\uffa0",
    "Hangul choseong filler": "\u115f",
    "combining grapheme joiner": "\u034f",
    "Khmer inherent vowel": "\u17b4",
    "invisible operator": "\u2062",
    "musical format control": "\U0001d173",
    "shorthand format control": "\U0001bca0",
}


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_one_line_fields_refuse_default_ignorable_characters(
    client: TestClient, lead: Caller, admin: Caller, char: str
) -> None:
    case = new_case(client, lead, reference="KZ-2025")
    for body, field in (
        ({"reference": f"KZ{char}-2025", "title": "Call centre"}, "reference"),
        ({"reference": "KZ-2026", "title": f"Call{char} centre"}, "title"),
    ):
        response = client.post("/api/v1/cases", json=body, headers=lead.headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["body", field]
    patch = client.patch(
        f"/api/v1/cases/{case['id']}", json={"title": f"{char}Kyiv"}, headers=lead.h(if_match='"1"')
    )
    assert patch.status_code == 422
    agency = {"code": f"ADMIN-AGENCY-{char}X", "name": "Unit", "kind": "police"}
    response = client.post("/api/v1/agencies", json=agency, headers=admin.headers)
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "code"]
    listed = client.get("/api/v1/cases", headers=lead.headers).json()["items"]
    assert [c["reference"] for c in listed] == ["KZ-2025"]


def test_references_the_same_under_nfkc_are_one_reference(client: TestClient, lead: Caller) -> None:
    """Stored in NFKC: a full-width or otherwise compatible spelling is the plain reference."""
    first = new_case(client, lead, reference="\uff2b\uff3a-\uff12\uff10\uff12\uff15", title="\uff2byiv")
    assert (first["reference"], first["title"]) == ("KZ-2025", "Kyiv")
    for spelling in ("KZ-2025", "\uff2bZ-2025", "KZ-\u2082\u2080\u2082\u2085"):
        twin = client.post("/api/v1/cases", json={"reference": spelling, "title": "T"}, headers=lead.headers)
        assert twin.status_code == 409, (spelling, twin.text)


def test_the_lead_renumbers_a_case(client: TestClient, lead: Caller) -> None:
    """A new reference is checked against the lead's other cases only, and
    the old one is free again, as `q=` finds the new one."""
    first = new_case(client, lead, reference="KZ-1")
    second = new_case(client, lead, reference="KZ-2")
    taken = client.patch(
        f"/api/v1/cases/{second['id']}", json={"reference": "kz-1"}, headers=lead.h(if_match='"1"')
    )
    assert taken.status_code == 409, taken.text
    url = f"/api/v1/cases/{first['id']}"
    respelt = client.patch(url, json={"reference": "kz-1"}, headers=lead.h(if_match='"1"'))
    assert respelt.status_code == 200, respelt.text
    assert (respelt.json()["reference"], respelt.headers["etag"]) == ("kz-1", '"2"')
    renumbered = client.patch(url, json={"reference": "KZ-3"}, headers=lead.h(if_match='"2"'))
    assert renumbered.status_code == 200, renumbered.text
    found = client.get("/api/v1/cases", params={"q": "kz-3"}, headers=lead.headers).json()["items"]
    assert [c["id"] for c in found] == [first["id"]]
    again = client.post("/api/v1/cases", json={"reference": "KZ-1", "title": "T"}, headers=lead.headers)
    assert again.status_code == 201, again.text
