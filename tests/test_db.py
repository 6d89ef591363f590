"""Storage: SQLite pragmas, UTC instants on every backend, commit before response."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from app.agencies.models import Agency, AgencyKind
from app.core.db import new_row, table_of
from app.core.uow import Tx
from tests.conftest import run_unit


def test_sqlite_pragmas(engine: sa.Engine, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -256  # KiB, per pooled connection


AGENCIES = table_of(Agency)


def _agency(**values: object) -> dict[str, object]:
    return new_row(Agency, **{"name": "Agency", "kind": AgencyKind.other, **values})


def _insert(engine: sa.Engine, *rows: dict[str, object]) -> None:
    async def work(tx: Tx) -> None:
        await tx.insert([(AGENCIES, list(rows))])

    run_unit(engine, work)


def test_aware_utc_round_trip(engine: sa.Engine) -> None:
    kyiv = timezone(timedelta(hours=3))
    moment = datetime(2025, 9, 23, 6, 30, 15, 123456, tzinfo=kyiv)
    row = _agency(code="RT", created_at=moment)
    _insert(engine, row)

    async def read(tx: Tx) -> tuple[object, int]:
        stored = await tx.first(sa.select(AGENCIES.c.created_at).where(AGENCIES.c.id == row["id"]))
        # Comparisons in SQL agree with Python's.
        later = await tx.scalar(
            sa.select(sa.func.count()).where(AGENCIES.c.created_at > moment - timedelta(seconds=1))
        )
        return stored.created_at, later

    stored, later = run_unit(engine, read)
    assert stored == moment
    assert stored.utcoffset() == timedelta(0)  # type: ignore[attr-defined]
    assert stored == datetime(2025, 9, 23, 3, 30, 15, 123456, tzinfo=UTC)
    assert later == 1


def test_naive_datetimes_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.StatementError):
        _insert(engine, _agency(code="NV", created_at=datetime(2025, 1, 1)))


def test_foreign_keys_are_enforced(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        _insert(engine, _agency(code="FK", parent_id=uuid.uuid4()))


def test_a_failed_commit_is_never_a_success(
    client,
    lead,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    import app.core.journal

    def fail(*_: object) -> None:
        raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(app.core.journal, "entry_rows", fail)
    response = client.post("/api/v1/cases", json={"reference": "LOST", "title": "T"}, headers=lead.headers)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    monkeypatch.undo()
    assert client.get("/api/v1/cases", headers=lead.headers).json()["items"] == []


@pytest.mark.parametrize("count", [3, 150])
def test_insert_many_stores_what_an_insert_would(engine: sa.Engine, count: int) -> None:
    kyiv = timezone(timedelta(hours=3))
    moment = datetime(2025, 9, 23, 6, 30, tzinfo=kyiv)
    rows = [
        # No id, version or updated_at: their defaults apply. "unknown" is not a column: ignored.
        {
            "code": f"BULK-{n}",
            "name": f'Bulk\'s \t"{n}"\n',
            "kind": AgencyKind.police,
            "country": None,
            "parent_id": None,
            "created_at": moment,
            "unknown": n,
        }
        for n in range(count)
    ]

    async def work(tx: Tx) -> None:
        await tx.insert_many(AGENCIES, rows)

    run_unit(engine, work)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(AGENCIES).where(AGENCIES.c.code.like("BULK-%"))).all()
    assert sorted(a.name for a in stored) == sorted(r["name"] for r in rows)
    assert {a.kind for a in stored} == {AgencyKind.police}
    assert {a.created_at for a in stored} == {moment}
    assert {a.version for a in stored} == {1}
    assert len({a.id for a in stored}) == count and all(a.updated_at for a in stored)


@pytest.mark.parametrize("count", [3, 150])
def test_insert_many_fails_as_any_statement_does(engine: sa.Engine, count: int) -> None:
    """SQLAlchemy's exceptions either way, which app.core.errors answers (409, 422, 503), never a 500;
    nothing of the unit of work is kept."""
    rows = [
        {"code": f"FK-{n}", "name": "Orphan", "kind": AgencyKind.police, "parent_id": uuid.uuid4()}
        for n in range(count)
    ]

    async def work(tx: Tx) -> None:
        await tx.insert_many(AGENCIES, rows)

    with pytest.raises(sa.exc.IntegrityError):
        run_unit(engine, work)
    with engine.connect() as conn:
        assert conn.execute(sa.select(AGENCIES.c.id).where(AGENCIES.c.code.like("FK-%"))).first() is None
