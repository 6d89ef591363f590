"""The one place every change is recorded.

Services call `record()` for each change; the session's before-commit hook
then writes the audit entries and feed events in the same transaction,
under one lock held until commit. The lock is what keeps the audit hash
chain linear and makes feed sequence numbers visible in order.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, text
from sqlalchemy.orm import Session as OrmSession

from app.audit.service import AUDIT_HEAD, append_entries
from app.db import bulk_insert, utcnow
from app.events.models import Event

_JOURNAL = "caseapi_journal"
# An arbitrary constant naming the journal lock among PostgreSQL's advisory locks.
_PG_JOURNAL_LOCK = 0x63617365


@dataclass(frozen=True)
class Actor:
    agency_id: uuid.UUID | None
    client_id: uuid.UUID | None


CLI = Actor(agency_id=None, client_id=None)


@dataclass(frozen=True)
class Change:
    actor: Actor
    action: str
    resource_type: str
    resource_id: uuid.UUID | None
    case_id: uuid.UUID | None
    purpose: str | None
    emit_event: bool
    request_parties: tuple[uuid.UUID, uuid.UUID] | None
    detail: dict[str, Any] | None = None
    notify: tuple[uuid.UUID, uuid.UUID] | None = None
    audit: bool = True


def record(
    session: OrmSession,
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
) -> None:
    """Note a change (or a disclosure, with emit_event=False) for this transaction.

    `detail` (JSON) goes into the audit entry, for a change of many rows
    that is recorded once (a bundle import). `notify` = (from agency,
    recipient agency): an event only the recipient sees (app.events.service),
    such as a hit in a case hidden from the searcher. `audit=False` for such
    notifications: an audit entry naming the hidden case would show it to the
    searching agency, which reads what it did.
    """
    session.info.setdefault(_JOURNAL, []).append(
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
        )
    )


_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def _lock(session: OrmSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_LOCK, {"k": _PG_JOURNAL_LOCK})
    # SQLite: a writing transaction already holds the database's write lock
    # (BEGIN IMMEDIATE, see app.db).


# Both heads in one round trip: the journal lock is held until commit, so
# every round trip under it is one that every other writer waits for.
_HEADS = sa.select(
    AUDIT_HEAD.c.seq,
    AUDIT_HEAD.c.hash,
    sa.select(sa.func.max(Event.seq)).scalar_subquery().label("event_seq"),
).select_from(sa.select(sa.literal(1)).subquery().outerjoin(AUDIT_HEAD, sa.true()))


def _append_events(session: OrmSession, changes: list[Change], at: datetime, last: int) -> None:
    if not changes:
        return
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
                "from_agency_id": notify[0],
                "recipient_agency_id": notify[1],
                "at": at,
            }
        )
    bulk_insert(session, Event.__table__, rows)  # type: ignore[attr-defined]


@event.listens_for(OrmSession, "before_commit")
def _write_journal(session: OrmSession) -> None:
    changes: list[Change] = session.info.pop(_JOURNAL, [])
    if not changes:
        return
    session.flush()
    _lock(session)
    heads = session.execute(_HEADS).one()
    at = utcnow()
    append_entries(session, [c for c in changes if c.audit], at, heads.seq, heads.hash)
    _append_events(session, [c for c in changes if c.emit_event], at, heads.event_seq or 0)


@event.listens_for(OrmSession, "after_rollback")
def _drop_journal(session: OrmSession) -> None:
    session.info.pop(_JOURNAL, None)
