import uuid

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import cli
from tests.conftest import Caller, walk

API = "/api/v1"


def test_admin_manages_agencies(client: TestClient, admin: Caller, lead: Caller) -> None:
    body = {
        "code": "ADMIN-AGENCY-NPU",
        "name": "National Police of Ukraine",
        "country": "UA",
        "kind": "police",
    }
    assert client.post("/api/v1/agencies", json=body, headers=lead.headers).status_code == 403
    created = client.post("/api/v1/agencies", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    agency = created.json()
    assert created.headers["location"] == f"/api/v1/agencies/{agency['id']}"
    assert client.post("/api/v1/agencies", json=body, headers=admin.headers).status_code == 409
    child = {"code": "ADMIN-AGENCY-CYBER", "name": "Cyber unit", "country": "UA", "kind": "police"}
    child_id = client.post(
        "/api/v1/agencies", json={**child, "parent_id": str(admin.agency_id)}, headers=admin.headers
    ).json()["id"]
    codes = {a["code"] for a in walk(client, "/api/v1/agencies", lead.headers, limit=1)}
    assert {"ADMIN-AGENCY-NPU", "ADMIN-AGENCY-CYBER", "KZ-LEAD", "ADMIN-AGENCY"} <= codes

    url = f"/api/v1/agencies/{child_id}"
    read_only = client.patch(url, json={"parent_id": agency["id"]}, headers=admin.h(if_match='"1"'))
    assert read_only.status_code == 422
    assert client.patch(url, json={"name": "Cyber"}, headers=lead.h(if_match='"1"')).status_code == 403
    renamed = client.patch(url, json={"name": "Cyber"}, headers=admin.h(if_match='"1"'))
    assert renamed.status_code == 200 and renamed.headers["etag"] == '"2"'
    for bad in ({"kind": "army"}, {"country": "XX"}, {"code": ""}, {"id": str(uuid.uuid4())}):
        assert (
            client.post(
                "/api/v1/agencies", json={**body, "code": "ADMIN-AGENCY-N2", **bad}, headers=admin.headers
            ).status_code
            == 422
        )


def test_an_admin_key_names_agencies_under_their_parent_and_the_host_keeps_the_rest(
    client: TestClient,
    engine: sa.Engine,
    admin: Caller,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Code squatting: an admin key gives its sub-agency the code of a body it
    is not (EUROPOL), and the host can no longer register that body."""

    def create(code: str, parent_id: object) -> tuple[int, list[str]]:
        body = {"code": code, "name": "Europol", "kind": "international_organization"}
        if parent_id is not None:
            body["parent_id"] = str(parent_id)
        response = client.post(f"{API}/agencies", json=body, headers=admin.headers)
        locs = [e["loc"] for e in response.json().get("errors", [])]
        return response.status_code, locs

    for code, parent in (
        ("EUROPOL", admin.agency_id),  # its own sub-agency, any free code
        ("EUROPOL", None),  # a top-level agency
        ("ADMIN-AGENCY", None),
        ("ADMIN-AGENCY-", admin.agency_id),  # the prefix alone
        ("ADMIN-AGENCYX", admin.agency_id),  # not the parent's code and a hyphen
    ):
        assert create(code, parent) == (422, [["body", "code"]]), code
    status, _ = create("ADMIN-AGENCY-EUROPOL-LIAISON", admin.agency_id)
    assert status == 201
    unit = client.get(f"{API}/agencies", params={"limit": 200}, headers=admin.headers).json()["items"]
    unit_id = next(a["id"] for a in unit if a["code"] == "ADMIN-AGENCY-EUROPOL-LIAISON")
    # Below a sub-agency, the sub-agency's code is the prefix.
    assert create("ADMIN-AGENCY-DESK", unit_id) == (422, [["body", "code"]])
    assert create("ADMIN-AGENCY-EUROPOL-LIAISON-DESK", unit_id)[0] == 201

    # Renaming follows the same rule; the code of an agency with no parent is the host's.
    url = f"{API}/agencies/{unit_id}"
    squat = client.patch(url, json={"code": "EUROPOL"}, headers=admin.h(if_match='"1"'))
    assert squat.status_code == 422 and squat.json()["errors"][0]["loc"] == ["body", "code"]
    own = client.patch(
        f"{API}/agencies/{admin.agency_id}", json={"code": "EUROPOL"}, headers=admin.h(if_match='"1"')
    )
    assert own.status_code == 422 and own.json()["errors"][0]["loc"] == ["body", "code"]
    same = client.patch(url, json={"code": "ADMIN-AGENCY-EUROPOL-LIAISON"}, headers=admin.h(if_match='"1"'))
    assert same.status_code == 200 and same.headers["etag"] == '"1"'
    moved = client.patch(url, json={"code": "ADMIN-AGENCY-LIAISON"}, headers=admin.h(if_match='"1"'))
    assert moved.status_code == 200, moved.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM agency WHERE code = 'EUROPOL'")).scalar() == 0

    capsys.readouterr()
    cli.main(
        ["agency", "create", "--code", "EUROPOL", "--name", "Europol", "--kind", "international_organization"]
    )
    created = capsys.readouterr().out.strip().splitlines()[-1]
    assert client.get(f"{API}/agencies/{created}", headers=admin.headers).json()["code"] == "EUROPOL"
