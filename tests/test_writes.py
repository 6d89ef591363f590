"""A unit of work (app.core.uow), through the POST agency tools make most: the rows
SQLAlchemy would write, one transaction
whatever fails in it, and a pool that recovers from lost connections."""

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import app.core.journal
import app.evidence.service
import app.idempotency.service
from app.agencies.models import Agency, AgencyKind
from app.core.db import insert_into, new_row
from app.core.records import Event
from app.core.uow import PostgresDatabase, Tx, run_with_database
from app.evidence.models import Category, CustodyAction, CustodyEvent, SeizedItem
from tests.conftest import AUDIT_KEY, Caller, join, new_case, problem_of

API = "/api/v1"
ITEM = {"category": "mobile_phone", "description": "Phone"}
WRITTEN = ("seized_item", "custody_event", "audit_entry", "event", "idempotency_record")


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in WRITTEN}


def test_new_row_is_the_row_of_the_model_object() -> None:
    values: dict[str, Any] = {
        "category": Category.sim_card,
        "description": "SIM",
        "quantity": None,
        "location_id": uuid.uuid4(),
        "seized_at": datetime(2025, 9, 23, 6, 30, tzinfo=UTC),
        "sha256": "a" * 64,
        "case_id": uuid.uuid4(),
        "seized_by_agency_id": uuid.uuid4(),
        "custodian_agency_id": None,
    }
    made = new_row(SeizedItem, **values)
    item = SeizedItem.model_validate(values)
    built = {c.key: getattr(item, c.key) for c in SeizedItem.__table__.columns}  # type: ignore[attr-defined]
    generated = {"id", "created_at", "updated_at"}
    assert {k: v for k, v in made.items() if k not in generated} == {
        k: v for k, v in built.items() if k not in generated
    }
    assert made.keys() == built.keys()
    assert all(type(made[k]) is type(built[k]) for k in generated)
    assert made["id"] != built["id"]
    with pytest.raises(TypeError, match="needs a value"):
        new_row(CustodyEvent, seq=1, action=CustodyAction.seized)  # no item, no instant
    with pytest.raises(TypeError, match="no column"):
        new_row(SeizedItem, **values, colour="red")


def test_insert_writes_what_single_inserts_write(engine: sa.Engine) -> None:
    """Tx.insert (on PostgreSQL one statement for several tables) stores the
    values that SQLAlchemy's own INSERT stores, value for value."""
    kyiv = timezone(timedelta(hours=3))

    moment = datetime(2025, 9, 23, 9, 30, tzinfo=kyiv)
    resource = uuid.uuid4()

    def agency(code: str) -> dict[str, Any]:
        return new_row(
            Agency,
            code=code,
            name="Кіберполіція 'O\"Neil'\n",
            kind=AgencyKind.police,
            country=None,
            parent_id=None,
            created_at=moment,
            updated_at=moment,
        )

    def event(seq: int) -> dict[str, Any]:
        return new_row(
            Event,
            seq=seq,
            type="case.created",
            resource_type="case",
            resource_id=resource,
            case_id=None,
            at=datetime(2025, 9, 23, 9, 30, 0, 123456, tzinfo=kyiv),
        )

    hot = [(Agency.__table__, [agency("HOT-1"), agency("HOT-2")]), (Event.__table__, [event(1), event(2)])]
    plain = [(Agency.__table__, [agency("ORM-1"), agency("ORM-2")]), (Event.__table__, [event(3), event(4)])]

    async def work(tx: Tx) -> None:
        await tx.insert(hot)  # type: ignore[arg-type]

    _run(engine, work)
    with engine.begin() as conn:
        for table, rows in plain:
            conn.execute(insert_into(table), rows)  # type: ignore[arg-type]

    with engine.connect() as conn:
        for (table, hot_rows), (_, plain_rows) in zip(hot, plain, strict=True):
            stored = {
                row.id if "id" in row._fields else row.seq: row for row in conn.execute(sa.select(table))
            }
            for ours, theirs in zip(hot_rows, plain_rows, strict=True):
                a = stored[ours.get("id", ours.get("seq"))]._asdict()
                b = stored[theirs.get("id", theirs.get("seq"))]._asdict()
                unique = {"id", "seq", "code"}
                assert {k: v for k, v in a.items() if k not in unique} == {
                    k: v for k, v in b.items() if k not in unique
                }
                assert {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}


def _run(engine: sa.Engine, work: Any) -> Any:
    return run_with_database(engine, lambda db: db.run(work), audit_key=AUDIT_KEY, size=2, timeout=2)


