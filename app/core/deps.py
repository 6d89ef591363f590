"""The database as FastAPI dependencies: how a route gets its unit of work."""

from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request

from app.core.binder import lean_dependency
from app.core.db import Rows
from app.core.journal import Change
from app.core.uow import Database, Statement, Tx

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _database(request: Request) -> Database:
    return request.app.state.database  # type: ignore[no-any-return]


async def _unit(request: Request) -> AsyncIterator[Tx]:
    """The request's unit of work, committed (with its journal) before the
    response is sent, so that a failed commit is an error response, never a
    false success. A read that states a purpose may disclose personal data,
    which is journalled: it runs in a transaction too."""
    db: Database = request.app.state.database
    if request.method in SAFE_METHODS and "x-purpose" not in request.headers:
        yield _ReadOnly(db)
        return
    async with db.transaction() as tx:
        yield tx


async def _write_unit(request: Request) -> AsyncIterator[Tx]:
    """_unit() that is always a transaction: for a read that is audited (an export)."""
    async with request.app.state.database.transaction() as tx:
        yield tx


# Reads outside a transaction: the hot reads, bound lean (app.core.binder).
DatabaseDep = Annotated[Database, Depends(_database)]
lean_dependency(_database, _database)
# scope="function": the unit ends (commits) before the response is sent.
UnitDep = Annotated[Tx, Depends(_unit, scope="function")]
WriteUnitDep = Annotated[Tx, Depends(_write_unit, scope="function")]


class _ReadOnly:
    """A read's unit: the database's reads, refusing to change anything."""

    def __init__(self, db: Database) -> None:
        self.dialect_name = db.dialect_name
        self.all = db.all
        self.first = db.first
        self.scalar = db.scalar

    @property
    def changes(self) -> list[Change]:
        raise RuntimeError("a read recorded a change: it needs a writing method, or WriteUnitDep")

    async def execute(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> int:
        raise RuntimeError("a read ran a write statement")

    async def insert(self, rows: Rows) -> None:
        raise RuntimeError("a read inserted rows")

    async def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        raise RuntimeError("a read inserted rows")
