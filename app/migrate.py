"""Alembic, driven from code: the CLI and the tests use the same entry points."""

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
