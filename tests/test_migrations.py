"""The schema comes from Alembic alone: one head, models and migrations agree,
and the migrations go down and up again, on every backend."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from app import migrate
from app.db import create_db_engine


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
        context = MigrationContext.configure(conn, opts={"compare_type": True})
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
