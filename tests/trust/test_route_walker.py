"""Every route of the app, walked with the key of an agency that takes no part
in a TLP:AMBER case: nothing of the case may show, not even that it exists.

The walker reads the routes from the OpenAPI document when it runs, so
routes added later are walked too. A route whose path parameters it cannot
fill fails the test until it is named in SKIPPED (with the reason).
"""

import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, make_caller, problem_of
from tests.trust.world import World, build_world, minimal_body, minimal_query

API = "/api/v1"

# Path parameters the walker fills with the id of a real row under the hidden case.
FILLABLE = {
    "case_id",
    "agency_id",
    "location_id",
    "item_id",
    "event_id",
    "detainee_id",
    "request_id",
    "message_id",
    "identifier_id",
    "attachment_id",
}

# Routes about no case: the agency directory is open to every reader (contract §4);
# an agency's own webhook subscriptions (tests/webhooks: another agency gets 404).
NOT_CASE_RELATED = {
    f"{API}/agencies/{{agency_id}}",
    f"{API}/subscriptions/{{subscription_id}}",
    f"{API}/subscriptions/{{subscription_id}}/deliveries",
}

# Routes only an `admin` key may call.
ADMIN_ONLY = {
    ("POST", f"{API}/agencies"),
    ("PATCH", f"{API}/agencies/{{agency_id}}"),
    ("GET", f"{API}/audit/verify"),
}

# Routes the walker cannot fill; each needs a reason. Empty today: every
# path parameter of the app names a row the world below creates.
SKIPPED: dict[tuple[str, str], str] = {}

# Lists an admin key reads in full by contract: "GET /audit (admin: everything)".
ADMIN_READS_ALL = {f"{API}/audit"}

# Lists only an admin key reads at all (contract §7: webhooks; §9: the peers); others get 403.
ADMIN_LISTS = {f"{API}/subscriptions", f"{API}/federation/peers"}

PARAM = re.compile(r"{(\w+)}")


def operations(application: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    doc = application.openapi()
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        if path.startswith(API)
        for method, op in item.items()
        if method.upper() in ("GET", "POST", "PATCH", "PUT", "DELETE")
    ]


def fill(path: str, ids: dict[str, str]) -> str:
    return PARAM.sub(lambda m: ids[m.group(1)], path)


def send(client: TestClient, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    return client.request(method, url, **kwargs)


def audit_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner, handling_code="TLP:AMBER")


@pytest.fixture
def outsider_plain(engine: sa.Engine, outsider: Caller) -> Caller:
    """Another key of the outsider's agency: every scope but admin."""
    return make_caller(engine, outsider.agency_code, Scope.read, Scope.write, Scope.personal_data)


