import uuid

from fastapi.testclient import TestClient

from tests.conftest import Caller, join, new_case


def test_only_the_lead_manages_participants(
    client: TestClient, lead: Caller, partner: Caller, outsider: Caller
) -> None:
    case = new_case(client, lead)
    url = f"/api/v1/cases/{case['id']}/participants"
    join(client, lead, case["id"], partner)
    again = client.post(
        url, json={"agency_id": str(partner.agency_id), "role": "observer"}, headers=lead.headers
    )
    assert again.status_code == 409
    as_lead = client.post(
        url, json={"agency_id": str(outsider.agency_id), "role": "lead"}, headers=lead.headers
    )
    assert as_lead.status_code == 422
    unknown = client.post(url, json={"agency_id": str(uuid.uuid4()), "role": "partner"}, headers=lead.headers)
    assert unknown.status_code == 422
    by_partner = client.post(
        url, json={"agency_id": str(outsider.agency_id), "role": "observer"}, headers=partner.headers
    )
    assert by_partner.status_code == 403

    member = f"{url}/{partner.agency_id}"
    assert client.get(member, headers=partner.headers).headers["etag"] == '"1"'
    demoted = client.patch(member, json={"role": "observer"}, headers=lead.h(if_match='"1"'))
    assert demoted.status_code == 200 and demoted.json()["role"] == "observer"
    # An observer reads but does not write.
    assert client.get(f"/api/v1/cases/{case['id']}", headers=partner.headers).status_code == 200
    denied = client.patch(
        f"/api/v1/cases/{case['id']}", json={"title": "x"}, headers=partner.h(if_match='"1"')
    )
    assert denied.status_code == 403

    lead_url = f"{url}/{lead.agency_id}"
    assert client.delete(lead_url, headers=lead.h(if_match='"1"')).status_code == 409
    assert client.patch(lead_url, json={"role": "partner"}, headers=lead.h(if_match='"1"')).status_code == 409
    assert client.delete(member, headers=lead.h(if_match='"2"')).status_code == 204
    assert client.get(f"/api/v1/cases/{case['id']}", headers=partner.headers).status_code == 404
