"""Engine, column types and the one transaction every request or command runs in."""

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, TypeVar

import psycopg
import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg import sql as psycopg_sql
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlmodel import Session, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        length=max(len(str(m.value)) for m in enum_cls),  # type: ignore[attr-defined]
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


def reader(engine: Engine) -> Engine:
    """The same engine and pool, for requests that only read.

    On PostgreSQL reads run in autocommit: each statement sees the latest
    committed data, exactly as in a READ COMMITTED transaction, without the
    BEGIN and ROLLBACK round trips around it.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def new_session(bind: Engine) -> Session:
    # No connection is taken until the first statement.
    return Session(bind, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back on error.

    Pending audit entries and events are written by the session's
    before-commit hook (app.journal), inside this same transaction.
    """
    with new_session(writer(engine) if write else engine) as session, _committing(session):
        yield session


@contextmanager
def _committing(session: Session) -> Iterator[None]:
    """Commit when the block ends, roll back when it raises."""
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work.

    The session is opened here without touching the database, so that the
    route function takes, uses and (for reads) gives back its connection
    in one worker thread; the commit of a write runs before the response.
    """
    write = request.method not in SAFE_METHODS or "x-purpose" in request.headers
    async with _unit_of_work(request, write=write) as session:
        yield session


async def get_write_session(request: Request) -> AsyncIterator[Session]:
    """get_session() that always commits: for a read that is audited (an export)."""
    async with _unit_of_work(request, write=True) as session:
        yield session


@asynccontextmanager
async def _unit_of_work(request: Request, *, write: bool) -> AsyncIterator[Session]:
    state = request.app.state
    session = new_session(state.write_engine if write else state.read_engine)
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_end, session, commit=False)
        raise
    if write:
        await run_in_threadpool(_end, session, commit=True)  # one thread hop for both
    else:
        # A reader has no transaction open on PostgreSQL (autocommit) and
        # a local file on SQLite: giving the connection back does no I/O
        # worth a thread.
        session.close()


def _end(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


T = TypeVar("T")


def _committed(session: Session, work: Callable[[Session], T]) -> T:
    with _committing(session):
        return work(session)


class Writes:
    """Units of work for the writes agency tools make most, run without a worker thread.

    `run(work)` calls `work(session)` and commits, as a route with SessionDep
    would, with the same session API and the same journal at commit. On
    PostgreSQL the session is SQLAlchemy's asyncio one on asyncpg: the same
    sync code runs in a greenlet on the event loop, and each statement waits
    for the database without a thread. With the ORM session on psycopg in a
    worker thread, a POST of a seized item cost 10.9 ms of the worker's CPU
    at 32 connections (GIL contention between 20 threads, two thread hops,
    psycopg's Python layer), and 5.7 ms so. SQLite has no such driver here:
    there `work` runs in a worker thread with the write session.

    `work` must do nothing but database work: on the event loop, any other
    blocking call would hold up every request of the worker.
    """

    def __init__(self, engine: Engine, *, size: int, timeout: float) -> None:
        self.engine = engine
        self._size = size
        self._timeout = timeout
        # Async connections belong to the loop that opened them (tests drive
        # one app from several loops), as the hot reads' pools do.
        self._engines: dict[asyncio.AbstractEventLoop, AsyncEngine] = {}

    def _async_engine(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        found = self._engines.get(loop)
        if found is None:
            found = self._engines[loop] = create_async_engine(
                self.engine.url.set(drivername="postgresql+asyncpg"),
                pool_size=self._size,
                max_overflow=0,
                pool_timeout=self._timeout,
                pool_recycle=1800,
                connect_args={"timeout": 5},
            )
        return found

    async def run(self, work: Callable[[Session], T]) -> T:
        if self.engine.dialect.name != "postgresql":
            return await run_in_threadpool(self._in_thread, work)
        async with AsyncSession(
            self._async_engine(), sync_session_class=Session, expire_on_commit=False, autoflush=False
        ) as session:
            return await session.run_sync(_committed, work)

    def _in_thread(self, work: Callable[[Session], T]) -> T:
        with transaction(self.engine, write=True) as session:
            return work(session)

    async def close(self) -> None:
        engine = self._engines.pop(asyncio.get_running_loop(), None)
        if engine is None:
            return
        try:
            # Gracefully, unless the database or the network to it is gone:
            # then a goodbye it never answers must not hold up the shutdown.
            await asyncio.wait_for(engine.dispose(), timeout=self._timeout)
        except TimeoutError:
            await engine.dispose(close=False)


async def _writes(request: Request) -> Writes:
    return request.app.state.writes  # type: ignore[no-any-return]


WritesDep = Annotated[Writes, Depends(_writes)]


# scope="function": the commit happens before the response is sent, so a
# failed commit becomes an error response, never a false success.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
WriteSessionDep = Annotated[Session, Depends(get_write_session, scope="function")]


@functools.cache
def insert_into(table: sa.Table) -> sa.Insert:
    """One INSERT statement object per table: SQLAlchemy keys a statement for
    its compiled cache once per object, and every write inserts rows."""
    return sa.insert(table)


# Below this many rows a multi-row INSERT costs about what COPY does.
_COPY_FROM_ROWS = 100


def bulk_insert(session: Session, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows (all with the same keys) in the session's transaction.

    PostgreSQL through psycopg: COPY, several times faster than SQLAlchemy's multi-row
    INSERTs for the tens of thousands of rows of a bundle import and its
    journal; values pass through the column types' own bind processors and
    missing columns get their Python-side defaults, as with an INSERT.
    Elsewhere: one executemany INSERT.
    """
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.driver != "psycopg" or len(rows) < _COPY_FROM_ROWS:
        conn.execute(insert_into(table), rows)
        return
    given = [name for name in rows[0] if name in table.c]  # extra keys are ignored, as by INSERT
    defaulted = [c for c in table.columns if c.key not in rows[0] and c.default is not None]
    columns = [table.c[name] for name in given] + defaulted
    procs = [c.type.bind_processor(conn.dialect) for c in columns]

    def default_of(column: sa.Column[Any]) -> Any:
        default: Any = column.default
        return default.arg(None) if default.is_callable else default.arg

    copy_sql = psycopg_sql.SQL("COPY {} ({}) FROM STDIN").format(
        psycopg_sql.Identifier(table.name),
        psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(c.name) for c in columns),
    )
    driver: Any = conn.connection.driver_connection  # psycopg's Connection, in this transaction
    try:
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for row in rows:
                values = [row[name] for name in given] + [default_of(c) for c in defaulted]
                copy.write_row([proc(v) if proc else v for proc, v in zip(procs, values, strict=True)])
    except psycopg.Error as exc:
        # As SQLAlchemy wraps its own statements' errors, so that app.errors
        # answers a COPY's as any other (409, 422, 503), never with a 500.
        raise sa.exc.DBAPIError.instance(
            f"COPY {table.name}", None, exc, psycopg.Error, connection_invalidated=driver.broken
        ) from exc
