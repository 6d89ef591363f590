import uuid

from fastapi.testclient import TestClient

from tests.conftest import Caller, join, new_case, walk


def test_location_lifecycle(client: TestClient, lead: Caller, partner: Caller, outsider: Caller) -> None:
    case = new_case(client, lead)
    join(client, lead, case["id"], partner)
    url = f"/api/v1/cases/{case['id']}/locations"
    body = {
        "label": "Office",
        "city": "Kyiv",
        "country": "UA",
        "searched_at": "2025-09-23T06:00:00Z",
        "searched_by_agency_id": str(partner.agency_id),
    }
    created = client.post(url, json=body, headers=partner.headers)
    assert created.status_code == 201, created.text
    location = created.json()
    assert created.headers["location"] == f"/api/v1/locations/{location['id']}"
    assert client.post(url, json={**body, "country": "ZZ"}, headers=partner.headers).status_code == 422
    assert client.post(url, json={**body, "country": "ua"}, headers=partner.headers).status_code == 422
    assert client.post(url, json={"label": ""}, headers=partner.headers).status_code == 422
    assert client.get(f"/api/v1/locations/{location['id']}", headers=outsider.headers).status_code == 404
    assert client.get(url, headers=outsider.headers).status_code == 404

    one = f"/api/v1/locations/{location['id']}"
    patched = client.patch(one, json={"address": "Street 1"}, headers=lead.h(if_match='"1"'))
    assert patched.status_code == 200 and patched.headers["etag"] == '"2"'
    # A location that evidence refers to stays.
    item = client.post(
        f"/api/v1/cases/{case['id']}/seized-items",
        json={"category": "computer", "description": "PC", "location_id": location["id"]},
        headers=lead.headers,
    )
    assert item.status_code == 201
    assert client.delete(one, headers=lead.h(if_match='"2"')).status_code == 409
    assert [loc["label"] for loc in walk(client, url, lead.headers)] == ["Office"]


def test_location_refused_while_referred_to_then_deleted(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    url = f"/api/v1/cases/{case['id']}/locations"
    location = client.post(url, json={"label": "Flat"}, headers=lead.headers).json()
    one = f"/api/v1/locations/{location['id']}"
    unknown = client.patch(
        one, json={"searched_by_agency_id": str(uuid.uuid4())}, headers=lead.h(if_match='"1"')
    )
    assert unknown.status_code == 422
    same = client.patch(one, json={"label": "Flat"}, headers=lead.h(if_match='"1"'))
    assert same.status_code == 200 and same.headers["etag"] == '"1"'  # no change, no new version
    detainee = client.post(
        f"/api/v1/cases/{case['id']}/detainees",
        json={"label": "D1", "location_id": location["id"]},
        headers=lead.headers,
    )
    assert detainee.status_code == 201, detainee.text
    assert client.delete(one, headers=lead.h(if_match='"1"')).status_code == 409
    unlinked = client.delete(f"/api/v1/detainees/{detainee.json()['id']}", headers=lead.h(if_match='"1"'))
    assert unlinked.status_code == 204
    assert client.delete(one, headers=lead.h(if_match='"1"')).status_code == 204
    assert client.get(one, headers=lead.headers).status_code == 404
    assert walk(client, url, lead.headers) == []
