"""Seized items and their append-only chain of custody."""

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

import app.evidence.service
from tests.conftest import Caller, join, new_case, walk

SHA = "a" * 64


def _item(client: TestClient, caller: Caller, case_id: str, **fields: object) -> dict:
    body = {"category": "computer", "description": "Laptops", "quantity": 3, **fields}
    response = client.post(f"/api/v1/cases/{case_id}/seized-items", json=body, headers=caller.headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_item_defaults_and_seizure_event(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    item = _item(client, lead, case["id"], sha256=SHA, seized_at="2025-09-23T08:00:00+03:00")
    assert item["seized_by_agency_id"] == item["custodian_agency_id"] == str(lead.agency_id)
    assert item["status"] == "seized"
    assert item["seized_at"] == "2025-09-23T05:00:00Z"
    chain = walk(client, f"/api/v1/seized-items/{item['id']}/custody", lead.headers)
    assert [(e["seq"], e["action"], e["to_agency_id"]) for e in chain] == [(1, "seized", str(lead.agency_id))]


def test_validation_of_items(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    url = f"/api/v1/cases/{case['id']}/seized-items"
    base = {"category": "computer", "description": "x"}
    for bad in (
        {"sha256": "A" * 64},
        {"sha256": "abc"},
        {"quantity": 0},
        {"quantity": 2**63},
        {"category": "spaceship"},
        {"status": "destroyed"},
        {"custodian_agency_id": "x"},
        {"location_id": str(uuid.uuid4())},
        {"seized_by_agency_id": str(uuid.uuid4())},
    ):
        response = client.post(url, json={**base, **bad}, headers=lead.headers)
        assert response.status_code == 422, (bad, response.text)
    unknown = client.post(url, json={**base, "quantity": None}, headers=lead.headers)
    assert unknown.status_code == 201 and unknown.json()["quantity"] is None
    other_case = new_case(client, lead)
    loc = client.post(
        f"/api/v1/cases/{other_case['id']}/locations", json={"label": "L"}, headers=lead.headers
    )
    cross = client.post(url, json={**base, "location_id": loc.json()["id"]}, headers=lead.headers)
    assert cross.status_code == 422
    # Custodian and status change only through custody events.
    item = unknown.json()
    patch = client.patch(
        f"/api/v1/seized-items/{item['id']}", json={"status": "returned"}, headers=lead.h(if_match='"1"')
    )
    assert patch.status_code == 422


def test_transfer_moves_custodian_and_chain_is_append_only(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    case = new_case(client, lead)
    join(client, lead, case["id"], partner)
    item = _item(client, lead, case["id"], seized_at="2025-09-23T00:00:00Z")
    custody = f"/api/v1/seized-items/{item['id']}/custody"
    transfer = {"action": "transferred", "to_agency_id": str(partner.agency_id), "at": "2025-09-24T00:00:00Z"}
    response = client.post(custody, json=transfer, headers=lead.headers)
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith(response.json()["id"])
    assert client.get(response.headers["location"], headers=lead.headers).status_code == 200
    event = response.json()
    assert event["from_agency_id"] == str(lead.agency_id) and event["seq"] == 2
    current = client.get(f"/api/v1/seized-items/{item['id']}", headers=lead.headers).json()
    assert current["custodian_agency_id"] == str(partner.agency_id)
    assert current["status"] == "transferred"
    assert current["version"] == 2

    # A transfer starts at the current custodian; time runs forward; seizure happens once.
    stale = {**transfer, "from_agency_id": str(lead.agency_id), "at": "2025-09-25T00:00:00Z"}
    assert client.post(custody, json=stale, headers=lead.headers).status_code == 409
    back_in_time = {"action": "examined", "at": "2025-09-20T00:00:00Z"}
    assert client.post(custody, json=back_in_time, headers=lead.headers).status_code == 409
    assert client.post(custody, json={"action": "seized"}, headers=lead.headers).status_code == 409
    no_target = {"action": "transferred", "at": "2025-09-26T00:00:00Z"}
    assert client.post(custody, json=no_target, headers=lead.headers).status_code == 422

    # Events are never changed or deleted.
    event_url = f"{custody}/{event['id']}"
    for method in ("patch", "put", "delete"):
        response = getattr(client, method)(event_url, headers=lead.h(if_match='"1"'))
        assert response.status_code == 405
    assert client.delete(custody, headers=lead.headers).status_code == 405

    # Deleting an item with custody history is refused; returning it closes the chain.
    deleted = client.delete(f"/api/v1/seized-items/{item['id']}", headers=lead.h(if_match='"2"'))
    assert deleted.status_code == 409
    returned = client.post(
        custody, json={"action": "returned", "at": "2025-10-01T00:00:00Z"}, headers=partner.headers
    )
    assert returned.status_code == 201
    closed = client.post(custody, json={"action": "examined"}, headers=lead.headers)
    assert closed.status_code == 409
    chain = walk(client, custody, lead.headers)
    assert [e["action"] for e in chain] == ["seized", "transferred", "returned"]


def test_delete_item_with_only_its_seizure(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    item = _item(client, lead, case["id"])
    url = f"/api/v1/seized-items/{item['id']}"
    assert client.delete(url, headers=lead.h(if_match='"1"')).status_code == 204
    assert client.get(url, headers=lead.headers).status_code == 404


def test_category_filter_and_observer_reads_only(client: TestClient, lead: Caller, partner: Caller) -> None:
    case = new_case(client, lead)
    join(client, lead, case["id"], partner, role="observer")
    _item(client, lead, case["id"])
    _item(client, lead, case["id"], category="mobile_phone", description="Phones", quantity=24)
    url = f"/api/v1/cases/{case['id']}/seized-items"
    phones = walk(client, f"{url}?category=mobile_phone", partner.headers)
    assert [i["quantity"] for i in phones] == [24]
    denied = client.post(url, json={"category": "other", "description": "x"}, headers=partner.headers)
    assert denied.status_code == 403


def test_quantity_is_a_json_number(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    url = f"/api/v1/cases/{case['id']}/seized-items"
    for quantity in ("1", 1.5, True):
        response = client.post(
            url, json={"category": "computer", "description": "x", "quantity": quantity}, headers=lead.headers
        )
        assert response.status_code == 422, quantity


def test_seized_at_and_location_changes_and_repeated_status(client: TestClient, lead: Caller) -> None:
    case = new_case(client, lead)
    item = _item(client, lead, case["id"], seized_at="2025-09-23T00:00:00Z")
    url, custody = f"/api/v1/seized-items/{item['id']}", f"/api/v1/seized-items/{item['id']}/custody"
    examined = {"action": "examined", "at": "2025-09-24T00:00:00Z"}
    assert client.post(custody, json=examined, headers=lead.headers).status_code == 201
    # A second examination is an event, and no change of the item (its status stays).
    again = client.post(custody, json={**examined, "at": "2025-09-25T00:00:00Z"}, headers=lead.headers)
    assert again.status_code == 201 and again.json()["seq"] == 3
    current = client.get(url, headers=lead.headers)
    assert current.json()["status"] == "under_examination" and current.headers["etag"] == '"2"'
    # seized_at may move up to the first event after the seizure, not past it.
    moved = client.patch(url, json={"seized_at": "2025-09-24T00:00:00Z"}, headers=lead.h(if_match='"2"'))
    assert moved.status_code == 200 and moved.json()["seized_at"] == "2025-09-24T00:00:00Z"
    assert moved.headers["etag"] == '"3"'
    past = client.patch(url, json={"seized_at": "2025-09-24T00:00:01Z"}, headers=lead.h(if_match='"3"'))
    assert past.status_code == 422
    other_case = new_case(client, lead)
    elsewhere = client.post(
        f"/api/v1/cases/{other_case['id']}/locations", json={"label": "L"}, headers=lead.headers
    ).json()
    here = client.post(
        f"/api/v1/cases/{case['id']}/locations", json={"label": "L"}, headers=lead.headers
    ).json()
    wrong = client.patch(url, json={"location_id": elsewhere["id"]}, headers=lead.h(if_match='"3"'))
    assert wrong.status_code == 422
    placed = client.patch(url, json={"location_id": here["id"]}, headers=lead.h(if_match='"3"'))
    assert placed.status_code == 200 and placed.json()["location_id"] == here["id"]
    # An event is read under its own item only.
    event_id = again.json()["id"]
    other = _item(client, lead, case["id"])
    assert client.get(f"{custody}/{event_id}", headers=lead.headers).status_code == 200
    misplaced = f"/api/v1/seized-items/{other['id']}/custody/{event_id}"
    assert client.get(misplaced, headers=lead.headers).status_code == 404


def test_appends_to_one_chain_take_turns(
    application: FastAPI,
    client: TestClient,
    engine: sa.Engine,
    backend: str,
    lead: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The item's row is locked while an event is appended: a second append
    waits for the first to commit, then reads its event as the last one."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time")
    case = new_case(client, lead)
    item = _item(client, lead, case["id"])
    custody = f"/api/v1/seized-items/{item['id']}/custody"
    original, reached, go = app.evidence.service.add_custody_event, threading.Event(), threading.Event()

    async def first_waits(*args: Any, **kwargs: Any) -> Any:
        if not reached.is_set():
            reached.set()
            await asyncio.to_thread(go.wait, 30)
        return await original(*args, **kwargs)

    monkeypatch.setattr(app.evidence.service, "add_custody_event", first_waits)
    answers: list[Any] = []

    def append() -> None:
        with TestClient(application, raise_server_exceptions=False) as own:
            answers.append(own.post(custody, json={"action": "examined"}, headers=lead.headers))

    first = threading.Thread(target=append, daemon=True)
    first.start()
    assert reached.wait(20)
    second = threading.Thread(target=append, daemon=True)
    second.start()
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 20
    while True:
        with engine.connect() as conn:
            if conn.execute(waiting).scalar_one():
                break
        assert second.is_alive() and time.monotonic() < deadline, "the second append did not wait"
        time.sleep(0.01)
    go.set()
    first.join(30)
    second.join(30)
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    assert sorted(a.json()["seq"] for a in answers) == [2, 3]
    assert [e["seq"] for e in walk(client, custody, lead.headers)] == [1, 2, 3]
