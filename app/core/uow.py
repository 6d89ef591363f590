"""The one way to the database: reads, and units of work committed with their journal.

Every route, command and background task runs its statements here, as
SQLAlchemy Core statements built from the SQLModel tables (built once per
shape, their values bind parameters), through one `Database`:

- `db.all()` / `db.first()`: a read outside any transaction, each statement
  seeing the latest committed data (as in a READ COMMITTED transaction).
- `async with db.transaction() as tx`: one unit of work. Changes are noted on
  `tx.changes` (app.core.journal.Change); their audit entries and feed events are
  written by app.core.journal.write() just before COMMIT, under the journal lock.
  An exception rolls everything back.

PostgreSQL: each statement is compiled once by SQLAlchemy for its asyncpg
dialect and run on asyncpg as a prepared statement, on one pool per worker.
Only the public `Compiled` API is used: `string` (the SQL, with `$n`
placeholders), `positiontup` and `binds`; values and results pass through
the column types' own processors, so rows hold what SQLAlchemy would give
(tests/test_reads.py and tests/test_writes.py compare them value for value). A driver's error leaves
as SQLAlchemy's exception for it (translated_errors), so app.core.errors answers
every path alike: 409, 422, 503.

SQLite, the embedded default: the same statements on the sync engine, each in
a worker thread (a local file: there is no round trip to save); a unit of
work holds the database's write lock from BEGIN IMMEDIATE.
"""

import asyncio
import collections
import contextlib
import enum
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Protocol, TypeVar, cast

import asyncpg
import orjson
import sqlalchemy as sa
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import visitors
from sqlalchemy.sql.compiler import SQLCompiler

from app.core import journal
from app.core.db import Rows, UTCDateTime, create_db_engine, insert_into, insert_statement, writer
from app.core.journal import Change

T = TypeVar("T")
Row = Any  # a named tuple whose fields are the statement's selected column keys
Statement = sa.Executable


