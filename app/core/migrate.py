"""Alembic, driven from code: the CLI, the server and the tests use the same entry points."""

from functools import cache
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from app.core.config import shipped

# What the readiness probe asks on every poll: one indexed row.
REVISION_QUERY = sa.text("SELECT version_num FROM alembic_version")


class NotMigrated(Exception):
    """The database's schema is not at the newest revision."""

    def __init__(self, found: str | None, newest: str) -> None:
        super().__init__(
            f"the database is not migrated (revision {found or 'none'}, newest {newest}): "
            "run `caseapi migrate`"
        )


def alembic_config(connection: Connection | None = None) -> Config:
    # Built in code, not read from pyproject.toml: an installed package has
    # no pyproject.toml, only the migrations it carries.
    config = Config()
    config.set_main_option("script_location", str(shipped("migrations")).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head() -> str:
    """The newest revision of the migrations that ship with this code (read once per process)."""
    newest = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert newest is not None, "the migrations have no revision"
    return newest


def require_head(connection: Connection) -> None:
    """Raise NotMigrated unless the database is at the newest revision."""
    found = MigrationContext.configure(connection).get_current_revision()
    if found != head():
        raise NotMigrated(found, head())


def upgrade(connection: Connection | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(connection), revision)


def downgrade(connection: Connection | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(connection), revision)


def include_in_comparison(dialect: str) -> Any:
    """Alembic's include_object for `dialect`: an index made for one database only
    (info={"only_on": "postgresql"}) is not expected on the others."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        only_on = obj.info.get("only_on") if type_ == "index" else None
        return only_on is None or only_on == dialect

    return include
