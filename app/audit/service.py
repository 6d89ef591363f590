"""The hash-chained audit trail: append under the journal lock, verify end to end."""

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry, AuditVerification
from app.auth.models import Scope
from app.cases.models import Case
from app.db import bulk_insert
from app.pagination import PageParams, paginate

if TYPE_CHECKING:
    from app.auth.service import Principal
    from app.journal import Change

GENESIS = "0" * 64


def _str(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


class HashedContent(Protocol):
    """What an entry's hash covers: every field but the hash itself."""

    seq: int
    at: datetime
    agency_id: uuid.UUID | None
    client_id: uuid.UUID | None
    action: str
    resource_type: str
    resource_id: uuid.UUID | None
    case_id: uuid.UUID | None
    purpose: str | None
    prev_hash: str


class HashedStored(HashedContent, Protocol):
    hash: str


def entry_hash(entry: HashedContent) -> str:
    canonical = json.dumps(
        {
            "seq": entry.seq,
            "at": entry.at.isoformat(),
            "agency_id": _str(entry.agency_id),
            "client_id": _str(entry.client_id),
            "action": entry.action,
            "resource_type": entry.resource_type,
            "resource_id": _str(entry.resource_id),
            "case_id": _str(entry.case_id),
            "purpose": entry.purpose,
            "prev_hash": entry.prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


AUDIT_HEAD = sa.select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1).subquery()


def append_entries(
    session: Session, changes: Sequence["Change"], at: datetime, head_seq: int | None, head_hash: str | None
) -> None:
    """Called with the journal lock held and the head read under it
    (AUDIT_HEAD; None for an empty chain): the chain cannot move under us.

    Rows go in with one executemany: a bundle import records tens of
    thousands of changes, and ORM objects would cost more than the hashing.
    """
    seq, prev = head_seq or 0, head_hash or GENESIS
    rows = []
    for change in changes:
        seq += 1
        row = {
            "seq": seq,
            "at": at,
            "agency_id": change.actor.agency_id,
            "client_id": change.actor.client_id,
            "action": change.action,
            "resource_type": change.resource_type,
            "resource_id": change.resource_id,
            "case_id": change.case_id,
            "purpose": change.purpose,
            "prev_hash": prev,
        }
        row["hash"] = prev = entry_hash(SimpleNamespace(**row))  # type: ignore[arg-type]
        rows.append(row)
    bulk_insert(session, AuditEntry.__table__, rows)  # type: ignore[attr-defined]


def verify_chain(entries: Iterable[HashedStored]) -> AuditVerification:
    """Walk the chain in seq order; the first entry that does not verify is named."""
    count, prev, expected_seq = 0, GENESIS, 1
    for entry in entries:
        if entry.seq != expected_seq or entry.prev_hash != prev or entry.hash != entry_hash(entry):
            return AuditVerification(ok=False, entries=count, head=prev, first_bad_seq=entry.seq)
        count, prev, expected_seq = count + 1, entry.hash, expected_seq + 1
    return AuditVerification(ok=True, entries=count, head=prev)


def _all_entries(session: Session, batch: int = 5000) -> Iterator[sa.Row[Any]]:
    """Every entry in seq order, a batch at a time (keyset, so memory stays flat
    and no server-side cursor is needed)."""
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    after = None
    while True:
        stmt = sa.select(table).order_by(table.c.seq).limit(batch)
        if after is not None:
            stmt = stmt.where(table.c.seq > after)
        rows = session.execute(stmt).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def verify(session: Session) -> AuditVerification:
    return verify_chain(_all_entries(session))


def list_entries(
    session: Session,
    p: "Principal",
    params: PageParams,
    *,
    case_id: uuid.UUID | None,
    action: str | None,
) -> tuple[list[AuditEntry], str | None]:
    stmt = sa.select(AuditEntry)
    if not p.has(Scope.admin):
        led = sa.select(Case.id).where(Case.lead_agency_id == p.agency_id)
        stmt = stmt.where(sa.or_(AuditEntry.agency_id == p.agency_id, AuditEntry.case_id.in_(led)))
    if case_id is not None:
        stmt = stmt.where(AuditEntry.case_id == case_id)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    return paginate(session, stmt, params, scope="audit", keys=(AuditEntry.seq,))