def case_routes(application: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    routes = []
    for method, path, op in operations(application):
        params = set(PARAM.findall(path))
        if not params or path in NOT_CASE_RELATED:
            continue
        if (method, path) in SKIPPED:
            continue
        assert params <= FILLABLE, (
            f"the walker cannot fill {params - FILLABLE} of {method} {path}: "
            "teach tests/trust/world.py to create one, or add the route to SKIPPED with a reason"
        )
        routes.append((method, path, op))
    return routes


def test_walker_covers_every_route(application: FastAPI) -> None:
    """Every operation is walked, listed as not case related, or skipped with a reason."""
    ops = operations(application)
    walked = {(m, p) for m, p, _ in case_routes(application)}
    lists = {(m, p) for m, p, _ in ops if not PARAM.search(p)}
    others = {(m, p) for m, p, _ in ops if p in NOT_CASE_RELATED}
    assert walked | lists | others | set(SKIPPED) == {(m, p) for m, p, _ in ops}
    # The routes this project is known to have: the walker must not silently lose them.
    for path in (
        "/cases/{case_id}/detainees",
        "/seized-items/{item_id}/custody/{event_id}",
        "/requests/{request_id}",
        "/identifiers/{identifier_id}",
        "/cases/{case_id}/stix",
    ):
        assert ("GET", API + path) in walked
    assert not set(SKIPPED) - {(m, p) for m, p, _ in ops}, "SKIPPED names a route that no longer exists"


def test_outsider_gets_404_on_every_route_of_a_hidden_case(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    world: World,
    lead: Caller,
    outsider: Caller,
    outsider_plain: Caller,
) -> None:
    doc = application.openapi()
    routes = case_routes(application)
    assert len(routes) >= 30
    before = audit_count(engine)
    for key in (outsider, outsider_plain):
        for method, path, op in routes:
            body = minimal_body(op, doc)
            query = minimal_query(op, doc)
            random_ids = {name: str(uuid.uuid4()) for name in FILLABLE}
            for extra in ({}, {"If-Match": '"1"'}, {"If-Match": '"99"'}):
                headers = {**key.headers, **extra}
                hidden = send(client, method, fill(path, world.ids) + query, body, headers)
                missing = send(client, method, fill(path, random_ids) + query, body, headers)
                where = f"{method} {path} {extra} ({'admin' if key is outsider else 'no admin'})"
                assert hidden.status_code == 404, (where, hidden.text)
                assert hidden.headers["content-type"] == "application/problem+json", where
                assert "etag" not in hidden.headers, where
                # Hidden and non-existent answer the very same body.
                assert problem_of(hidden) == problem_of(missing), where
    assert audit_count(engine) == before, "a refused request wrote to the audit trail"

    # The ids really name rows the lead can reach: the 404s above are not vacuous.
    for method, path, _ in routes:
        if method == "GET":
            response = client.get(fill(path, world.ids), headers=lead.headers)
            assert response.status_code == 200, (path, response.text)


def test_lists_never_mention_a_hidden_case(
    client: TestClient, application: FastAPI, world: World, outsider: Caller, outsider_plain: Caller
) -> None:
    secrets = set(world.ids.values()) - {world.ids["agency_id"]}
    lists = [
        path for method, path, _ in operations(application) if method == "GET" and not PARAM.search(path)
    ]
    assert {f"{API}/cases", f"{API}/events", f"{API}/audit", f"{API}/requests"} <= set(lists)
    for key in (outsider, outsider_plain):
        for path in lists:
            if key is outsider and path in ADMIN_READS_ALL:
                continue
            response = client.get(path, headers=key.headers)
            admin_only = key is outsider_plain and (("GET", path) in ADMIN_ONLY or path in ADMIN_LISTS)
            assert response.status_code == (403 if admin_only else 200), (path, response.text)
            leaked = [s for s in secrets if s in response.text]
            assert not leaked, (path, leaked)
    # Filters do not open a back door either.
    for params in ({"case_id": world.case_id}, {"action": "case.created"}):
        page = client.get(f"{API}/audit", params=params, headers=outsider_plain.headers).json()
        assert page["items"] == []
    for box in ("inbox", "outbox"):
        page = client.get(f"{API}/requests", params={"box": box}, headers=outsider.headers).json()
        assert page["items"] == []
    found = client.get(f"{API}/cases", params={"q": world.case["reference"]}, headers=outsider.headers)
    assert found.json()["items"] == []


def test_a_request_cannot_name_a_hidden_case(
    client: TestClient, world: World, lead: Caller, outsider_plain: Caller
) -> None:
    """Naming a hidden case in a new request answers exactly as naming none that exists."""
    answers = []
    for case_id in (world.case_id, str(uuid.uuid4())):
        body = {"to_agency_id": str(lead.agency_id), "case_id": case_id, "subject": "S", "body": "B"}
        response = client.post(f"{API}/requests", json=body, headers=outsider_plain.headers)
        answers.append((response.status_code, problem_of(response)))
    assert answers[0] == answers[1]
    assert answers[0][0] in (404, 422)


def test_admin_only_routes_refuse_other_keys(
    client: TestClient, application: FastAPI, lead: Caller, outsider: Caller, outsider_plain: Caller
) -> None:
    doc = application.openapi()
    ops = {(m, p): op for m, p, op in operations(application)}
    assert set(ops) >= ADMIN_ONLY
    # An admin key changes its own agency's record (tests/trust/test_hierarchy.py: not another's).
    ids = {"agency_id": str(outsider.agency_id)}
    for method, path in sorted(ADMIN_ONLY):
        body = minimal_body(ops[(method, path)], doc)
        for extra in ({}, {"If-Match": '"1"'}):
            refused = send(client, method, fill(path, ids), body, {**outsider_plain.headers, **extra})
            assert refused.status_code == 403, (method, path, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
        allowed = send(client, method, fill(path, ids), body, {**outsider.headers, "If-Match": '"1"'})
        assert allowed.status_code not in (401, 403, 404), (method, path, allowed.text)
