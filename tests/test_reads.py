"""Hot reads (app.core.uow) give exactly the rows the ORM's engine gives, recover
from a lost connection, and refuse statements they cannot run."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import ApiClient
from app.cases.models import Case
from app.core.pagination import keyset
from app.core.records import Event
from app.core.uow import Statements, run_with_database
from app.events.service import visible_events
from app.evidence.models import SeizedItem
from tests.conftest import AUDIT_KEY, Caller


def _with_reads(engine: sa.Engine, use: Callable[[Statements], Awaitable[Any]], size: int = 2) -> Any:
    return run_with_database(engine, use, audit_key=AUDIT_KEY, size=size, timeout=2)


@pytest.fixture
def populated(client: TestClient, lead: Caller) -> str:
    case = client.post(
        "/api/v1/cases",
        json={
            "reference": "R-READS",
            "title": "Reads",
            "handling_code": "TLP:AMBER",
            "offence_types": ["fraud"],
            "opened_at": "2025-09-01T08:00:00+03:00",
        },
        headers=lead.headers,
    )
    assert case.status_code == 201, case.text
    case_id = case.json()["id"]
    for n in range(3):
        item = client.post(
            f"/api/v1/cases/{case_id}/seized-items",
            json={"category": "mobile_phone", "description": f"phone {n}", "quantity": n or None},
            headers=lead.headers,
        )
        assert item.status_code == 201, item.text
    return str(case_id)


def test_rows_match_the_engine_value_for_value_and_type_for_type(
    engine: sa.Engine, populated: str, lead: Caller
) -> None:
    case_id = uuid.UUID(populated)
    statements: list[tuple[sa.Select[Any], dict[str, Any]]] = [
        (sa.select(Case).where(Case.id == sa.bindparam("id")), {"id": case_id}),
        (
            keyset(
                sa.select(SeizedItem).where(SeizedItem.case_id == sa.bindparam("case_id")),
                keys=(SeizedItem.created_at, SeizedItem.id),
                after=False,
            ),
            {"case_id": case_id, "limit": 10},
        ),
        (
            visible_events(with_parent=False),
            {"agency_id": lead.agency_id, "parent_id": None},
        ),
        (
            sa.select(ApiClient.id, ApiClient.scopes).where(ApiClient.id == sa.bindparam("id")),
            {"id": lead.client_id},
        ),
    ]
    with engine.connect() as conn:
        expected = [[tuple(row) for row in conn.execute(stmt, params)] for stmt, params in statements]

    async def read_all(reads: Statements) -> list[list[tuple[Any, ...]]]:
        return [[tuple(row) for row in await reads.all(stmt, params)] for stmt, params in statements]

    got = _with_reads(engine, read_all)
    assert all(rows for rows in expected)  # the statements found something to compare
    assert got == expected
    for got_rows, expected_rows in zip(got, expected, strict=True):
        for got_row, expected_row in zip(got_rows, expected_rows, strict=True):
            # asyncpg's UUIDs are a subclass of uuid.UUID, equal to them and serialised alike.
            assert all(isinstance(g, type(e)) for g, e in zip(got_row, expected_row, strict=True))


def test_rows_have_the_selected_column_keys(engine: sa.Engine, populated: str) -> None:
    stmt = sa.select(Case.id, Case.handling_code, sa.literal(1).label("one")).where(
        Case.id == sa.bindparam("id")
    )
    row = _with_reads(engine, lambda reads: reads.first(stmt, {"id": uuid.UUID(populated)}))
    assert (str(row.id), row.handling_code.value, row.one) == (populated, "TLP:AMBER", 1)
    assert _with_reads(engine, lambda reads: reads.first(stmt, {"id": uuid.uuid4()})) is None


def test_a_lost_connection_is_replaced_and_the_read_answers(engine: sa.Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("no network connection to lose; test_resilience moves the SQLite file away")
    backend = sa.select(sa.func.pg_backend_pid().label("pid"))

    async def scenario(reads: Statements) -> tuple[int, int]:
        first = (await reads.first(backend)).pid
        with engine.connect() as conn:  # what a database restart does to the pool
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        second = (await reads.first(backend)).pid
        return first, second

    first, second = _with_reads(engine, scenario, size=1)
    assert first != second


def test_in_lists_are_refused_where_they_would_be_misread(engine: sa.Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs statements through SQLAlchemy's own execution")
    stmt = sa.select(Event.seq).where(Event.resource_type.in_(["case", "agency"]))
    with pytest.raises(TypeError, match="IN lists"):
        _with_reads(engine, lambda reads: reads.all(stmt))
