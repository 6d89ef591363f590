"""Detainees: labels not names, review dates, and the review_overdue filter."""

from fastapi.testclient import TestClient

from tests.conftest import Caller, new_case, walk


def test_review_due_defaults_to_one_year_after_detention(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    url = f"/api/v1/cases/{case['id']}/detainees"
    old = client.post(url, json={"label": "D1", "detained_at": "2024-02-29T10:00:00Z"}, headers=lead.headers)
    assert old.status_code == 201, old.text
    assert old.json()["review_due"] == "2025-02-28"
    fresh = client.post(
        url, json={"label": "D2", "detained_at": "2026-11-01T10:00:00Z"}, headers=lead.headers
    )
    assert fresh.json()["review_due"] == "2027-11-01"
    explicit = client.post(url, json={"label": "D3", "review_due": "2020-01-01"}, headers=lead.headers)
    assert explicit.json()["review_due"] == "2020-01-01"

    overdue = walk(client, f"{url}?review_overdue=true", lead.headers)
    assert sorted(d["label"] for d in overdue) == ["D1", "D3"]
    current = walk(client, f"{url}?review_overdue=false", lead.headers)
    assert [d["label"] for d in current] == ["D2"]


def test_patch_and_delete_detainee(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    created = client.post(f"/api/v1/cases/{case['id']}/detainees", json={"label": "D1"}, headers=lead.headers)
    detainee = created.json()
    url = f"/api/v1/detainees/{detainee['id']}"
    assert created.headers["location"] == url
    assert client.patch(url, json={"custody_status": "in_custody"}, headers=lead.headers).status_code == 428
    ok = client.patch(url, json={"custody_status": "in_custody"}, headers=lead.h(if_match='"1"'))
    assert ok.status_code == 200 and ok.json()["custody_status"] == "in_custody"
    assert client.patch(url, json={"label": None}, headers=lead.h(if_match='"2"')).status_code == 422
    assert (
        client.patch(url, json={"custody_status": "gone"}, headers=lead.h(if_match='"2"')).status_code == 422
    )
    assert client.delete(url, headers=lead.h(if_match='"1"')).status_code == 412
    assert client.delete(url, headers=lead.h(if_match='"2"')).status_code == 204
    assert client.get(url, headers=lead.headers).status_code == 404
