"""Probing ids: a hostile agency with a valid key tries the ids of rows it may not see.

A hidden row must cost exactly what a missing one costs (the same SQL
statements, so the same time), and a run of 404s on id routes is reported to
the security log.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.reads import PostgresReads
from tests.conftest import Caller, make_caller
from tests.trust.test_route_walker import FILLABLE, case_routes, fill, send
from tests.trust.world import World, build_world, minimal_body


@contextmanager
def statements(application: FastAPI) -> Iterator[list[str]]:
    """Every SQL statement the app sends while the block runs: through the
    engine, and (PostgreSQL) through the hot reads' own driver connections."""
    seen: list[str] = []
    engine: sa.Engine = application.state.engine

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    reads = application.state.reads
    hot = isinstance(reads, PostgresReads)
    if hot:
        fetch = reads._fetch

        async def counted(sql: str, values: dict[str, Any]) -> Any:
            seen.append(sql)
            return await fetch(sql, values)

        reads._fetch = counted  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
        if hot:
            del reads._fetch


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
        body = minimal_body(op, doc)
        random_ids = {name: str(uuid.uuid4()) for name in FILLABLE}
        send(client, method, fill(path, random_ids), body, headers)  # warm the statement caches
        with statements(application) as hidden_sql:
            hidden = send(client, method, fill(path, world.ids), body, headers)
        with statements(application) as missing_sql:
            missing = send(client, method, fill(path, random_ids), body, headers)
        where = f"{method} {path}"
        if hidden.status_code == 403:  # a scope refused before any lookup: the same for both
            assert missing.status_code == 403, where
        else:
            assert hidden.status_code == missing.status_code == 404, (where, hidden.text)
        assert hidden.json() == missing.json(), where
        assert hidden_sql, where
        assert hidden_sql == missing_sql, where
