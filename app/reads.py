"""Hot reads: the routes agency tools poll run their statements on the event loop.

A read that goes through a worker thread and the ORM session costs several
times what the database takes to answer it (thread hand-off, session and
connection bookkeeping). The most requested reads (a case, the case list,
a case's seized items, the event feed) therefore run on `Reads`, with
SQLAlchemy Core statements built once per shape (functools.cache on the
builder), whose values are all bind parameters:

- PostgreSQL: each statement is compiled once and run on psycopg's async
  driver in autocommit, so each read sees the latest committed data, as in
  a READ COMMITTED transaction. Parameters and results pass through the
  column types' own SQLAlchemy processors, so rows hold exactly the values
  the ORM would give.
- SQLite (and PostgreSQL through another driver than psycopg): the
  statement runs on the sync engine in a worker thread (for SQLite, a local
  file: there is no round trip to save).

Everything that writes, and every other read, uses the ORM session
(app.db). Both ways share the statements and the access rules (app.access).
"""

import asyncio
import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import psycopg
import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import TupleRow
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

Row = Any  # a named tuple whose fields are the statement's selected column keys


class Reads(Protocol):
    async def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Row]: ...

    async def close(self) -> None: ...

    async def first(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None


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

# Hot statements are built once per shape (their values are bind
# parameters), so a few hundred cover every combination of filters.
_MAX_STATEMENTS = 1000


@dataclass(frozen=True)
class _Compiled:
    compiled: sa.sql.compiler.Compiled
    binds: dict[str, Processor]  # bind name -> the type's bind processor, where it has one
    results: tuple[tuple[int, Processor], ...]  # column index -> result processor
    row: type[tuple[Any, ...]]


class PostgresReads(Reads):
    """Statements compiled by SQLAlchemy, run on psycopg's async driver.

    Connections come from the pool of an async SQLAlchemy engine (in
    autocommit), which connects on demand: while the database is down a
    read fails at once (503), and reads recover as soon as it is back.
    """

    def __init__(self, engine: sa.Engine, *, size: int, timeout: float) -> None:
        self.dialect = engine.dialect
        self._url = engine.url
        self._size = size
        self._timeout = timeout
        # One engine per event loop: async connections belong to the loop
        # that opened them. A served worker has one loop; tests that drive
        # one app from several threads have one each.
        self._engines: dict[asyncio.AbstractEventLoop, AsyncEngine] = {}
        self._cache: dict[sa.Select[Any], _Compiled] = {}

    def _engine(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        engine = self._engines.get(loop)
        if engine is None:
            engine = self._engines[loop] = create_async_engine(
                self._url,
                pool_size=self._size,
                max_overflow=0,
                pool_timeout=self._timeout,
                pool_recycle=1800,
                # Autocommit: a read leaves no transaction behind to roll back.
                pool_reset_on_return=None,
                isolation_level="AUTOCOMMIT",
                connect_args={"connect_timeout": 5},
            )
        return engine

    def _prepared(self, stmt: sa.Select[Any]) -> _Compiled:
        found = self._cache.get(stmt)
        if found is None:
            if len(self._cache) >= _MAX_STATEMENTS:
                self._cache.clear()  # only statements built per request would get here
            found = self._cache[stmt] = self._prepare(stmt)
        return found

    def _prepare(self, stmt: sa.Select[Any]) -> _Compiled:
        compiled = stmt.compile(dialect=self.dialect)
        # Expanding IN lists are rendered per execution by SQLAlchemy's
        # execution context, which this path does not use.
        if "POSTCOMPILE" in compiled.string:
            raise TypeError("hot reads compare with = or tuples, not IN lists")
        binds = {}
        escaped = compiled.escaped_bind_names  # type: ignore[attr-defined]
        for bind, name in compiled.bind_names.items():  # type: ignore[attr-defined]
            proc = bind.type.bind_processor(self.dialect)
            if proc is not None:
                binds[escaped.get(name, name)] = proc
        columns = list(stmt.selected_columns)
        results = tuple(
            (i, proc)
            for i, col in enumerate(columns)
            if (proc := col.type.result_processor(self.dialect, None)) is not None
        )
        row = collections.namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]
        return _Compiled(compiled, binds, results, row)

    async def all(self, stmt: sa.Select[Any], params: Mapping[str, Any] | None = None) -> list[Row]:
        prepared = self._prepared(stmt)
        values = dict(prepared.compiled.construct_params(params) or {})
        for name, proc in prepared.binds.items():
            values[name] = proc(values[name])
        rows = await self._fetch(prepared.compiled.string, values)
        make = prepared.row._make  # type: ignore[attr-defined]
        if not prepared.results:
            return [make(r) for r in rows]
        out = []
        for r in rows:
            cells = list(r)
            for i, proc in prepared.results:
                cells[i] = proc(cells[i])
            out.append(make(cells))
        return out

    async def _fetch(self, sql: str, values: dict[str, Any]) -> list[TupleRow]:
        engine = self._engine()
        try:
            return await _run(engine, sql, values)
        except _ConnectionLost:
            # Most likely every other connection in the pool went with it (the
            # database restarted): drop them all and read again on a new one.
            # Reads are idempotent, so the retry is safe.
            await engine.dispose()
            return await _run(engine, sql, values)

    async def close(self) -> None:
        """Close this loop's connections; a later read opens them again (an app can start again)."""
        engine = self._engines.pop(asyncio.get_running_loop(), None)
        if engine is not None:
            await engine.dispose()


class _ConnectionLost(psycopg.OperationalError):
    pass


async def _run(engine: AsyncEngine, sql: str, values: dict[str, Any]) -> list[TupleRow]:
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        try:
            cursor = await driver.execute(sql, values)
            return await cursor.fetchall()
        except psycopg.OperationalError as exc:
            if not driver.broken:
                raise
            await conn.invalidate()
            raise _ConnectionLost(str(exc)) from exc


def create_reads(engine: sa.Engine, *, size: int, timeout: float) -> Reads:
    # Another PostgreSQL driver than psycopg (3) has no async twin here: it reads as SQLite does.
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return PostgresReads(engine, size=size, timeout=timeout)
    return EngineReads(engine)


async def _reads(request: Request) -> Reads:
    return request.app.state.reads  # type: ignore[no-any-return]


ReadsDep = Annotated[Reads, Depends(_reads)]
