"""Instants of what happened cannot lie in the future, and dates keep their order:
in the single routes, on PATCH against the stored values, and in bundle import."""

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.cases.models import Case
from app.detainees.models import Detainee
from app.evidence.models import CustodyEvent
from tests.conftest import Caller
from tests.trust.world import World, build_world

API = "/api/v1"
FAR = "9998-06-01T00:00:00Z"
PAST = "2025-09-23T06:00:00Z"


def iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def in_(seconds: float) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds))


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner)


def assert_422_at(response: Any, *loc: str | int) -> None:
    assert response.status_code == 422, response.text
    assert ["body", *loc] in [e["loc"] for e in response.json()["errors"]], response.text


def test_the_year_9998_custody_event_no_longer_freezes_the_chain(
    client: TestClient, world: World, lead: Caller, partner: Caller
) -> None:
    custody = f"{API}/seized-items/{world.ids['item_id']}/custody"
    for at in (FAR, in_(3600)):
        response = client.post(custody, json={"action": "examined", "at": at}, headers=lead.headers)
        assert_422_at(response, "at")
    # Within the clock skew an agency's clock may run ahead; the chain goes on after it.
    assert (
        client.post(custody, json={"action": "examined", "at": in_(60)}, headers=lead.headers).status_code
        == 201
    )
    later = client.post(
        custody,
        json={"action": "transferred", "to_agency_id": str(partner.agency_id), "at": in_(120)},
        headers=lead.headers,
    )
    assert later.status_code == 201, later.text
    assert len(client.get(custody, headers=lead.headers).json()["items"]) == 3


def test_every_instant_of_what_happened_refuses_the_future(
    client: TestClient, world: World, lead: Caller
) -> None:
    cid, ids = world.case_id, world.ids
    for future in (FAR, in_(3600)):
        creates = [
            (
                f"{API}/cases",
                {"reference": f"R-{uuid.uuid4().hex[:6]}", "title": "T", "opened_at": future},
                "opened_at",
            ),
            (
                f"{API}/cases",
                {"reference": f"R-{uuid.uuid4().hex[:6]}", "title": "T", "closed_at": future},
                "closed_at",
            ),
            (f"{API}/cases/{cid}/locations", {"label": "L", "searched_at": future}, "searched_at"),
            (
                f"{API}/cases/{cid}/seized-items",
                {"category": "cash", "description": "d", "seized_at": future},
                "seized_at",
            ),
            (f"{API}/cases/{cid}/detainees", {"label": "D", "detained_at": future}, "detained_at"),
        ]
        for url, body, field in creates:
            assert_422_at(client.post(url, json=body, headers=lead.h(x_purpose="p")), field)
        patches = [
            (f"{API}/cases/{cid}", "opened_at"),
            (f"{API}/cases/{cid}", "closed_at"),
            (f"{API}/locations/{ids['location_id']}", "searched_at"),
            (f"{API}/seized-items/{ids['item_id']}", "seized_at"),
            (f"{API}/detainees/{ids['detainee_id']}", "detained_at"),
        ]
        for url, field in patches:
            response = client.patch(url, json={field: future}, headers=lead.h(if_match='"1"'))
            assert_422_at(response, field)
    born_tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    response = client.post(
        f"{API}/cases/{cid}/detainees",
        json={"label": "D", "date_of_birth": born_tomorrow},
        headers=lead.h(x_purpose="p"),
    )
    assert_422_at(response, "date_of_birth")


def test_deadlines_stay_in_the_future(
    client: TestClient, world: World, lead: Caller, partner: Caller
) -> None:
    response = client.post(
        f"{API}/requests",
        json={"to_agency_id": str(partner.agency_id), "subject": "S", "body": "B", "due_at": in_(30 * 86400)},
        headers=lead.headers,
    )
    assert response.status_code == 201, response.text
    later = (datetime.now(UTC) + timedelta(days=400)).date().isoformat()
    response = client.post(
        f"{API}/cases/{world.case_id}/detainees",
        json={"label": "D", "review_due": later},
        headers=lead.headers,
    )
    assert response.status_code == 201, response.text


