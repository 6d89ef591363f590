"""Hot reads: the routes agency tools poll run their statements on the event loop.

A read that goes through a worker thread and the ORM session costs several
times what the database takes to answer it (thread hand-off, session and
connection bookkeeping). The most requested reads (a case, the case list,
a case's seized items, the event feed, API keys) therefore run on `Reads`,
with SQLAlchemy Core statements built once per shape (functools.cache on
the builder), whose values are all bind parameters:

- PostgreSQL: each statement is compiled once, by SQLAlchemy, for its
  asyncpg dialect, and run on asyncpg as a prepared statement (asyncpg
  keeps them per connection) outside any transaction, so each read sees
  the latest committed data, as in a READ COMMITTED transaction. Only the
  public `Compiled` API is used: `string` (the SQL, with `$n` placeholders),
  `positiontup` (which bind parameter fills each placeholder) and `binds`.
  Values and results pass through the column types' own processors for
  that dialect, so rows hold the values the ORM would give
  (tests/test_reads.py compares them, value for value).
- SQLite: the statement runs on the sync engine in a worker thread (a
  local file: there is no round trip to save).

The write agency tools make most runs the same way in a transaction
(app.writes). Every other write and read uses the ORM session (app.db).
All ways share the statements and the access rules (app.access).
A driver's error leaves here as SQLAlchemy's exception for it, so that
app.errors answers it as it answers the ORM's (503 when the database is
down or busy, 422 for a value it cannot compare).
"""

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, cast

import asyncpg
import orjson
import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql.compiler import SQLCompiler

from app.hot import lean_dependency

Row = Any  # a named tuple whose fields are the statement's selected column keys


class Statements(Protocol):
    """Where hot statements run: the hot reads, and the hot write's transaction (app.writes)."""

    async def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Row]: ...

    async def first(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None


class Reads(Statements, Protocol):
    async def close(self) -> None: ...


class EngineReads(Reads):
    """Statements run on the sync engine in a worker thread (SQLite)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _run(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None) -> list[Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(stmt, params).all())

    async def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Row]:
        return await run_in_threadpool(self._run, stmt, params)

    async def close(self) -> None:
        return None


Processor = Callable[[Any], Any]
_UNSET = object()

# Hot statements are built once per shape (their values are bind
# parameters), so a few hundred cover every combination of filters.
_MAX_STATEMENTS = 1000


@dataclass(frozen=True)
class _Argument:
    """What fills one `$n` placeholder: a caller's value by name, else the
    statement's own (a literal compared with, such as a handling code)."""

    name: str
    value: Any
    process: Processor | None


@dataclass(frozen=True)
class _Prepared:
    sql: str
    arguments: tuple[_Argument, ...]
    results: tuple[tuple[int, Processor], ...]  # column index -> the type's result processor
    row: type[tuple[Any, ...]]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for arg in self.arguments:
            value = params.get(arg.name, arg.value)
            if value is _UNSET:
                raise sa_exc.ArgumentError(f"a value is required for bind parameter {arg.name!r}")
            out.append(value if arg.process is None or value is None else arg.process(value))
        return out

    def rows(self, records: Sequence[asyncpg.Record]) -> list[Row]:
        make = self.row._make  # type: ignore[attr-defined]
        if not self.results:
            return [make(r) for r in records]
        out = []
        for r in records:
            cells = list(r)
            for i, process in self.results:
                if cells[i] is not None:
                    cells[i] = process(cells[i])
            out.append(make(cells))
        return out


def prepare(stmt: sa.ClauseElement, dialect: sa.Dialect) -> _Prepared:
    """`stmt` as SQL for asyncpg, and how to fill its placeholders and read its
    rows (a SELECT's; the hot write's INSERTs and DELETEs return none)."""
    compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
    # Expanding IN lists are rendered per execution by SQLAlchemy's
    # execution context, which this path does not use.
    if "POSTCOMPILE" in compiled.string:
        raise TypeError("hot reads compare with = or tuples, not IN lists")
    arguments = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.callable is not None:
            raise TypeError(f"hot reads take values, not callables (bind parameter {name!r})")
        value = _UNSET if bind.required else bind.value
        arguments.append(_Argument(name, value, bind.type.bind_processor(dialect)))
    columns = list(stmt.selected_columns) if isinstance(stmt, sa.Select) else []
    results = tuple(
        (i, process)
        for i, col in enumerate(columns)
        if (process := col.type.result_processor(dialect, None)) is not None
    )
    row = collections.namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]
    return _Prepared(compiled.string, tuple(arguments), results, row)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # What SQLAlchemy's asyncpg dialect does on connect: JSON arrives decoded.
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def _keep_session(_: asyncpg.Connection) -> None:
    """A read, or a write's committed or rolled back transaction, leaves
    nothing behind in its session (no transaction, setting, listener or
    lock), so a connection goes back to the pool as it is: the default reset
    would cost a round trip each time."""


# A connection that went away with its server (a restart, a terminated
# backend): the read is retried once on a new connection.
LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, ConnectionError)
# The database or the connection to it, not the request: 503, as psycopg's
# OperationalError is. InterfaceError and InternalClientError (ProtocolError
# among them) are the driver's word for a connection in a state it cannot
# go on from, such as one cut mid-statement; TransactionRollbackError is a
# deadlock or serialisation failure, worth a retry.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,
)
_UNDEFINED = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)


