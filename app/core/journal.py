"""The one place every change is recorded.

Services note each change on their unit of work (`record()`); the unit of
work (app.core.uow) calls `write()` just before its COMMIT, which writes the
audit entries and feed events in the same transaction, under one lock held
until commit (with the chain's first entry, its first checkpoint:
app.core.chain). The lock is what keeps the audit hash chain linear and makes
feed sequence numbers visible in order.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import text

from app.core.chain import AUDIT_HEAD, entry_rows, first_checkpoint
from app.core.db import utcnow
from app.core.records import AuditEntry, Event

if TYPE_CHECKING:
    from app.core.uow import Tx

# An arbitrary constant naming the journal lock among PostgreSQL's advisory locks.
_PG_JOURNAL_LOCK = 0x63617365


@dataclass(frozen=True)
class Actor:
    agency_id: uuid.UUID | None
    client_id: uuid.UUID | None


CLI = Actor(agency_id=None, client_id=None)


@dataclass(frozen=True)
class Change:
    """One change (or disclosure) to journal; see record()."""

    actor: Actor
    action: str
    resource_type: str
    resource_id: uuid.UUID | None
    case_id: uuid.UUID | None
    purpose: str | None = None
    emit_event: bool = True
    request_parties: tuple[uuid.UUID, uuid.UUID] | None = None
    detail: dict[str, Any] | None = None
    notify: tuple[uuid.UUID, uuid.UUID] | None = None
    audit: bool = True
    request_id: uuid.UUID | None = None

    @classmethod
    def created(
        cls, actor: Actor, resource_type: str, resource_id: uuid.UUID, case_id: uuid.UUID | None
    ) -> "Change":
        return cls(actor, f"{resource_type}.created", resource_type, resource_id, case_id)


def record(
    tx: "Tx",
    actor: Actor,
    *,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | None,
    case_id: uuid.UUID | None,
    purpose: str | None = None,
    emit_event: bool = True,
    request_parties: tuple[uuid.UUID, uuid.UUID] | None = None,
    detail: dict[str, Any] | None = None,
    notify: tuple[uuid.UUID, uuid.UUID] | None = None,
    audit: bool = True,
    request_id: uuid.UUID | None = None,
) -> None:
    """Note a change (or a disclosure, with emit_event=False) for this transaction.

    `detail` (JSON) goes into the audit entry, for a change of many rows
    that is recorded once (a bundle import). `notify` = (from agency,
    recipient agency): an event only the recipient sees (app.events.service),
    such as a hit in a case hidden from the searcher. `audit=False` for such
    notifications: an audit entry naming the hidden case would show it to the
    searching agency, which reads what it did. `request_id`: the information
    request whose record changed (with its two agencies as request_parties).
    """
    tx.changes.append(
        Change(
            actor,
            action,
            resource_type,
            resource_id,
            case_id,
            purpose,
            emit_event,
            request_parties,
            detail,
            notify,
            audit,
            request_id,
        )
    )


_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


# Both heads in one round trip: the journal lock is held until commit, so
# every round trip under it is one that every other writer waits for.
_HEADS = sa.select(
    AUDIT_HEAD.c.seq,
    AUDIT_HEAD.c.hash,
    sa.select(sa.func.max(Event.seq)).scalar_subquery().label("event_seq"),
).select_from(sa.select(sa.literal(1)).subquery().outerjoin(AUDIT_HEAD, sa.true()))


def event_rows(changes: list[Change], at: datetime, last: int) -> list[dict[str, Any]]:
    """Rows of the feed after its last seq, which must have been read under the journal lock."""
    rows = []
    for seq, change in enumerate(changes, start=last + 1):
        assert change.resource_id is not None, "an event names its resource"
        parties = change.request_parties or (None, None)
        notify = change.notify or (None, None)
        rows.append(
            {
                "seq": seq,
                "type": change.action,
                "resource_type": change.resource_type,
                "resource_id": change.resource_id,
                "case_id": change.case_id,
                "request_from_agency_id": parties[0],
                "request_to_agency_id": parties[1],
                "request_id": change.request_id,
                "from_agency_id": notify[0],
                "recipient_agency_id": notify[1],
                "at": at,
            }
        )
    return rows


async def write(tx: "Tx", audit_key: bytes) -> None:
    """Write the audit entries (hashed under `audit_key`) and feed events of
    `tx`'s changes, just before its COMMIT: the journal lock (PostgreSQL's
    advisory lock; SQLite's writer already holds the database's), both heads,
    then the rows after them."""
    if not tx.changes:
        return
    if tx.dialect_name == "postgresql":
        await tx.execute(_PG_LOCK, {"k": _PG_JOURNAL_LOCK})
    heads = await tx.first(_HEADS)
    assert heads is not None, "_HEADS reads one row, even from empty tables"
    at = utcnow()
    entries = entry_rows([c for c in tx.changes if c.audit], at, heads.seq, heads.hash, audit_key)
    if entries and heads.seq is None:
        await tx.execute(*first_checkpoint(tx.dialect_name, audit_key))
    events = event_rows([c for c in tx.changes if c.emit_event], at, heads.event_seq or 0)
    rows = [(AuditEntry.__table__, entries), (Event.__table__, events)]  # type: ignore[attr-defined]
    if len(entries) + len(events) <= _ONE_STATEMENT_ROWS:
        await tx.insert(rows)
    else:
        for table, table_rows in rows:
            await tx.insert_many(table, table_rows)


# A request's few rows go in one statement (on PostgreSQL one round trip),
# which is built once per number of rows; a unit of work with many (a
# mirror's feed after a delivery: one event per record it changed) goes one
# prepared statement per table instead, rather than one built per count.
_ONE_STATEMENT_ROWS = 8
