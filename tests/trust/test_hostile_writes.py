"""Writes an attacker shapes: If-Match lists of guesses, PATCHes that change
nothing, JSON bodies that give a key twice."""

import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.core.http import MAX_IF_MATCH_TAGS
from tests.conftest import Caller, problem_of
from tests.trust.world import World, build_world

API = "/api/v1"
GUESSES = ", ".join(f'"{n}"' for n in range(1, 5000))


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner)


def patches(world: World, partner: Caller) -> list[tuple[str, dict[str, Any]]]:
    """A real change for every PATCH route of the world's rows (by the lead)."""
    ids = world.ids
    return [
        (f"{API}/cases/{ids['case_id']}", {"title": "Changed"}),
        (f"{API}/cases/{ids['case_id']}/participants/{partner.agency_id}", {"role": "observer"}),
        (f"{API}/locations/{ids['location_id']}", {"city": "Kyiv"}),
        (f"{API}/seized-items/{ids['item_id']}", {"quantity": 2}),
        (f"{API}/detainees/{ids['detainee_id']}", {"label": "D-2"}),
    ]


def journal(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one(),
            conn.execute(sa.text("SELECT count(*) FROM event")).scalar_one(),
        )


# --- If-Match -------------------------------------------------------------------------------------------


def test_if_match_listing_every_version_is_no_blind_overwrite(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller, partner: Caller
) -> None:
    before = journal(engine)
    for url, body in patches(world, partner):
        for header in (
            GUESSES,
            ", ".join(f'"{n}"' for n in range(1, MAX_IF_MATCH_TAGS + 2)),
            'W/"1"',
            "1",
            '"1" "2"',
            '"1",',
            ', "1"',
            '"1", W/"2"',
            "",
        ):
            response = client.patch(url, json=body, headers=lead.h(if_match=header))
            assert response.status_code == 400, (url, header[:40], response.text)
            assert response.json()["type"].endswith(":invalid-if-match")
        response = client.delete(url, headers=lead.h(if_match=GUESSES))
        assert response.status_code == 400, (url, response.text)
    assert journal(engine) == before
    for url, body in patches(world, partner):
        assert client.get(url, headers=lead.headers).headers["ETag"] == '"1"'
        # A few tags are a list a client may send; the right one among them matches.
        tags = ", ".join(f'"{n}"' for n in range(MAX_IF_MATCH_TAGS, 0, -1))
        response = client.patch(url, json=body, headers=lead.h(if_match=tags))
        assert response.status_code == 200, (url, response.text)
        assert response.headers["ETag"] == '"2"'


def test_a_hidden_record_answers_404_whatever_if_match_says(
    client: TestClient, world: World, outsider: Caller
) -> None:
    missing = client.patch(
        f"{API}/cases/{uuid.uuid4()}", json={"title": "x"}, headers=outsider.h(if_match=GUESSES)
    )
    hidden = client.patch(
        f"{API}/cases/{world.case_id}", json={"title": "x"}, headers=outsider.h(if_match=GUESSES)
    )
    assert missing.status_code == hidden.status_code == 404
    assert problem_of(missing) == problem_of(hidden)


# --- PATCH that changes nothing -------------------------------------------------------------------------


def test_a_patch_that_changes_nothing_changes_nothing(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller, partner: Caller, admin: Caller
) -> None:
    agency = f"{API}/agencies/{admin.agency_id}"  # an admin key changes its own agency only
    targets = [(url, lead, body) for url, body in patches(world, partner)] + [
        (agency, admin, {"name": "Renamed"})
    ]
    for url, caller, body in targets:
        current = client.get(url, headers=caller.headers).json()
        same = {name: current[name] for name in body}
        padded = {
            name: f"  {value} " if name in ("title", "label", "name") else value
            for name, value in same.items()
        }
        before = journal(engine)
        for noop in ({}, same, padded):
            assert client.patch(url, json=noop, headers=caller.headers).status_code == 428
            assert client.patch(url, json=noop, headers=caller.h(if_match='"7"')).status_code == 412
            response = client.patch(url, json=noop, headers=caller.h(if_match='"1"'))
            assert response.status_code == 200, (url, noop, response.text)
            assert response.headers["ETag"] == '"1"'
            assert response.json() == current
        assert journal(engine) == before, url
        # A real change still is one.
        response = client.patch(url, json=body, headers=caller.h(if_match='"1"'))
        assert response.status_code == 200 and response.headers["ETag"] == '"2"', (url, response.text)
        assert journal(engine)[0] == before[0] + 1, url


def test_a_custody_event_that_leaves_the_item_as_it_was_does_not_bump_it(
    client: TestClient, world: World, lead: Caller
) -> None:
    item = f"{API}/seized-items/{world.ids['item_id']}"
    for version in ('"2"', '"2"'):
        assert (
            client.post(f"{item}/custody", json={"action": "examined"}, headers=lead.headers).status_code
            == 201
        )
        assert client.get(item, headers=lead.headers).headers["ETag"] == version


# --- duplicate JSON keys --------------------------------------------------------------------------------


def send(client: TestClient, method: str, url: str, raw: str, headers: dict[str, str]) -> Any:
    return client.request(
        method, url, content=raw.encode(), headers={**headers, "Content-Type": "application/json"}
    )


def test_a_key_given_twice_is_refused_at_any_depth(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller
) -> None:
    cid = world.case_id
    before = journal(engine)
    for method, url, raw, key in (
        (
            "POST",
            f"{API}/cases",
            '{"reference": "R-1", "title": "T", "handling_code": "TLP:RED", "handling_code": "TLP:CLEAR"}',
            "handling_code",
        ),
        ("POST", f"{API}/cases", '{"reference": "R-1", "title": "T", "title": "T"}', "title"),
        (
            "PATCH",
            f"{API}/cases/{cid}",
            '{"handling_code": "TLP:RED", "handling_code": "TLP:CLEAR"}',
            "handling_code",
        ),
        (
            "POST",
            f"{API}/cases/{cid}/locations",
            '{"label": "L", "country": "UA", "country": "KZ"}',
            "country",
        ),
        (
            "POST",
            f"{API}/bundles",
            '{"bundle_version": 1, "case": {"reference": "B-1", "title": "T"}, "locations": '
            f'[{{"id": "{uuid.uuid4()}", "label": "L", "label": "M"}}]}}',
            "label",
        ),
        (
            "POST",
            f"{API}/bundles",
            '{"bundle_version": 1, "bundle_version": 1, "case": {}}',
            "bundle_version",
        ),
    ):
        response = send(client, method, url, raw, lead.h(if_match='"1"'))
        assert response.status_code == 400, (url, raw, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert repr(key) in response.json()["detail"], response.text
    assert journal(engine) == before
    assert len(client.get(f"{API}/cases", headers=lead.headers).json()["items"]) == 1
    # The same keys in two objects are no duplicate.
    raw = '{"reference": "R-2", "title": "T", "offence_types": ["fraud"]}'
    assert send(client, "POST", f"{API}/cases", raw, lead.headers).status_code == 201


def test_every_route_that_takes_a_body_refuses_duplicate_keys(client: TestClient, lead: Caller) -> None:
    """The body is parsed before anything else is looked at: any id will do."""
    operations = [
        (method, re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path))
        for path, item in client.get("/openapi.json").json()["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(operations) >= 15
    for method, url in operations:
        response = send(client, method.upper(), url, '{"z": {"x": 1, "x": 2}}', lead.h(if_match='"1"'))
        assert response.status_code == 400, (method, url, response.text)
        assert "'x'" in response.json()["detail"]
