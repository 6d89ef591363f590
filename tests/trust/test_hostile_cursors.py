"""Forged cursors: every list answers 400 invalid-cursor, never a 500.

The attacker holds the signing key (tests compute it as the server does,
through app.core.secrets.cursor_key): a leaked key must not let a cursor carry
into a query what no page of that list could have produced.
"""

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.secrets import cursor_key
from tests.conftest import Caller
from tests.trust.world import World, build_world

API = "/api/v1"
INSTANT = "2025-09-23T06:00:00+00:00"
A_UUID = str(uuid.UUID(int=1))


Forge = Callable[..., str]


@pytest.fixture
def forge(settings: Settings) -> Forge:
    """A cursor of `values` in the list `scope`, signed with the key of the
    app under test (its settings'), or with `key`."""

    def sign(scope: str, values: list[Any], key: bytes | None = None) -> str:
        payload = json.dumps([scope, values], separators=(",", ":")).encode()
        sig = hmac.new(key or cursor_key(settings), payload, hashlib.sha256).hexdigest()[:24]
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + sig

    return sign


# Values no page of a list keyed by (instant, uuid) produces.
BAD_INSTANT_UUID: list[list[Any]] = [
    ["9999-12-31T23:59:59-23:59", A_UUID],  # past datetime's range once in UTC
    ["0001-01-01T00:00:00+23:59", A_UUID],  # before it
    ["9999-12-31T23:59:59+00:00", A_UUID],
    ["2025-09-23T06:00:00", A_UUID],  # naive
    [10**30, A_UUID],
    [None, A_UUID],
    [[INSTANT], A_UUID],
    ["x" * 60, A_UUID],
    [INSTANT, 5],  # an int where a uuid goes
    [INSTANT, "not-a-uuid"],
    [INSTANT, "0" * 32 + "\u0661"],
    [INSTANT, None],
    [INSTANT],
    [INSTANT, A_UUID, 1],
    [],
]
# ... and by one sequence number.
BAD_SEQ: list[list[Any]] = [
    [2**63],
    [10**30],
    [-(2**63) - 1],
    [-1],
    [1.5],
    [1e308],
    [True],
    [None],
    ["1"],
    [A_UUID],  # a uuid where an int goes
    [INSTANT],
    [1, 2],
    [],
]
# ... and by one uuid.
BAD_UUID: list[list[Any]] = [[5], ["x"], [INSTANT], [None], [[A_UUID]], [A_UUID, A_UUID], []]

GARBLED = ["abc", "a.b", "....", "%%%", "eyJ4IjoxfQ.abc", "\u00e9.\u00e9", "W10.", "." * 10]


def lists(world: World) -> list[tuple[str, str, list[list[Any]], list[Any]]]:
    """(url, scope, bad values, good values) for each list of the API."""
    ids = world.ids
    cid, item, req = ids["case_id"], ids["item_id"], ids["request_id"]
    return [
        (f"{API}/agencies", "agencies", BAD_INSTANT_UUID, [INSTANT, A_UUID]),
        (f"{API}/cases", "cases", BAD_INSTANT_UUID, [INSTANT, A_UUID]),
        (f"{API}/cases/{cid}/participants", f"participants:{cid}", BAD_UUID, [A_UUID]),
        (f"{API}/cases/{cid}/locations", f"locations:{cid}", BAD_INSTANT_UUID, [INSTANT, A_UUID]),
        (f"{API}/cases/{cid}/seized-items", f"seized-items:{cid}", BAD_INSTANT_UUID, [INSTANT, A_UUID]),
        (f"{API}/seized-items/{item}/custody", f"custody:{item}", BAD_SEQ, [0]),
        (f"{API}/cases/{cid}/detainees", f"detainees:{cid}", BAD_INSTANT_UUID, [INSTANT, A_UUID]),
        (f"{API}/requests", "requests:all:", BAD_INSTANT_UUID, [INSTANT, A_UUID]),
        (f"{API}/requests/{req}/messages", f"request-messages:{req}", BAD_INSTANT_UUID, [INSTANT, A_UUID]),
        (f"{API}/events", "events", BAD_SEQ, [0]),
        (f"{API}/audit", "audit", BAD_SEQ, [0]),
    ]


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner)


def assert_invalid_cursor(client: TestClient, caller: Caller, url: str, cursor: str) -> None:
    response = client.get(url, params={"cursor": cursor}, headers=caller.headers)
    assert response.status_code == 400, (url, cursor, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith(":invalid-cursor"), response.text


def test_a_well_formed_forged_cursor_is_accepted(
    client: TestClient, world: World, lead: Caller, forge: Forge
) -> None:
    """The forging below is the server's own: a cursor with sane values pages on."""
    for url, scope, _, good in lists(world):
        response = client.get(url, params={"cursor": forge(scope, good)}, headers=lead.headers)
        assert response.status_code == 200, (url, response.text)


def test_validly_signed_values_of_the_wrong_type_size_or_range(
    client: TestClient, world: World, lead: Caller, forge: Forge
) -> None:
    for url, scope, bad_values, _ in lists(world):
        for values in bad_values:
            assert_invalid_cursor(client, lead, url, forge(scope, values))


def test_a_cursor_of_another_list(
    client: TestClient, world: World, lead: Caller, partner: Caller, forge: Forge
) -> None:
    every = lists(world)
    for url, scope, _, good in every:
        for _, other_scope, _, other_good in every:
            if other_scope != scope and len(other_good) == len(good):
                assert_invalid_cursor(client, lead, url, forge(other_scope, good))
    # A real next_cursor of one case's locations, given to another case's list.
    other = build_world(client, lead, partner)
    for n in range(2):
        client.post(f"{API}/cases/{world.case_id}/locations", json={"label": f"L{n}"}, headers=lead.headers)
    page = client.get(f"{API}/cases/{world.case_id}/locations?limit=1", headers=lead.headers).json()
    assert page["next_cursor"]
    assert_invalid_cursor(client, lead, f"{API}/cases/{other.case_id}/locations", page["next_cursor"])


def test_garbled_cursors_and_the_old_default_secret(
    client: TestClient, world: World, lead: Caller, forge: Forge
) -> None:
    for url, scope, _, good in lists(world):
        for cursor in [*GARBLED, forge(scope, good, key=b"caseapi-cursor-v1")]:
            assert_invalid_cursor(client, lead, url, cursor)