class Statements(Protocol):
    """Where statements run: a database's reads, or a unit of work."""

    async def all(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> list[Row]:
        """The rows of a SELECT (or of a statement with RETURNING)."""
        ...

    async def first(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None

    async def scalar(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        row = await self.first(stmt, params)
        return None if row is None else row[0]


class Tx(Statements, Protocol):
    """One unit of work (Database.transaction())."""

    dialect_name: str

    @property
    def changes(self) -> list[Change]:
        """What this unit changed (app.core.journal.Change), journalled before COMMIT."""
        ...

    async def execute(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        ...

    async def insert(self, rows: Rows) -> None:
        """Insert rows (all columns of each) into several tables: on PostgreSQL in one round trip."""
        ...

    async def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert many rows of one table (a bundle's thousands); a column a row
        leaves out gets its default, as an INSERT without it would."""
        ...


Work = Callable[[Tx], Awaitable[T]]


@dataclass(frozen=True)
class PoolStats:
    """A worker's connections, for its metrics."""

    size: int  # the most it opens
    in_use: int
    idle: int


class Database(Statements, Protocol):
    dialect_name: str
    # The audit chain's key (app.core.secrets), from the settings of the app or
    # command that made this Database: every unit of work journals under it.
    audit_key: bytes
    # Called after each commit that wrote events to the feed, in this process
    # only: a deliverer of this worker wakes at once instead of at its next poll.
    on_feed: list[Callable[[], None]]

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """One unit of work: committed with its journal when the block ends, rolled back if it raises."""
        ...

    async def run(self, work: Work[T]) -> T:
        """`await work(tx)` in one transaction()."""
        async with self.transaction() as tx:
            return await work(tx)

    def pool_stats(self) -> PoolStats:
        """This event loop's connections."""
        ...

    async def close(self) -> None: ...


def _default(column: sa.Column[Any]) -> Any:
    default: Any = column.default
    if default is None:
        return None
    return default.arg(None) if default.is_callable else default.arg


def complete(table: sa.Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with every column of `table`: the Python-side default (or NULL)
    where a row leaves one out; keys that are not columns are dropped."""
    missing = [c for c in table.columns if c.key not in rows[0]] if rows else []
    keys = [c.key for c in table.columns if c.key in rows[0]] if rows else []
    return [{**{k: row[k] for k in keys}, **{c.key: _default(c) for c in missing}} for row in rows]


# --- PostgreSQL: statements compiled by SQLAlchemy, run on asyncpg ----------

Processor = Callable[[Any], Any]
_UNSET = object()

# Statements are built once per shape (their values are bind parameters),
# so a few hundred cover every combination of filters.
_MAX_STATEMENTS = 1000


@dataclass(frozen=True)
class _Argument:
    """What fills one `$n` placeholder: a caller's value by name, else the
    statement's own (a literal compared with, such as a handling code)."""

    name: str
    value: Any
    process: Processor | None
    # A None the type itself writes (JSON's `null`), rather than SQL's NULL.
    evaluates_none: bool


@dataclass(frozen=True)
class Prepared:
    sql: str
    arguments: tuple[_Argument, ...]
    results: tuple[tuple[int, Processor], ...]  # column index -> the type's result processor
    row: type[tuple[Any, ...]]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The placeholders' values, through their types' bind processors, as
        SQLAlchemy binds them; a value a type refuses is a StatementError, as there."""
        out = []
        for arg in self.arguments:
            value = params.get(arg.name, arg.value)
            if value is _UNSET:
                raise sa_exc.ArgumentError(f"a value is required for bind parameter {arg.name!r}")
            if arg.process is None or (value is None and not arg.evaluates_none):
                out.append(value)
                continue
            try:
                out.append(arg.process(value))
            except Exception as exc:
                raise sa_exc.StatementError(f"({type(exc).__name__}) {exc}", self.sql, None, exc) from exc
        return out

    def rows(self, records: Sequence[asyncpg.Record]) -> list[Row]:
        # tuple.__new__ rather than the named tuple's _make: a record has the statement's columns.
        row, new = self.row, tuple.__new__
        if not self.results:
            return [new(row, r) for r in records]
        out = []
        for r in records:
            cells = list(r)
            for i, process in self.results:
                if cells[i] is not None:
                    cells[i] = process(cells[i])
            out.append(new(row, cells))
        return out


# A constant written into SQL as it is: a number, or a quoted word.
_PLAIN_LITERAL = re.compile(r"-?[0-9]{1,18}|'[A-Za-z0-9_.:\- ]{0,100}'")


def _constants_written(stmt: Statement, dialect: sa.Dialect) -> Statement:
    """A query with its own constants (a handling code or a resource type it
    compares with, a LIMIT 1: bind parameters with a value, not the caller's)
    written into its SQL as literals, as far as they are plain numbers or
    words. PostgreSQL plans a prepared statement for its parameters' values
    each time it runs (a custom plan) unless a plan for any values (a generic
    plan) promises to cost as little; a constant that is a parameter keeps
    many of those queries on custom plans, planned again at every execution."""
    if not isinstance(stmt, sa.Select | sa.CompoundSelect):
        return stmt
    written = 0

    def literal(element: Any, **_: Any) -> Any:
        nonlocal written
        if not isinstance(element, sa.BindParameter) or element.required or element.callable is not None:
            return None
        value = element.value
        if not (type(value) in (str, int) or isinstance(value, enum.Enum)):
            return None
        render = element.type.literal_processor(dialect)
        text = render(value) if render is not None else None
        if not isinstance(text, str) or not _PLAIN_LITERAL.fullmatch(text):
            return None
        written += 1
        return sa.literal_column(text, element.type)

    rewritten = visitors.replacement_traverse(stmt, {}, literal)
    return cast(Statement, rewritten) if written else stmt


def _compiled(stmt: Statement, dialect: sa.Dialect) -> SQLCompiler:
    written = _constants_written(stmt, dialect)
    if written is not stmt:
        try:
            return cast(SQLCompiler, written.compile(dialect=dialect))  # type: ignore[attr-defined]
        except sa_exc.SQLAlchemyError:
            pass  # as it is, then
    return cast(SQLCompiler, stmt.compile(dialect=dialect))  # type: ignore[attr-defined]


def _result_processor(type_: Any, dialect: sa.Dialect) -> Processor | None:
    """The column type's result processor, the same value for less Python
    per cell for the two kinds every row has: an instant in UTC as asyncpg
    gives it is already what UTCDateTime makes of it, and a str enum's member
    is one dict lookup (a KeyError, a LookupError, for a value it lacks)."""
    process: Processor | None = type_.result_processor(dialect, None)
    if process is None:
        return None
    if isinstance(type_, UTCDateTime) and type_.impl_instance.result_processor(dialect, None) is None:
        full = process

        def as_utc(value: Any) -> Any:
            return value if value.tzinfo is UTC else full(value)

        return as_utc
    if (
        isinstance(type_, sa.Enum)
        and sa.String.result_processor(type_, dialect, None) is None
        and isinstance(lookup := getattr(type_, "_object_lookup", None), dict)
    ):
        return lookup.__getitem__
    return process


def prepare(stmt: Statement, dialect: sa.Dialect) -> Prepared:
    """`stmt` as SQL for asyncpg, and how to fill its placeholders and read its rows."""
    compiled = _compiled(stmt, dialect)
    # Expanding IN lists are rendered per execution by SQLAlchemy's
    # execution context, which this path does not use: compare with a tuple,
    # or IN a subquery, or = ANY(:array).
    if "POSTCOMPILE" in compiled.string:
        raise TypeError("statements compare with =, tuples, subqueries or ANY(array), not IN lists")
    arguments = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.callable is not None:
            raise TypeError(f"statements take values, not callables (bind parameter {name!r})")
        value = _UNSET if bind.required else bind.value
        process = bind.type.bind_processor(dialect)
        arguments.append(_Argument(name, value, process, bool(bind.type.should_evaluate_none)))
    columns = list(getattr(stmt, "exported_columns", ()))
    results = tuple(
        (i, read)
        for i, col in enumerate(columns)
        if (read := _result_processor(col.type, dialect)) is not None
    )
    row = collections.namedtuple("Row", [c.key for c in columns], rename=True)  # type: ignore[misc]
    return Prepared(compiled.string, tuple(arguments), results, row)


def _passthrough(value: str) -> str:
    return value


async def _init_connection(conn: asyncpg.Connection) -> None:
    # As SQLAlchemy's asyncpg dialect does on connect: JSON is serialised by
    # the column type's bind processor and arrives decoded.
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=_passthrough, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(_: asyncpg.Connection) -> None:
    """A read, or a committed or rolled back unit of work, leaves nothing
    behind in its session (no transaction, setting, listener or lock), so a
    connection goes back to the pool as it is: the default reset would cost
    a round trip each time."""


# A connection that went away with its server (a restart, a terminated
# backend): a read is retried once on a new connection, as is a BEGIN.
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
        return sa_exc.TimeoutError(f"no database connection free: {exc}")
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
    """The driver's errors in the block leave as SQLAlchemy's exceptions for them."""
    try:
        yield
    except Exception as exc:
        translated = _as_sqlalchemy_error(exc, sql)
        if translated is exc:
            raise
        raise translated from exc


def _rowcount(status: str) -> int:
    """The count asyncpg's status line ends with ("UPDATE 3", "INSERT 0 1"); 0 for none."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _AsyncpgTx:
    dialect_name = "postgresql"

    def __init__(self, db: "PostgresDatabase", conn: asyncpg.Connection) -> None:
        self._db = db
        self._conn = conn
        self.changes: list[Change] = []

    async def all(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> list[Row]:
        prepared = self._db.prepared(stmt)
        with translated_errors(prepared.sql):
            records = await self._conn.fetch(prepared.sql, *prepared.args(params or {}))
        return prepared.rows(records)

    first = Statements.first
    scalar = Statements.scalar

    async def execute(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> int:
        prepared = self._db.prepared(stmt)
        with translated_errors(prepared.sql):
            status = await self._conn.execute(prepared.sql, *prepared.args(params or {}))
        return _rowcount(status)

    async def insert(self, rows: Rows) -> None:
        if rows := [(table, table_rows) for table, table_rows in rows if table_rows]:
            await self.execute(*insert_statement(rows))

    async def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        prepared = self._db.prepared(insert_into(table))
        with translated_errors(prepared.sql):
            # One prepared statement, its rows pipelined by asyncpg.
            await self._conn.executemany(prepared.sql, [prepared.args(row) for row in complete(table, rows)])

    async def commit(self) -> None:
        with translated_errors("COMMIT"):
            await self._conn.execute("COMMIT")


class PostgresDatabase:
    """asyncpg connections, one pool per event loop, and statements compiled once.

    The pool connects on demand: while the database is down a statement
    fails at once (503), and work recovers as soon as it is back.
    """

    dialect_name = "postgresql"

    def __init__(
        self, url: sa.URL, *, size: int, timeout: float, audit_key: bytes, name: str = "caseapi"
    ) -> None:
        self.dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
        self.audit_key = audit_key
        self._name = name
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._size = size
        self._timeout = timeout
        # Async connections belong to the loop that opened them. A served
        # worker has one loop; tests that drive one app from several threads have one each.
        self._pools: dict[asyncio.AbstractEventLoop, asyncpg.Pool] = {}
        self._cache: dict[Statement, Prepared] = {}
        self.on_feed: list[Callable[[], None]] = []

    first = Statements.first
    scalar = Statements.scalar
    run = Database.run

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
                init=_init_connection,
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

    def prepared(self, stmt: Statement) -> Prepared:
        found = self._cache.get(stmt)
        if found is None:
            if len(self._cache) >= _MAX_STATEMENTS:
                self._cache.clear()  # only statements built per request would get here
            found = self._cache[stmt] = prepare(stmt, self.dialect)
        return found

    async def all(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> list[Row]:
        prepared = self.prepared(stmt)
        records = await self._fetch(prepared.sql, prepared.args(params or {}))
        return prepared.rows(records)

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        with translated_errors(sql):
            pool = await self.pool()
            try:
                return await self._read(pool, sql, args)
            except LOST:
                # Most likely every other connection in the pool went with it (the
                # database restarted): drop them all and read again on a new one.
                # Reads are idempotent, so the retry is safe.
                await pool.expire_connections()
                return await self._read(pool, sql, args)

    async def _read(self, pool: asyncpg.Pool, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        conn = await self.acquire(pool)
        try:
            return await conn.fetch(sql, *args)  # type: ignore[no-any-return]
        finally:
            await pool.release(conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        pool, conn = await self._begun()
        try:
            tx = _AsyncpgTx(self, conn)
            try:
                yield tx
                await journal.write(tx, self.audit_key)
                await tx.commit()
            except BaseException:
                await _roll_back(conn)
                raise
        finally:
            await pool.release(conn)
        fed(self, tx)

    async def _begun(self) -> tuple[asyncpg.Pool, asyncpg.Connection]:
        """A connection with its transaction begun."""
        with translated_errors("BEGIN"):
            pool = await self.pool()
            try:
                return pool, await self._begin(pool)
            except LOST:
                # Found dead at BEGIN (the database restarted while this worker
                # was busy: likely all of the pool's): drop them all and begin
                # on a new one. Nothing was written, so this retry is safe.
                await pool.expire_connections()
                return pool, await self._begin(pool)

    async def _begin(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        conn = await self.acquire(pool)
        try:
            await conn.execute("BEGIN")
        except BaseException:
            await pool.release(conn)
            raise
        return conn

    def pool_stats(self) -> PoolStats:
        pool = self._pools.get(asyncio.get_running_loop())
        if pool is None:
            return PoolStats(self._size, 0, 0)
        return PoolStats(self._size, pool.get_size() - pool.get_idle_size(), pool.get_idle_size())

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


async def _roll_back(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        # A connection in a state we cannot know (cut mid-statement) never
        # goes back to the pool as a usable one; a lost one the pool already dropped.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()


# --- SQLite: the sync engine, each statement in a worker thread --------------


@functools.cache
def _row_type(keys: tuple[str, ...]) -> Any:
    return collections.namedtuple("Row", keys, rename=True)


def _rows(conn: sa.Connection, stmt: Statement, params: Mapping[str, Any] | None) -> list[Row]:
    """The rows as named tuples, as on PostgreSQL: one kind of row on every backend."""
    result = conn.execute(stmt, params)
    make = _row_type(tuple(result.keys()))._make
    return [make(row) for row in result]


class _EngineTx:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self.dialect_name = conn.dialect.name
        self.changes: list[Change] = []

    first = Statements.first
    scalar = Statements.scalar

    async def all(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> list[Row]:
        return await run_in_threadpool(_rows, self._conn, stmt, params)

    def _execute(self, stmt: Statement, params: Mapping[str, Any] | None) -> int:
        return self._conn.execute(stmt, params).rowcount

    async def execute(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> int:
        return await run_in_threadpool(self._execute, stmt, params)

    def _insert(self, rows: Rows) -> None:
        for table, table_rows in rows:
            if table_rows:
                self._conn.execute(insert_into(table), table_rows)

    async def insert(self, rows: Rows) -> None:
        await run_in_threadpool(self._insert, rows)

    async def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        await self.insert([(table, complete(table, rows))])


@dataclass
class EngineDatabase:
    """A Database on a sync SQLAlchemy engine (SQLite), statements in worker threads."""

    engine: sa.Engine
    audit_key: bytes
    owned: bool = False  # made for this Database: disposed by close()
    dialect_name: str = field(init=False)
    on_feed: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dialect_name = self.engine.dialect.name
        self._writer = writer(self.engine)  # SQLite: BEGIN IMMEDIATE, the database's write lock up front

    first = Statements.first
    scalar = Statements.scalar
    run = Database.run

    def _read(self, stmt: Statement, params: Mapping[str, Any] | None) -> list[Row]:
        with self.engine.connect() as conn:
            return _rows(conn, stmt, params)

    async def all(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> list[Row]:
        return await run_in_threadpool(self._read, stmt, params)

    def _begun(self) -> sa.Connection:
        conn = self._writer.connect()
        try:
            conn.begin()
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _end(conn: sa.Connection, *, commit: bool) -> None:
        with conn:
            if commit:
                conn.commit()
            else:
                conn.rollback()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        conn = await run_in_threadpool(self._begun)
        tx = _EngineTx(conn)
        try:
            yield tx
            await journal.write(tx, self.audit_key)
        except BaseException:
            await run_in_threadpool(self._end, conn, commit=False)
            raise
        await run_in_threadpool(self._end, conn, commit=True)
        fed(self, tx)

    def pool_stats(self) -> PoolStats:
        pool = self.engine.pool
        if not isinstance(pool, sa.QueuePool):
            return PoolStats(0, 0, 0)
        return PoolStats(pool.size(), pool.checkedout(), pool.checkedin())

    async def close(self) -> None:
        """Close the connections of an engine made for this Database; a later statement opens them again."""
        if self.owned:
            self.engine.dispose()


def create_database(target: str | sa.Engine, *, size: int, timeout: float, audit_key: bytes) -> Database:
    """The Database of a URL (or of an engine's): on PostgreSQL asyncpg, with a
    pool of `size` connections, and no engine of SQLAlchemy's; on SQLite the
    engine itself, with a pool of `size` connections. Its units of work
    journal under `audit_key`."""
    url = target.url if isinstance(target, sa.Engine) else sa.make_url(target)
    if url.get_backend_name() == "postgresql":
        return PostgresDatabase(url, size=size, timeout=timeout, audit_key=audit_key)
    if isinstance(target, sa.Engine):
        return EngineDatabase(target, audit_key)
    engine = create_db_engine(target, pool_size=size, pool_timeout=timeout)
    return EngineDatabase(engine, audit_key, owned=True)


@functools.cache
def one_of(column: sa.ColumnElement[Any], name: str, count: int) -> sa.ColumnElement[bool]:
    """`column IN (:name_0, ..., :name_{count-1})`, one statement shape per count (fill
    with one_of_params()): an IN list SQLAlchemy would expand per execution
    cannot be prepared once."""
    return column.in_([sa.bindparam(f"{name}_{i}", type_=column.type) for i in range(count)])


def one_of_params(name: str, values: Sequence[Any]) -> dict[str, Any]:
    return {f"{name}_{i}": value for i, value in enumerate(values)}


def one_of_chunks(name: str, values: Iterable[Any], count: int) -> Iterator[dict[str, Any]]:
    """one_of_params() for `values` in chunks of `count`, the last one padded
    with its last value: one statement shape, however many values."""
    listed = list(values)
    for start in range(0, len(listed), count):
        chunk = listed[start : start + count]
        yield one_of_params(name, chunk + [chunk[-1]] * (count - len(chunk)))


async def all_of(
    db: Statements, stmt: Statement, name: str, values: Iterable[Any], count: int, params: Mapping[str, Any]
) -> list[Row]:
    """The rows of `stmt`, which filters with one_of(column, name, count), for all of `values`."""
    rows: list[Row] = []
    for chunk in one_of_chunks(name, values, count):
        rows += await db.all(stmt, {**params, **chunk})
    return rows


def fed(db: Database, tx: Tx) -> None:
    """After `tx` committed: wake what follows the feed in this process, if it wrote to it."""
    if db.on_feed and any(change.emit_event for change in tx.changes):
        for wake in db.on_feed:
            wake()


def run_with_database(
    target: str | sa.Engine,
    work: Callable[[Database], Awaitable[T]],
    *,
    audit_key: bytes,
    size: int = 1,
    timeout: float = 5.0,
) -> T:
    """`await work(db)` on a Database of its own, from synchronous code (a
    command, a test, a benchmark); its connections are closed when the work ends."""

    async def main() -> T:
        db = create_database(target, size=size, timeout=timeout, audit_key=audit_key)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(main())
