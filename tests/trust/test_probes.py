"""Probing ids: a hostile agency with a valid key tries the ids of rows it may not see.

A hidden row must cost exactly what a missing one costs (the same SQL
statements, so the same time), and a run of 404s on id routes is reported to
the security log.
"""

import logging
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core.config import Settings
from app.core.probes import ProbeCounter
from app.main import create_app
from tests.conftest import Caller, make_caller, problem_of, recorded_statements
from tests.trust.test_route_walker import FILLABLE, case_routes, fill, send
from tests.trust.world import World, build_world, minimal_body, minimal_query

API = "/api/v1"


def statements(application: FastAPI) -> AbstractContextManager[list[str]]:
    """Every SQL statement the app sends while the block runs."""
    return recorded_statements(application)


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner, handling_code="TLP:AMBER")


@pytest.mark.parametrize("scopes", [(Scope.read,), (Scope.read, Scope.write, Scope.personal_data)])
def test_hidden_and_missing_ids_cost_the_same_statements(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    world: World,
    scopes: tuple[Scope, ...],
) -> None:
    """For every route with an id, a hidden id and a random one send the very same SQL."""
    prober = make_caller(engine, "XX-PROBE", *scopes)
    doc = application.openapi()
    routes = case_routes(application)
    assert len(routes) >= 30
    headers = prober.h(if_match='"1"')
    for method, path, op in routes:
        body, query = minimal_body(op, doc), minimal_query(op, doc)
        random_ids = {name: str(uuid.uuid4()) for name in FILLABLE}
        send(client, method, fill(path, random_ids) + query, body, headers)  # warm the statement caches
        with statements(application) as hidden_sql:
            hidden = send(client, method, fill(path, world.ids) + query, body, headers)
        with statements(application) as missing_sql:
            missing = send(client, method, fill(path, random_ids) + query, body, headers)
        where = f"{method} {path}"
        if hidden.status_code == 403:  # a scope refused before any lookup: the same for both
            assert missing.status_code == 403, where
        else:
            assert hidden.status_code == missing.status_code == 404, (where, hidden.text)
        assert problem_of(hidden) == problem_of(missing), where
        assert hidden_sql, where
        assert hidden_sql == missing_sql, where


_PROBE_FIELDS = ("count", "window_seconds", "method", "route", "client_id", "agency_id", "remote")


def _probe_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The id_probe events, as the structured log writes their fields."""
    return [
        {"event": r.getMessage(), **{field: getattr(r, field) for field in _PROBE_FIELDS}}
        for r in caplog.records
        if r.name == "caseapi.security" and r.getMessage() == "id_probe"
    ]


@pytest.fixture
def probing_app(settings: Settings, engine: sa.Engine) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"probe_log_threshold": 3, "probe_log_window_seconds": 600}))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_run_of_404s_on_ids_is_a_security_event(
    probing_app: TestClient,
    engine: sa.Engine,
    lead: Caller,
    partner: Caller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = build_world(probing_app, lead, partner, handling_code="TLP:RED")
    prober = make_caller(engine, "XX-PROBE", Scope.read)
    caplog.set_level(logging.WARNING, logger="caseapi.security")
    urls = [
        f"{API}/detainees/{world.ids['detainee_id']}",
        f"{API}/cases/{world.case_id}/bundle",
        f"{API}/locations/{uuid.uuid4()}",
    ]
    for url in urls[:2]:
        assert probing_app.get(url, headers=prober.headers).status_code == 404
    assert _probe_lines(caplog) == [], "below the threshold: no event"
    # Lists and routes without an id are not probes: their 404s (none here) and 200s do not count.
    assert probing_app.get(f"{API}/cases", headers=prober.headers).status_code == 200
    assert probing_app.get(urls[2], headers=prober.headers).status_code == 404
    [line] = _probe_lines(caplog)
    assert line == {
        "event": "id_probe",
        "count": 3,
        "window_seconds": 600,
        "method": "GET",
        "route": "/api/v1/locations/{location_id}",
        "client_id": str(prober.client_id),
        "agency_id": str(prober.agency_id),
        "remote": "testclient",
    }
    # The ids tried never reach the security log: only the route's template does (the
    # request log's line per request names the path as sent, as contract §6b asks).
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records if r.name == "caseapi.security")
    assert world.ids["detainee_id"] not in logged and world.case_id not in logged
    # Another client's 404s are counted apart; the prober is reported again at 6.
    for _ in range(2):
        probing_app.get(urls[0], headers=lead.headers)
    for url in urls:
        probing_app.get(url, headers=prober.headers)
    assert [line["count"] for line in _probe_lines(caplog)] == [3, 6]


def test_the_counter_forgets_an_old_window() -> None:
    now = [0.0]
    counter = ProbeCounter(3, 60, clock=lambda: now[0])
    assert [counter.note("a") for _ in range(2)] == [None, None]
    now[0] = 61.0
    assert [counter.note("a") for _ in range(3)] == [None, None, 3]
    assert counter.note("b") is None


def test_the_counter_stays_bounded() -> None:
    now = [0.0]
    counter = ProbeCounter(2, 60, max_clients=10, clock=lambda: now[0])
    for n in range(10):
        counter.note(f"client-{n}")
    now[0] = 100.0
    counter.note("newcomer")
    assert len(counter._windows) == 1
    for n in range(30):
        counter.note(f"flood-{n}")
    assert len(counter._windows) <= 10
