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
