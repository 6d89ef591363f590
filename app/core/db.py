"""The engine, column types, and rows: what the unit of work (app.core.uow) stands on."""

import functools
import os
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    SQLite has no time-zone type: values are stored as naive UTC and come
    back aware, so that comparisons and JSON output agree everywhere.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def str_enum(enum_cls: type[Enum], name: str) -> sa.Enum:
    """A str enum stored as its value in a VARCHAR with a CHECK constraint."""
    return sa.Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(str(m.value)) for m in enum_cls),
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )


def _file_identity(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _sqlite_on_connect(dbapi_conn: Any, record: Any) -> None:
    # The driver's own transaction handling is turned off so that the
    # "begin" hook below decides between BEGIN and BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    # FULL: an acknowledged commit survives a power loss, not just a crash.
    cur.execute("PRAGMA synchronous=FULL")
    # 256 KiB of page cache per pooled connection instead of 2 MiB: the
    # operating system caches the file anyway. Under load one worker's RSS
    # grew by 12 MB instead of 48, with no fewer requests per second.
    cur.execute("PRAGMA cache_size=-256")
    path = cur.execute("PRAGMA database_list").fetchone()[2] or None  # None: in memory
    cur.close()
    record.info["caseapi_file"] = (path, _file_identity(path))


def _sqlite_on_checkout(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    # A pooled connection keeps the file it opened even after the file is
    # moved away or replaced (a volume unmounted, a backup restored): it
    # would go on serving a database that is no longer the configured one.
    # Such a connection is dropped, and the new one fails (503) or opens
    # what is at the path now.
    path, identity = record.info["caseapi_file"]
    if path is not None and _file_identity(path) != identity:
        raise sa.exc.DisconnectionError("the database file moved or was replaced")


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # A writer takes the write lock up front; a deferred transaction that
    # reads first and writes later fails with SQLITE_BUSY under concurrency.
    if conn.get_execution_options().get("caseapi_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def create_db_engine(url: str, *, pool_size: int = 20, pool_timeout: float = 5.0) -> Engine:
    if url.startswith("sqlite"):
        # Pooled: opening the file and setting its pragmas costs more than
        # most reads. A connection is used by one thread at a time, and no
        # more are open than requests are admitted (each holds its page cache).
        engine = sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout,
            connect_args={"check_same_thread": False},
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "checkout", _sqlite_on_checkout)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # No ping on checkout: it would cost a round trip on every request.
        # A connection found dead fails its request (503) and invalidates the
        # pool, so the next requests reconnect: the service recovers from a
        # database restart without one of its own.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


def writer(engine: Engine) -> Engine:
    """The same engine and pool; its transactions announce a writer (SQLite: BEGIN IMMEDIATE)."""
    return engine.execution_options(caseapi_write=True)


def table_of(model: type[Any] | sa.Table) -> sa.Table:
    """The table of a SQLModel table class (or the table itself): statements
    on its typed columns (`table.c.name`)."""
    return model if isinstance(model, sa.Table) else model.__table__


@functools.cache
def insert_into(table: sa.Table) -> sa.Insert:
    """One INSERT statement object per table: SQLAlchemy keys a statement for
    its compiled cache once per object, and every write inserts rows."""
    return sa.insert(table)


Rows = list[tuple[sa.Table, list[dict[str, Any]]]]  # rows to insert, table by table


@functools.cache
def _insert_statement(shape: tuple[tuple[sa.Table, int], ...]) -> sa.Insert:
    inserts = [
        sa.insert(table).values(
            [
                {c.key: sa.bindparam(f"t{i}r{j}_{c.key}", type_=c.type) for c in table.columns}
                for j in range(count)
            ]
        )
        for i, (table, count) in enumerate(shape)
    ]
    first, *others = inserts
    return first.add_cte(*(insert.cte(f"t{i}") for i, insert in enumerate(others, start=1)))


def insert_statement(rows: Rows) -> tuple[sa.Insert, dict[str, Any]]:
    """One statement inserting `rows` (all columns of each row) into several
    tables, and its values: on PostgreSQL one round trip instead of one per
    table (the other tables' INSERTs are data-modifying CTEs of the first; a
    foreign key between them holds, as PostgreSQL checks it at the end of
    the statement). Built once per shape (tables and row counts)."""
    shape = tuple((table, len(table_rows)) for table, table_rows in rows)
    params = {
        f"t{i}r{j}_{key}": value
        for i, (_, table_rows) in enumerate(rows)
        for j, row in enumerate(table_rows)
        for key, value in row.items()
    }
    return _insert_statement(shape), params


@functools.cache
def _fields(model: type[SQLModel]) -> tuple[tuple[str, FieldInfo], ...]:
    return tuple((c.key, model.model_fields[c.key]) for c in model.__table__.columns)  # type: ignore[attr-defined]


def new_row(model: type[SQLModel], **values: Any) -> dict[str, Any]:
    """The column values of a new `model` object with `values`, its fields'
    defaults filling the rest, without building the object: for values a
    request's schema already validated, which a table model would validate
    again (on the hot write that cost a sixth of the worker's time)."""
    row = {}
    for key, field in _fields(model):
        value = values.pop(key) if key in values else field.get_default(call_default_factory=True)
        if value is PydanticUndefined:
            raise TypeError(f"{model.__name__}.{key} needs a value")
        row[key] = value
    if values:
        raise TypeError(f"{model.__name__} has no column {next(iter(values))!r}")
    return row
