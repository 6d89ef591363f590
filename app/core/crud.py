"""The versioned-write pattern every changeable resource shares: rows
inserted, changed (version + 1) and deleted in a unit of work, each change
recorded in its journal."""

import collections
import functools
import uuid
from typing import Any

import sqlalchemy as sa

from app.core.db import new_row, table_of, utcnow
from app.core.journal import Actor, Change
from app.core.uow import Row, Tx


async def insert_recorded(
    tx: Tx,
    model: type[Any],
    values: dict[str, Any],
    actor: Actor,
    *,
    resource_type: str,
    case_id: uuid.UUID | None,
) -> Row:
    """Insert a new row of `model` (its fields' defaults filling what `values`
    leave out) and record its creation; the row, as a named tuple of its columns."""
    table = table_of(model)
    row = new_row(model, **values)
    await tx.insert([(table, [row])])
    tx.changes.append(Change.created(actor, resource_type, row["id"], case_id))
    return row_type(table)(**row)


@functools.cache
def row_type(table: sa.Table) -> Any:
    """The named tuple of `table`'s columns, as a statement selecting the table gives rows."""
    return collections.namedtuple(table.name, [c.key for c in table.columns])


@functools.cache
def _update_statement(table: sa.Table, names: frozenset[str]) -> sa.Update:
    values: dict[str, Any] = {
        name: sa.bindparam(f"v_{name}", type_=table.c[name].type) for name in sorted(names)
    }
    values |= {"version": table.c.version + 1, "updated_at": sa.bindparam("v_updated_at")}
    return sa.update(table).where(table.c.id == sa.bindparam("row_id")).values(values)


async def update_recorded(
    tx: Tx,
    model: type[Any],
    row: Row,
    changes: dict[str, Any],
    actor: Actor,
    *,
    resource_type: str,
    case_id: uuid.UUID | None,
    blind: frozenset[str] = frozenset(),
) -> Row:
    """Apply `changes` to `row` (a named tuple of its columns, which the caller
    has locked and whose If-Match it checked); the row as it is now. Values
    equal to the stored ones are no change: when nothing is left, the row
    keeps its version and nothing is recorded.

    A `blind` field sent is a change even when it equals the stored value:
    an unchanged ETag would confirm a guess of a value the caller may not
    read (personal data without X-Purpose)."""
    changed = {name: value for name, value in changes.items() if name in blind or getattr(row, name) != value}
    if not changed:
        return row
    at = utcnow()
    stmt = _update_statement(table_of(model), frozenset(changed))
    await tx.execute(stmt, {f"v_{k}": v for k, v in changed.items()} | {"row_id": row.id, "v_updated_at": at})
    tx.changes.append(Change(actor, f"{resource_type}.updated", resource_type, row.id, case_id))
    return row._replace(**changed, version=row.version + 1, updated_at=at)


@functools.cache
def _delete_statement(table: sa.Table) -> sa.Delete:
    return sa.delete(table).where(table.c.id == sa.bindparam("row_id"))


async def delete_recorded(
    tx: Tx, model: type[Any], row: Row, actor: Actor, *, resource_type: str, case_id: uuid.UUID | None
) -> None:
    """Delete `row` (locked by the caller) and record it."""
    await tx.execute(_delete_statement(table_of(model)), {"row_id": row.id})
    tx.changes.append(Change(actor, f"{resource_type}.deleted", resource_type, row.id, case_id))