def test_the_clock_skew_is_a_setting(
    client: TestClient,
    world: World,
    lead: Caller,
    app_with: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    """Of the app that validates: one without skew, in the same process as one
    with the default 5 minutes, refuses a minute ahead in a route and in an import."""
    custody = f"{API}/seized-items/{world.ids['item_id']}/custody"
    ahead = {"action": "examined", "at": in_(60)}
    doc = bundle(lead)
    doc["seized_items"][0]["seized_at"] = in_(60)
    with app_with(clock_skew_seconds=0) as strict:
        assert_422_at(strict.post(custody, json=ahead, headers=lead.headers), "at")
        assert_422_at(
            strict.post(f"{API}/bundles", json=doc, headers=lead.headers), "seized_items", 0, "seized_at"
        )
        assert client.post(custody, json=ahead, headers=lead.headers).status_code == 201
        assert client.post(f"{API}/bundles", json=doc, headers=lead.headers).status_code == 201


# --- order ------------------------------------------------------------------------------------------------


def test_a_case_cannot_close_before_it_opened(client: TestClient, lead: Caller) -> None:
    ref = f"R-{uuid.uuid4().hex[:6]}"
    both = {
        "reference": ref,
        "title": "T",
        "opened_at": "2025-09-23T06:00:00Z",
        "closed_at": "2025-09-22T06:00:00Z",
    }
    assert_422_at(client.post(f"{API}/cases", json=both, headers=lead.headers), "closed_at")
    # opened_at defaults to now: a closure in the past has nothing to close.
    closed_only = {"reference": ref, "title": "T", "closed_at": PAST}
    assert_422_at(client.post(f"{API}/cases", json=closed_only, headers=lead.headers), "closed_at")
    assert client.get(f"{API}/cases", headers=lead.headers).json()["items"] == []

    case = client.post(
        f"{API}/cases", json={"reference": ref, "title": "T", "opened_at": PAST}, headers=lead.headers
    ).json()
    url, match = f"{API}/cases/{case['id']}", lead.h(if_match='"1"')
    assert_422_at(client.patch(url, json={"closed_at": "2025-09-01T00:00:00Z"}, headers=match), "closed_at")
    assert client.patch(url, json={"closed_at": "2025-10-01T00:00:00Z"}, headers=match).status_code == 200
    # The stored closed_at now bounds a change of opened_at.
    response = client.patch(url, json={"opened_at": "2025-10-02T00:00:00Z"}, headers=lead.h(if_match='"2"'))
    assert_422_at(response, "opened_at")
    assert client.get(url, headers=lead.headers).json()["opened_at"] == "2025-09-23T06:00:00Z"


def test_a_detainee_is_born_before_detained_and_reviewed_after(
    client: TestClient, world: World, lead: Caller
) -> None:
    url = f"{API}/cases/{world.case_id}/detainees"
    headers = lead.h(x_purpose="p")
    early_review = {"label": "D", "detained_at": PAST, "review_due": "2025-09-01"}
    assert_422_at(client.post(url, json=early_review, headers=headers), "review_due")
    unborn = {"label": "D", "detained_at": PAST, "date_of_birth": "2025-10-01"}
    assert_422_at(client.post(url, json=unborn, headers=headers), "detained_at")
    assert client.post(url, json={"label": "D", "detained_at": PAST}, headers=headers).json()[
        "review_due"
    ] == ("2026-09-23")
    made = client.post(
        url, json={"label": "D", "detained_at": PAST, "review_due": "2025-10-01"}, headers=headers
    )
    made = made.json()
    response = client.patch(
        f"{API}/detainees/{made['id']}",
        json={"detained_at": "2025-10-05T00:00:00Z"},
        headers=lead.h(if_match='"1"'),
    )
    assert_422_at(response, "detained_at")
    response = client.patch(
        f"{API}/detainees/{made['id']}", json={"review_due": "2025-09-01"}, headers=lead.h(if_match='"1"')
    )
    assert_422_at(response, "review_due")


def test_no_custody_event_before_the_seizure(
    client: TestClient, world: World, lead: Caller, partner: Caller
) -> None:
    item = client.post(
        f"{API}/cases/{world.case_id}/seized-items",
        json={"category": "computer", "description": "Laptop", "seized_at": PAST},
        headers=lead.headers,
    ).json()
    custody, url = f"{API}/seized-items/{item['id']}/custody", f"{API}/seized-items/{item['id']}"
    before = {"action": "examined", "at": "2025-09-22T06:00:00Z"}
    assert client.post(custody, json=before, headers=lead.headers).status_code == 409
    transfer = {"action": "transferred", "to_agency_id": str(partner.agency_id), "at": "2025-09-24T06:00:00Z"}
    assert client.post(custody, json=transfer, headers=lead.headers).status_code == 201
    # The item's seized_at cannot move past the transfer that followed the seizure ...
    response = client.patch(url, json={"seized_at": "2025-09-25T06:00:00Z"}, headers=lead.h(if_match='"2"'))
    assert_422_at(response, "seized_at")
    # ... and a later seized_at with no event after it still bounds the next event.
    other = client.post(
        f"{API}/cases/{world.case_id}/seized-items",
        json={"category": "computer", "description": "Phone", "seized_at": "2025-09-20T06:00:00Z"},
        headers=lead.headers,
    ).json()
    moved = client.patch(
        f"{API}/seized-items/{other['id']}", json={"seized_at": PAST}, headers=lead.h(if_match='"1"')
    )
    assert moved.status_code == 200, moved.text
    response = client.post(
        f"{API}/seized-items/{other['id']}/custody",
        json={"action": "examined", "at": "2025-09-21T06:00:00Z"},
        headers=lead.headers,
    )
    assert response.status_code == 409, response.text


# --- bundles ----------------------------------------------------------------------------------------------


def bundle(lead: Caller, **parts: Any) -> dict[str, Any]:
    agency = str(lead.agency_id)
    item = {
        "id": str(uuid.uuid4()),
        "category": "computer",
        "description": "Laptop",
        "seized_at": PAST,
        "seized_by_agency_id": agency,
        "custodian_agency_id": agency,
        "custody": [{"action": "seized", "to_agency_id": agency, "at": PAST}],
    }
    return {
        "bundle_version": 1,
        "case": {"reference": f"B-{uuid.uuid4().hex[:8]}", "title": "Imported"},
        "seized_items": [item],
        "detainees": [{"id": str(uuid.uuid4()), "label": "D", "detained_at": PAST}],
        **parts,
    }


def test_bundle_import_applies_the_same_rules(client: TestClient, lead: Caller) -> None:
    def refused(doc: dict[str, Any], *loc: str | int) -> None:
        assert_422_at(client.post(f"{API}/bundles", json=doc, headers=lead.headers), *loc)

    assert client.post(f"{API}/bundles", json=bundle(lead), headers=lead.headers).status_code == 201

    doc = bundle(lead)
    doc["seized_items"][0]["custody"].append({"action": "examined", "at": FAR})
    refused(doc, "seized_items", 0, "custody", 1, "at")
    doc = bundle(lead)
    doc["seized_items"][0]["custody"].append({"action": "examined", "at": "2025-09-22T06:00:00Z"})
    refused(doc, "seized_items", 0, "custody", 1, "at")
    doc = bundle(lead)
    doc["seized_items"][0]["seized_at"] = FAR
    refused(doc, "seized_items", 0, "seized_at")
    doc = bundle(lead)
    doc["case"].update(opened_at=PAST, closed_at="2025-09-01T00:00:00Z")
    refused(doc, "case", "closed_at")
    doc = bundle(lead)
    doc["case"]["opened_at"] = FAR
    refused(doc, "case", "opened_at")
    doc = bundle(lead)
    doc["detainees"][0]["review_due"] = "2025-01-01"
    refused(doc, "detainees", 0, "review_due")
    doc = bundle(lead)
    doc["detainees"][0]["detained_at"] = FAR
    refused(doc, "detainees", 0, "detained_at")
    assert len(client.get(f"{API}/cases", headers=lead.headers).json()["items"]) == 1


def test_rows_stored_before_the_rules_stay_readable(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller
) -> None:
    """The rules hold for what comes in; a row written before them is still served."""
    ids = world.ids
    far = datetime(9000, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.update(Case.__table__)  # type: ignore[attr-defined]
            .where(Case.id == uuid.UUID(ids["case_id"]))
            .values(title=" Kyiv\u202e ", opened_at=far, closed_at=datetime(2025, 1, 1, tzinfo=UTC))
        )
        conn.execute(
            sa.update(CustodyEvent.__table__)  # type: ignore[attr-defined]
            .where(CustodyEvent.seized_item_id == uuid.UUID(ids["item_id"]))
            .values(at=far, note="a\x1bb")
        )
        conn.execute(
            sa.update(Detainee.__table__)  # type: ignore[attr-defined]
            .where(Detainee.id == uuid.UUID(ids["detainee_id"]))
            .values(detained_at=far, date_of_birth=date(9000, 1, 1), label="D\u200b")
        )
    for url in (
        f"{API}/cases/{ids['case_id']}",
        f"{API}/cases/{ids['case_id']}/bundle",
        f"{API}/seized-items/{ids['item_id']}/custody",
        f"{API}/detainees/{ids['detainee_id']}",
        f"{API}/cases/{ids['case_id']}/detainees",
    ):
        response = client.get(url, headers=lead.h(x_purpose="p"))
        assert response.status_code == 200, (url, response.text)
    assert client.get(f"{API}/cases/{ids['case_id']}", headers=lead.headers).json()["title"] == " Kyiv\u202e "