def _as_sqlalchemy_error(exc: Exception, sql: str) -> Exception:
    if isinstance(exc, TimeoutError):
        return sa_exc.TimeoutError(f"no read connection free: {exc}")
    if isinstance(exc, asyncpg.DataError):
        return sa_exc.DataError(sql, None, exc)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return sa_exc.IntegrityError(sql, None, exc)
    if isinstance(exc, _UNDEFINED):
        return sa_exc.ProgrammingError(sql, None, exc)
    if isinstance(exc, _UNAVAILABLE):
        return sa_exc.OperationalError(sql, None, exc)
    return exc


@contextlib.contextmanager
def translated_errors(sql: str) -> Iterator[None]:
    """The driver's errors in the block leave as SQLAlchemy's exceptions for them (_as_sqlalchemy_error)."""
    try:
        yield
    except Exception as exc:
        translated = _as_sqlalchemy_error(exc, sql)
        if translated is exc:
            raise
        raise translated from exc


class AsyncpgPools:
    """asyncpg connections, one pool per event loop, and statements compiled once.

    The pool connects on demand: while the database is down a statement
    fails at once (503), and work recovers as soon as it is back. The hot
    reads and the hot write (app.writes) each have one.
    """

    def __init__(
        self,
        url: sa.URL,
        *,
        name: str,
        size: int,
        timeout: float,
        init: Callable[[asyncpg.Connection], Any] | None = None,
    ) -> None:
        self.dialect = asyncpg_dialect()
        self._name = name
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._size = size
        self._timeout = timeout
        self._init = init
        # Async connections belong to the loop that opened them. A served
        # worker has one loop; tests that drive one app from several threads have one each.
        self._pools: dict[asyncio.AbstractEventLoop, asyncpg.Pool] = {}
        self._cache: dict[sa.ClauseElement, _Prepared] = {}

    async def pool(self) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            # With min_size=0 making the pool connects nothing, so it never
            # suspends: no other caller can find it half-made.
            pool = self._pools[loop] = await asyncpg.create_pool(
                self._dsn,
                min_size=0,  # connect on demand: a pool made while the database is down still works later
                max_size=self._size,
                init=self._init,
                reset=_keep_session,
                timeout=5,  # to connect
                max_inactive_connection_lifetime=300,
                statement_cache_size=_MAX_STATEMENTS,
                # Which pool a connection is, for an operator reading pg_stat_activity.
                server_settings={"application_name": self._name},
            )
        return pool

    async def acquire(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        # Only a wait for a connection is bounded (a statement itself is not
        # cut short), and only when there is one: a timer per statement costs
        # as much as the rest of the pool's bookkeeping (acquire(timeout=) a task).
        if pool.get_idle_size():
            return await pool.acquire()
        async with asyncio.timeout(self._timeout):
            return await pool.acquire()

    def prepared(self, stmt: sa.ClauseElement) -> _Prepared:
        found = self._cache.get(stmt)
        if found is None:
            if len(self._cache) >= _MAX_STATEMENTS:
                self._cache.clear()  # only statements built per request would get here
            found = self._cache[stmt] = prepare(stmt, self.dialect)
        return found

    async def close(self) -> None:
        """Close this loop's connections; a later statement opens them again (an app can start again)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is None:
            return
        try:
            # Gracefully, unless the database or the network to it is gone:
            # then a goodbye it never answers must not hold up the shutdown.
            await asyncio.wait_for(pool.close(), timeout=self._timeout)
        except TimeoutError:
            pool.terminate()


class PostgresReads(AsyncpgPools, Reads):
    """Statements compiled by SQLAlchemy, run on asyncpg outside any transaction."""

    def __init__(self, url: sa.URL, *, size: int, timeout: float) -> None:
        super().__init__(url, name="caseapi reads", size=size, timeout=timeout, init=_init_connection)

    async def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Row]:
        prepared = self.prepared(stmt)
        records = await self._fetch(prepared.sql, prepared.args(params or {}))
        return prepared.rows(records)

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        with translated_errors(sql):
            pool = await self.pool()
            try:
                return await self._run(pool, sql, args)
            except LOST:
                # Most likely every other connection in the pool went with it (the
                # database restarted): drop them all and read again on a new one.
                # Reads are idempotent, so the retry is safe.
                await pool.expire_connections()
                return await self._run(pool, sql, args)

    async def _run(self, pool: asyncpg.Pool, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        conn = await self.acquire(pool)
        try:
            return await conn.fetch(sql, *args)  # type: ignore[no-any-return]
        finally:
            await pool.release(conn)


def create_reads(engine: sa.Engine, *, size: int, timeout: float) -> Reads:
    if engine.dialect.name == "postgresql":
        return PostgresReads(engine.url, size=size, timeout=timeout)
    return EngineReads(engine)


async def _reads(request: Request) -> Reads:
    return request.app.state.reads  # type: ignore[no-any-return]


ReadsDep = Annotated[Reads, Depends(_reads)]
lean_dependency(_reads, _reads)
