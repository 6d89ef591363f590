"""Hostile input: schemathesis over the whole OpenAPI document, in-process,
plus the hand-written cases it found or that the contract names."""

import uuid
from collections import Counter
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.auth.models import Scope
from tests.conftest import Caller, make_caller
from tests.trust.world import World, build_world

API = "/api/v1"
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)
# Per operation and mode; ~50 operations x 2 modes keeps a backend well under two minutes.
MAX_EXAMPLES = 25


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    client: TestClient, application: FastAPI, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    world = build_world(client, lead, partner)
    caller = make_caller(engine, lead.agency_code, *Scope)
    doc = application.openapi()
    schema = schemathesis.openapi.from_dict(doc)
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40

    def exercise(operation: Any) -> None:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy, real_ids=st.booleans())
        def run(case: Any, real_ids: bool) -> None:
            headers = dict(caller.headers)
            if real_ids and case.path_parameters:
                # Half the time the path names real rows, so that input
                # reaches the services instead of stopping at a 404.
                for name in list(case.path_parameters):
                    if name in world.ids:
                        case.path_parameters[name] = world.ids[name]
                headers["If-Match"] = '"1"'
            response = case.call(headers=headers, app=application)
            for check in CHECKS:
                try:
                    case.validate_response(response, checks=[check], headers=headers)
                except BaseException as exc:  # schemathesis raises an exception group
                    key = f"{operation.label} {check.__name__} {response.status_code}"
                    failures[key] += 1
                    examples.setdefault(key, str(exc)[:2000])

        run()

    for operation in operations:
        exercise(operation)

    assert not failures, "\n\n".join(f"{k} (x{n})\n{examples[k]}" for k, n in failures.items())


# --- what the contract names, by hand ---------------------------------------


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner)


def test_nul_characters_are_refused(client: TestClient, world: World, lead: Caller) -> None:
    cid = world.case_id
    for url, params in (
        (f"{API}/cases", {"q": "a\x00b"}),
        (f"{API}/cases", {"participant": "\x00"}),
        (f"{API}/audit", {"action": "case\x00"}),
        (f"{API}/requests", {"box": "inbox\x00"}),
    ):
        response = client.get(url, params=params, headers=lead.headers)
        assert response.status_code == 422, (url, params, response.text)
        assert response.json()["errors"][0]["loc"][0] == "query"
    for url, body in (
        (f"{API}/cases", {"reference": "R\x00", "title": "T"}),
        (f"{API}/cases", {"reference": "R", "title": "T", "offence_types": ["fraud\x00"]}),
        (f"{API}/cases/{cid}/locations", {"label": "L", "city": "Ky\x00iv"}),
        (f"{API}/cases/{cid}/detainees", {"label": "D", "full_name": "\x00"}),
    ):
        response = client.post(url, json=body, headers=lead.h(x_purpose="p"))
        assert response.status_code == 422, (url, response.text)


def test_numbers_and_instants_out_of_range(client: TestClient, world: World, lead: Caller) -> None:
    cid = world.case_id
    items = f"{API}/cases/{cid}/seized-items"
    for quantity in (0, -1, 10**9 + 1, 2**63, 10**100, 1.5, "many"):
        response = client.post(
            items, json={"category": "cash", "description": "d", "quantity": quantity}, headers=lead.headers
        )
        assert response.status_code == 422, (quantity, response.text)
    for limit in (0, 201, 10**30, -(10**30)):
        assert client.get(f"{API}/cases", params={"limit": limit}, headers=lead.headers).status_code == 422
    for instant in (
        "0001-01-01T00:00:00+05:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
        "9999-12-31T00:00:00Z",  # a review due one year later would not exist
        "2025-09-23T08:00:00",  # no offset
    ):
        for url, body in (
            (f"{API}/cases/{cid}/locations", {"label": "L", "searched_at": instant}),
            (f"{API}/cases/{cid}/detainees", {"label": "D", "detained_at": instant}),
            (f"{API}/cases", {"reference": f"R-{uuid.uuid4().hex[:6]}", "title": "T", "opened_at": instant}),
        ):
            response = client.post(url, json=body, headers=lead.headers)
            assert response.status_code == 422, (url, instant, response.text)
    latest = client.post(
        f"{API}/cases/{cid}/detainees",
        json={"label": "D", "detained_at": "2025-09-23T06:00:00Z", "review_due": "9999-12-31"},
        headers=lead.headers,
    )
    assert latest.status_code == 201
    assert latest.json()["review_due"] == "9999-12-31"


def test_malformed_ids_bodies_and_headers(client: TestClient, world: World, lead: Caller) -> None:
    for url in (f"{API}/cases/not-a-uuid", f"{API}/detainees/1", f"{API}/seized-items/{'f' * 33}/custody"):
        response = client.get(url, headers=lead.headers)
        assert response.status_code in (404, 422), url
        assert response.headers["content-type"] == "application/problem+json"
    json_headers = {**lead.headers, "Content-Type": "application/json"}
    for raw, status in (
        (b'{"reference": "R", "title": ', 400),
        (b"[]", 422),
        (b'"text"', 422),
        (b'{"reference": "R", "title": "\\ud800"}', 422),
        (b"\xff\xfe", 400),
    ):
        response = client.post(f"{API}/cases", content=raw, headers=json_headers)
        assert response.status_code == status, (raw, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    too_long = client.post(
        f"{API}/cases", json={"reference": "R", "title": "T"}, headers=lead.h(idempotency_key="k" * 201)
    )
    assert too_long.status_code == 422
    garbled = client.get(f"{API}/cases", params={"cursor": "eyJ4IjoxfQ.abc"}, headers=lead.headers)
    assert garbled.status_code in (400, 422)
