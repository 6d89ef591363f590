"""The hot write: the write agency tools make most runs its statements on the event loop.

A search is recorded item by item, one POST /cases/{id}/seized-items each.
Through the ORM session, in a worker thread or in SQLAlchemy's asyncio
session, the Python around each of the route's statements cost several
times what the database takes to run them (the floor, bench/floor.py, is a
third of what the route took). So this route runs on a `Tx`: SQLAlchemy Core
statements, built once, whose values are all bind parameters, the same
statements and rules as the ORM's paths (app.access, app.idempotency, the
agencies' and locations' checks), in one transaction:

- PostgreSQL: each statement compiled once by SQLAlchemy for asyncpg
  (app.reads.prepare) and run on asyncpg, on a pool of its own
  (`CASEAPI_WRITE_POOL_SIZE`); the rows of several tables go in one
  statement (app.db.insert_statement). A driver's error leaves as
  SQLAlchemy's exception for it (app.reads.translated_errors), so app.errors
  answers it as it answers the ORM's: 409, 422, 503.
- SQLite: the sync engine's connection, each statement in a worker thread.

The route notes its changes on the transaction (`Tx.changes`); before COMMIT
app.journal.write() writes their audit entries and events under the same
journal lock, with the same rows, as every other write's commit.
"""

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Protocol, TypeVar

import asyncpg
import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from app import journal
from app.db import Rows, insert_into, insert_statement, writer
from app.journal import Change
from app.reads import LOST, AsyncpgPools, Row, Statements, translated_errors

T = TypeVar("T")


class Tx(Statements, Protocol):
    """One transaction of the hot write."""

    dialect_name: str
    changes: list[Change]  # journalled before COMMIT

    async def execute(self, stmt: sa.ClauseElement, params: Mapping[str, Any] | None = None) -> None: ...

    async def insert(self, rows: Rows) -> None:
        """Insert rows (all columns of each) into several tables: on PostgreSQL in one round trip."""
        ...


Work = Callable[[Tx], Awaitable[T]]


class Writes(Protocol):
    async def run(self, work: Work[T]) -> T:
        """`await work(tx)` in one transaction, committed with its journal; rolled back if it raises."""
        ...

    async def close(self) -> None: ...


class _AsyncpgTx(Tx):
    dialect_name = "postgresql"

    def __init__(self, pools: AsyncpgPools, conn: asyncpg.Connection) -> None:
        self._pools = pools
        self._conn = conn
        self.changes: list[Change] = []

    async def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Row]:
        prepared = self._pools.prepared(stmt)
        with translated_errors(prepared.sql):
            records = await self._conn.fetch(prepared.sql, *prepared.args(params or {}))
        return prepared.rows(records)

    async def execute(self, stmt: sa.ClauseElement, params: Mapping[str, Any] | None = None) -> None:
        prepared = self._pools.prepared(stmt)
        with translated_errors(prepared.sql):
            await self._conn.execute(prepared.sql, *prepared.args(params or {}))

    async def insert(self, rows: Rows) -> None:
        if rows := [(table, table_rows) for table, table_rows in rows if table_rows]:
            await self.execute(*insert_statement(rows))

    async def commit(self) -> None:
        with translated_errors("COMMIT"):
            await self._conn.execute("COMMIT")


class PostgresWrites(AsyncpgPools):
    def __init__(self, url: sa.URL, *, size: int, timeout: float) -> None:
        super().__init__(url, name="caseapi writes", size=size, timeout=timeout)

    async def run(self, work: Work[T]) -> T:
        pool, conn = await self._begun()
        try:
            tx = _AsyncpgTx(self, conn)
            try:
                result = await work(tx)
                await journal.write(tx)
                await tx.commit()
            except BaseException:
                await _roll_back(conn)
                raise
            return result
        finally:
            await pool.release(conn)

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


async def _roll_back(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        # A connection in a state we cannot know (cut mid-statement) never
        # goes back to the pool as a usable one; a lost one the pool already dropped.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()


class _EngineTx(Tx):
    """A Tx on the sync engine's connection, each statement in a worker thread (SQLite)."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self.dialect_name = conn.dialect.name
        self.changes: list[Change] = []

    def _rows(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None) -> list[Row]:
        return list(self._conn.execute(stmt, params).all())

    async def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Row]:
        return await run_in_threadpool(self._rows, stmt, params)

    def _execute(self, stmt: sa.ClauseElement, params: Mapping[str, Any] | None) -> None:
        self._conn.execute(stmt, params)  # type: ignore[call-overload]

    async def execute(self, stmt: sa.ClauseElement, params: Mapping[str, Any] | None = None) -> None:
        await run_in_threadpool(self._execute, stmt, params)

    def _insert(self, rows: Rows) -> None:
        for table, table_rows in rows:
            if table_rows:
                self._conn.execute(insert_into(table), table_rows)

    async def insert(self, rows: Rows) -> None:
        await run_in_threadpool(self._insert, rows)


class EngineWrites:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = writer(engine)  # SQLite: BEGIN IMMEDIATE, the database's write lock up front

    def _begun(self) -> sa.Connection:
        conn = self.engine.connect()
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

    async def run(self, work: Work[T]) -> T:
        conn = await run_in_threadpool(self._begun)
        tx = _EngineTx(conn)
        try:
            result = await work(tx)
            await journal.write(tx)
        except BaseException:
            await run_in_threadpool(self._end, conn, commit=False)
            raise
        await run_in_threadpool(self._end, conn, commit=True)
        return result

    async def close(self) -> None:
        return None


def create_writes(engine: sa.Engine, *, size: int, timeout: float) -> Writes:
    if engine.dialect.name == "postgresql":
        return PostgresWrites(engine.url, size=size, timeout=timeout)
    return EngineWrites(engine)


async def _writes(request: Request) -> Writes:
    return request.app.state.writes  # type: ignore[no-any-return]


WritesDep = Annotated[Writes, Depends(_writes)]
