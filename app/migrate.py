"""Alembic, driven from code: the CLI and the tests use the same entry points."""

from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from app.config import PROJECT_ROOT


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config(toml_file=str(PROJECT_ROOT / "pyproject.toml"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


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