@pytest.fixture
def case_id(client: TestClient, lead: Caller) -> str:
    return str(new_case(client, lead)["id"])


def test_a_failure_before_commit_keeps_nothing(
    client: TestClient, engine: sa.Engine, lead: Caller, case_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal fails after the item, its seizure and the idempotency record
    were written: none of them stays, and the connection serves the next write."""
    before = _counts(engine)

    def fail(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(app.core.journal, "event_rows", fail)
    response = client.post(
        f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.h(idempotency_key="k1")
    )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert _counts(engine) == before
    monkeypatch.undo()
    for _ in range(3):  # more than one pooled connection's worth: none was left in a transaction
        assert (
            client.post(f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.headers).status_code
            == 201
        )
    again = client.post(
        f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.h(idempotency_key="k1")
    )
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers


def test_two_requests_racing_on_one_key_leave_one_item(
    client: TestClient, engine: sa.Engine, lead: Caller, case_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second of two identical requests in flight at once does not see the
    first's record (not committed yet): its record's primary key refuses it, a
    409, and its item goes with it."""
    first = client.post(
        f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.h(idempotency_key="race")
    )
    assert first.status_code == 201
    before = _counts(engine)
    table = app.idempotency.service._TABLE
    monkeypatch.setattr(app.idempotency.service, "_RECORD", sa.select(table).where(sa.false()))
    second = client.post(
        f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.h(idempotency_key="race")
    )
    assert second.status_code == 409, second.text
    assert second.json()["type"] == "urn:caseapi:problem:conflict"
    assert _counts(engine) == before


@pytest.fixture
def postgres(engine: sa.Engine) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        pytest.skip("a connection to lose is PostgreSQL's (test_resilience moves the SQLite file away)")
    yield


def _terminate_writes(engine: sa.Engine, *, pid: int | None = None) -> int:
    """Terminate the hot write's connections (or one of them): the database restarted, for them."""
    condition = "pid = :pid" if pid is not None else "application_name = 'caseapi writes'"
    with engine.connect() as conn:
        return len(
            conn.execute(
                sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {condition}"),
                {"pid": pid},
            ).all()
        )


def test_a_connection_that_died_in_the_pool_is_replaced_without_an_error(
    postgres: None,
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    case_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database restarted while the worker was busy: the pooled connection
    is dead before the event loop could notice. BEGIN finds it so, and the
    write begins again on a new connection; nothing had been written."""
    acquire, killed = PostgresDatabase.acquire, []

    async def dead_on_arrival(self: PostgresDatabase, pool: Any) -> Any:
        conn = await acquire(self, pool)
        if not killed:
            # Synchronous, on the loop: asyncpg cannot see the connection go.
            killed.append(_terminate_writes(engine, pid=conn.get_server_pid()))
            _wait_gone(engine, conn.get_server_pid())
        return conn

    monkeypatch.setattr(PostgresDatabase, "acquire", dead_on_arrival)
    response = client.post(f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.headers)
    assert killed == [1]
    assert response.status_code == 201, response.text


def _wait_gone(engine: sa.Engine, pid: int) -> None:
    with engine.connect() as conn:
        for _ in range(100):
            if not conn.execute(
                sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).all():
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} still there")


def test_a_connection_lost_mid_transaction_answers_503_and_keeps_nothing(
    postgres: None,
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    case_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _counts(engine)
    checked = app.evidence.service.require_location_in_case

    async def cut(tx: Tx, *args: Any) -> None:
        await checked(tx, *args)
        pid = (await tx.first(sa.select(sa.func.pg_backend_pid().label("pid")))).pid
        _terminate_writes(engine, pid=pid)

    monkeypatch.setattr(app.evidence.service, "require_location_in_case", cut)
    response = client.post(f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.headers)
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "urn:caseapi:problem:database-unavailable"
    assert _counts(engine) == before
    monkeypatch.undo()
    assert (
        client.post(f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.headers).status_code == 201
    )


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("unexpected exception while processing the response"),
        asyncpg.ProtocolError("unexpected message from the server"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
    ],
    ids=type,
)
def test_a_connection_in_a_state_the_driver_cannot_go_on_from_answers_503(
    postgres: None,
    client: TestClient,
    engine: sa.Engine,
    lead: Caller,
    case_id: str,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    """The driver fails the INSERT with an error of the connection's state (a
    connection killed mid-statement answers asyncpg's InternalClientError):
    503 as for a lost connection, nothing kept, and the next write works."""
    before = _counts(engine)
    execute = asyncpg.connection.Connection.execute

    async def failing(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if "INSERT INTO seized_item" in query:
            monkeypatch.setattr(asyncpg.connection.Connection, "execute", execute)
            raise error
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", failing)
    response = client.post(f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.headers)
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "urn:caseapi:problem:database-unavailable"
    assert _counts(engine) == before
    assert (
        client.post(f"{API}/cases/{case_id}/seized-items", json=ITEM, headers=lead.headers).status_code == 201
    )


def test_the_answer_is_what_a_read_gives_and_references_are_checked(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, case_id: str
) -> None:
    """Every column of the body the hot write answers with is what GET reads
    back; agencies it names must exist, one or two of them in one lookup."""
    url = f"{API}/cases/{case_id}/seized-items"
    body = {
        **ITEM,
        "quantity": 24,
        "seized_at": "2025-09-23T09:30:00.123456+03:00",
        "sha256": "b" * 64,
        "seized_by_agency_id": str(partner.agency_id),
        "custodian_agency_id": str(lead.agency_id),
    }
    before = _counts(engine)
    for field in ("seized_by_agency_id", "custodian_agency_id"):
        unknown = client.post(url, json={**body, field: str(uuid.uuid4())}, headers=lead.headers)
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["errors"][0]["loc"] == ["body", field]
    assert _counts(engine) == before
    created = client.post(url, json=body, headers=lead.headers)
    assert created.status_code == 201, created.text
    read = client.get(created.headers["location"], headers=lead.headers)
    assert created.json() == read.json()
    assert created.headers["etag"] == read.headers["etag"]
    assert created.json()["seized_at"] == "2025-09-23T06:30:00.123456Z"
    chain = client.get(f"{created.headers['location']}/custody", headers=lead.headers).json()["items"]
    assert [(e["action"], e["to_agency_id"], e["at"]) for e in chain] == [
        ("seized", str(lead.agency_id), "2025-09-23T06:30:00.123456Z")
    ]


def test_a_table_the_database_lacks_is_the_schemas_fault(engine: sa.Engine) -> None:
    """As the ORM's errors are, so that app.core.errors answers 503 schema-not-migrated, not 500."""
    missing = sa.table("not_migrated_yet", sa.column("id"))

    async def work(tx: Tx) -> None:
        await tx.all(sa.select(missing.c.id))

    with pytest.raises(sa.exc.DBAPIError) as caught:
        _run(engine, work)
    if engine.dialect.name == "postgresql":
        assert isinstance(caught.value, sa.exc.ProgrammingError)
        assert isinstance(caught.value.orig, asyncpg.UndefinedTableError)
    else:
        assert isinstance(caught.value, sa.exc.OperationalError)  # SQLite's "no such table"


def test_a_replay_answers_as_a_read_does_for_the_caller_now(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, case_id: str
) -> None:
    """The hot write's own replay path: the first answer again while it holds,
    never the item again once it is deleted, nothing once the caller left the case."""
    join(client, lead, case_id, partner)
    url = f"{API}/cases/{case_id}/seized-items"
    body = {**ITEM, "description": "Phone of the call centre's manager"}
    first = client.post(url, json=body, headers=partner.h(idempotency_key="item-1"))
    assert first.status_code == 201
    replay = client.post(url, json=body, headers=partner.h(idempotency_key="item-1"))
    assert (replay.status_code, replay.json(), replay.headers["location"]) == (
        201,
        first.json(),
        first.headers["location"],
    )
    assert replay.headers["idempotent-replayed"] == "true"
    other = client.post(url, json={**body, "quantity": 2}, headers=partner.h(idempotency_key="item-1"))
    assert other.status_code == 422 and other.json()["type"] == "urn:caseapi:problem:idempotency-key-reused"

    assert client.delete(first.headers["location"], headers=lead.h(if_match='"1"')).status_code == 204
    gone = client.post(url, json=body, headers=partner.h(idempotency_key="item-1"))
    assert gone.status_code == 404
    assert problem_of(gone) == problem_of(client.get(first.headers["location"], headers=partner.headers))
    assert _counts(engine)["seized_item"] == 0, "a replay never creates the item again"

    second = client.post(url, json=body, headers=partner.h(idempotency_key="item-2"))
    assert second.status_code == 201
    parts = f"{API}/cases/{case_id}/participants/{partner.agency_id}"
    assert client.delete(parts, headers=lead.h(if_match='"1"')).status_code == 204
    left = client.post(url, json=body, headers=partner.h(idempotency_key="item-2"))
    assert left.status_code == 404
    assert "manager" not in left.text
    assert _counts(engine)["seized_item"] == 1
