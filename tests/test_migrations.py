"""The schema comes from Alembic alone: one head, models and migrations agree,
and the migrations go down and up again, on every backend."""

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import app.core.db
from app.attachments.models import Attachment
from app.core import migrate
from app.core.db import create_db_engine, table_of
from app.requests.models import InformationRequest, RequestMessage


@pytest.fixture
def blank_engine(blank_database_url: str) -> Iterator[sa.Engine]:
    """An empty database of its own, so that downgrading does not disturb other tests."""
    engine = create_db_engine(blank_database_url)
    yield engine
    engine.dispose()


def test_single_head() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(script.get_heads()) == 1


def _differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "include_object": migrate.include_in_comparison(conn.dialect.name)},
        )
        return list(compare_metadata(context, SQLModel.metadata))


def test_models_and_migrations_agree(blank_engine: sa.Engine) -> None:
    with blank_engine.begin() as conn:
        migrate.upgrade(conn)
    assert _differences(blank_engine) == []
    with blank_engine.begin() as conn:
        command.check(migrate.alembic_config(conn))


def test_upgrade_downgrade_upgrade(blank_engine: sa.Engine) -> None:
    with blank_engine.begin() as conn:
        migrate.upgrade(conn)
    with blank_engine.begin() as conn:
        migrate.downgrade(conn, "base")
    tables = set(sa.inspect(blank_engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    with blank_engine.begin() as conn:
        migrate.upgrade(conn)
    assert set(SQLModel.metadata.tables) <= set(sa.inspect(blank_engine).get_table_names())
    assert _differences(blank_engine) == []


def _old_case(conn: sa.Connection, agency_id: uuid.UUID, reference: str) -> None:
    conn.execute(
        sa.text(
            'INSERT INTO "case" (id, reference, title, status, handling_code, offence_types, '
            "modus_operandi, victim_regions, lead_agency_id, version, created_at, updated_at) "
            "VALUES (:id, :ref, 'T', 'open', 'TLP:AMBER', '[]', '[]', '[]', :lead, 1, :now, :now)"
        ).bindparams(
            sa.bindparam("id", type_=sa.Uuid()),
            sa.bindparam("lead", type_=sa.Uuid()),
            sa.bindparam("now", type_=app.core.db.UTCDateTime()),
        ),
        {"id": uuid.uuid4(), "ref": reference, "lead": agency_id, "now": app.core.db.utcnow()},
    )


def _old_agency(conn: sa.Connection, code: str) -> uuid.UUID:
    agency_id = uuid.uuid4()
    conn.execute(
        sa.text(
            "INSERT INTO agency (id, code, name, kind, version, created_at, updated_at) "
            "VALUES (:id, :code, 'N', 'police', 1, :now, :now)"
        ).bindparams(
            sa.bindparam("id", type_=sa.Uuid()), sa.bindparam("now", type_=app.core.db.UTCDateTime())
        ),
        {"id": agency_id, "code": code, "now": app.core.db.utcnow()},
    )
    return agency_id


def test_0002_fills_the_reference_key_of_existing_cases(blank_engine: sa.Engine) -> None:
    with blank_engine.begin() as conn:
        migrate.upgrade(conn, "0001")
        kz = _old_agency(conn, "KZ")
        _old_case(conn, kz, "\uff32\uff25\uff26-1")  # REF-1 in full-width letters
        _old_case(conn, kz, "Straße-2")
    with blank_engine.begin() as conn:
        migrate.upgrade(conn)
    with blank_engine.connect() as conn:
        keys = set(conn.execute(sa.text('SELECT reference_key FROM "case"')).scalars())
    assert keys == {"ref-1", "strasse-2"}


def test_0002_refuses_twins_it_cannot_tell_apart(blank_engine: sa.Engine) -> None:
    """Two cases of one lead whose references differ only in case: the migration
    names them rather than picking one."""
    with blank_engine.begin() as conn:
        migrate.upgrade(conn, "0001")
        kz = _old_agency(conn, "KZ")
        _old_case(conn, kz, "REF-1")
        _old_case(conn, kz, "ref-1")
    with pytest.raises(RuntimeError, match="REF-1"), blank_engine.begin() as conn:
        migrate.upgrade(conn)


def test_0012_names_the_request_of_existing_request_events(blank_engine: sa.Engine) -> None:
    """The request of each request's, message's and message attachment's
    event, found through the records still there; none for a record gone."""
    requests, messages, attachments = (
        table_of(model) for model in (InformationRequest, RequestMessage, Attachment)
    )
    event = sa.table(
        "event",
        sa.column("seq", sa.BigInteger()),
        sa.column("type", sa.String()),
        sa.column("resource_type", sa.String()),
        sa.column("resource_id", sa.Uuid()),
        sa.column("at", app.core.db.UTCDateTime()),
    )
    request_id, message_id, attachment_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = app.core.db.utcnow()
    with blank_engine.begin() as conn:
        migrate.upgrade(conn, "0011")
        kz, ua = _old_agency(conn, "KZ"), _old_agency(conn, "UA")
        conn.execute(
            requests.insert().values(
                id=request_id,
                from_agency_id=kz,
                to_agency_id=ua,
                subject="S",
                body="B",
                priority="normal",
                status="sent",
                due_at=now,
                version=1,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            messages.insert().values(
                id=message_id, request_id=request_id, from_agency_id=ua, body="B", created_at=now
            )
        )
        conn.execute(
            attachments.insert().values(
                id=attachment_id,
                request_id=request_id,
                message_id=message_id,
                uploaded_by_agency_id=ua,
                filename="a.txt",
                content_type="text/plain",
                size=1,
                sha256="0" * 64,
                version=1,
                created_at=now,
            )
        )
        named = [
            ("request.created", "information_request", request_id),
            ("request_message.created", "request_message", message_id),
            ("attachment.created", "message_attachment", attachment_id),
            ("attachment.deleted", "message_attachment", uuid.uuid4()),
            ("location.created", "location", uuid.uuid4()),
        ]
        conn.execute(
            event.insert(),
            [
                {"seq": seq, "type": type_, "resource_type": kind, "resource_id": resource_id, "at": now}
                for seq, (type_, kind, resource_id) in enumerate(named, start=1)
            ],
        )
    with blank_engine.begin() as conn:
        migrate.upgrade(conn)
    with blank_engine.connect() as conn:
        found = conn.execute(sa.text("SELECT request_id FROM event ORDER BY seq")).scalars().all()
    assert [None if value is None else uuid.UUID(str(value)) for value in found] == [
        request_id,
        request_id,
        request_id,
        None,
        None,
    ]
