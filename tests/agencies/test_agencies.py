import uuid

from fastapi.testclient import TestClient

from tests.conftest import Caller, walk


def test_admin_manages_agencies(client: TestClient, admin: Caller, lead: Caller) -> None:
    body = {"code": "UA-NPU", "name": "National Police of Ukraine", "country": "UA", "kind": "police"}
    assert client.post("/api/v1/agencies", json=body, headers=lead.headers).status_code == 403
    created = client.post("/api/v1/agencies", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    agency = created.json()
    assert created.headers["location"] == f"/api/v1/agencies/{agency['id']}"
    assert client.post("/api/v1/agencies", json=body, headers=admin.headers).status_code == 409
    child = {"code": "ADMIN-CYBER", "name": "Cyber unit", "country": "UA", "kind": "police"}
    child_id = client.post(
        "/api/v1/agencies", json={**child, "parent_id": str(admin.agency_id)}, headers=admin.headers
    ).json()["id"]
    codes = {a["code"] for a in walk(client, "/api/v1/agencies", lead.headers, limit=1)}
    assert {"UA-NPU", "ADMIN-CYBER", "KZ-LEAD", "ADMIN-AGENCY"} <= codes

    url = f"/api/v1/agencies/{child_id}"
    read_only = client.patch(url, json={"parent_id": agency["id"]}, headers=admin.h(if_match='"1"'))
    assert read_only.status_code == 422
    assert client.patch(url, json={"name": "Cyber"}, headers=lead.h(if_match='"1"')).status_code == 403
    renamed = client.patch(url, json={"name": "Cyber"}, headers=admin.h(if_match='"1"'))
    assert renamed.status_code == 200 and renamed.headers["etag"] == '"2"'
    for bad in ({"kind": "army"}, {"country": "XX"}, {"code": ""}, {"id": str(uuid.uuid4())}):
        assert (
            client.post(
                "/api/v1/agencies", json={**body, "code": "N2", **bad}, headers=admin.headers
            ).status_code
            == 422
        )
