"""Storage: SQLite pragmas, UTC instants on every backend, commit before response."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from app.agencies.models import Agency, AgencyKind
from app.db import bulk_insert, transaction


def test_sqlite_pragmas(engine: sa.Engine, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -256  # KiB, per pooled connection


def test_aware_utc_round_trip(engine: sa.Engine) -> None:
    kyiv = timezone(timedelta(hours=3))
    moment = datetime(2025, 9, 23, 6, 30, 15, 123456, tzinfo=kyiv)
    with transaction(engine, write=True) as session:
        agency = Agency(code="RT", name="Round trip", kind=AgencyKind.other, created_at=moment)
        session.add(agency)
        session.flush()
        agency_id = agency.id
    with transaction(engine, write=False) as session:
        stored = session.get(Agency, agency_id)
        assert stored is not None
        assert stored.created_at == moment
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.created_at == datetime(2025, 9, 23, 3, 30, 15, 123456, tzinfo=UTC)
        # Comparisons in SQL agree with Python's.
        later = session.execute(
            sa.select(sa.func.count())
            .select_from(Agency)
            .where(Agency.created_at > moment - timedelta(seconds=1))
        ).scalar_one()
        assert later == 1


def test_naive_datetimes_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.StatementError), transaction(engine, write=True) as session:
        session.add(Agency(code="NV", name="Naive", kind=AgencyKind.other, created_at=datetime(2025, 1, 1)))
        session.flush()


def test_foreign_keys_are_enforced(engine: sa.Engine) -> None:
    import uuid

    with pytest.raises(sa.exc.IntegrityError), transaction(engine, write=True) as session:
        session.add(Agency(code="FK", name="Orphan", kind=AgencyKind.other, parent_id=uuid.uuid4()))
        session.flush()


def test_a_failed_commit_is_never_a_success(
    client,
    lead,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    import app.journal

    def fail(*_: object) -> None:
        raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(app.journal, "entry_rows", fail)
    response = client.post("/api/v1/cases", json={"reference": "LOST", "title": "T"}, headers=lead.headers)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    monkeypatch.undo()
    assert client.get("/api/v1/cases", headers=lead.headers).json()["items"] == []


@pytest.mark.parametrize("count", [3, 150])  # below and above the size where PostgreSQL switches to COPY
def test_bulk_insert_stores_what_an_insert_would(engine: sa.Engine, count: int) -> None:
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
    with transaction(engine, write=True) as session:
        bulk_insert(session, Agency.__table__, rows)  # type: ignore[arg-type]
    with transaction(engine, write=False) as session:
        stored = session.execute(sa.select(Agency).where(Agency.code.like("BULK-%"))).scalars().all()
    assert sorted(a.name for a in stored) == sorted(r["name"] for r in rows)
    assert {a.kind for a in stored} == {AgencyKind.police}
    assert {a.created_at for a in stored} == {moment}
    assert {a.version for a in stored} == {1}
    assert len({a.id for a in stored}) == count and all(a.updated_at for a in stored)


@pytest.mark.parametrize("count", [3, 150])  # an INSERT, and on PostgreSQL a COPY on the driver itself
def test_bulk_insert_fails_as_any_statement_does(engine: sa.Engine, count: int) -> None:
    """SQLAlchemy's exceptions either way, which app.errors answers (409, 422, 503), never a 500."""
    rows = [
        {"code": f"FK-{n}", "name": "Orphan", "kind": AgencyKind.police, "parent_id": uuid.uuid4()}
        for n in range(count)
    ]
    with pytest.raises(sa.exc.IntegrityError), transaction(engine, write=True) as session:
        bulk_insert(session, Agency.__table__, rows)  # type: ignore[arg-type]
    with transaction(engine, write=False) as session:
        assert session.execute(sa.select(Agency.id).where(Agency.code.like("FK-%"))).first() is None
