"""The hash-chained audit trail: append under the journal lock, verify from a checkpoint.

Each entry's `hash` is an HMAC-SHA256, under the server's audit key
(app.secrets; never in the database), of its canonical content including
`prev_hash`. Someone who can write to the database but does not hold the
key can alter, drop or add entries, but cannot make them verify.

Entries written before the chain was keyed carry a plain SHA-256 of the same
content. They are accepted only as the chain's beginning: once an entry is
keyed, every later one must be, so a row appended straight into the
database fails whichever way it is hashed.
"""

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from app.auth.models import Scope
from app.cases.models import Case
from app.config import get_settings
from app.db import bulk_insert, transaction, utcnow
from app.pagination import PageParams, paginate
from app.secrets import audit_key

if TYPE_CHECKING:
    from app.auth.service import Principal
    from app.journal import Change

GENESIS = "0" * 64
_CHECKPOINT_ID = 1


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
    detail: dict[str, Any] | None
    prev_hash: str


class HashedStored(HashedContent, Protocol):
    hash: str


def _canonical(entry: HashedContent) -> bytes:
    content: dict[str, Any] = {
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
    }
    # Only when present, so that entries from before the field keep their hashes.
    if entry.detail is not None:
        content["detail"] = entry.detail
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def key() -> bytes:
    """The chain's HMAC key, from this process's settings (app.secrets)."""
    return audit_key(get_settings())


def entry_hash(entry: HashedContent, audit_key: bytes) -> str:
    return hmac.new(audit_key, _canonical(entry), hashlib.sha256).hexdigest()


def _unkeyed_hash(entry: HashedContent) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


AUDIT_HEAD = sa.select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1).subquery()


def head_seq(session: Session) -> int:
    """The newest entry's seq: the chain's length when it is intact."""
    return session.execute(sa.select(sa.func.coalesce(sa.func.max(AuditEntry.seq), 0))).scalar_one()


def entry_rows(
    changes: Sequence["Change"], at: datetime, head_seq: int | None, head_hash: str | None
) -> list[dict[str, Any]]:
    """The chain's next entries, hashed: rows of audit_entry after the head
    (seq and hash; None for an empty chain), which must have been read under
    the journal lock (AUDIT_HEAD), so that the chain cannot move under us."""
    audit_key = key()
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
            "detail": change.detail,
            "prev_hash": prev,
        }
        row["hash"] = prev = entry_hash(SimpleNamespace(**row), audit_key)  # type: ignore[arg-type]
        rows.append(row)
    return rows


def append_entries(
    session: Session, changes: Sequence["Change"], at: datetime, head_seq: int | None, head_hash: str | None
) -> None:
    """entry_rows(), inserted in the session's transaction."""
    bulk_insert(session, AuditEntry.__table__, entry_rows(changes, at, head_seq, head_hash))  # type: ignore[attr-defined]


def verify_chain(
    entries: Iterable[HashedStored],
    audit_key: bytes,
    *,
    start: tuple[int, str] = (0, GENESIS),
    checkpoint: tuple[int, str] | None = None,
    on_entry: Callable[[HashedStored], None] | None = None,
) -> AuditVerification:
    """Walk the chain in seq order from `start` (the seq and hash of the last
    entry known good, genesis by default); the first entry that does not
    verify is named.

    Unkeyed entries are accepted only before the first keyed one and up to
    the `checkpoint` entry (whose hash must be the checkpoint's): they are
    the chain's beginning, written before it was keyed.
    """
    count, prev = start
    expected_seq, keyed = count + 1, False
    for entry in entries:
        good = entry.seq == expected_seq and entry.prev_hash == prev
        if good and entry.hash == entry_hash(entry, audit_key):
            keyed = True
        elif good:
            good = not keyed and entry.hash == _unkeyed_hash(entry)
        if good and checkpoint is not None and entry.seq == checkpoint[0]:
            good, keyed = entry.hash == checkpoint[1], True
        if not good:
            return AuditVerification(ok=False, entries=count, head=prev, first_bad_seq=entry.seq)
        if on_entry is not None:
            on_entry(entry)
        count, prev, expected_seq = count + 1, entry.hash, expected_seq + 1
    if checkpoint is not None and count < checkpoint[0]:
        # Entries a verification once saw are gone: the chain's tail was cut.
        return AuditVerification(ok=False, entries=count, head=prev, first_bad_seq=count + 1)
    return AuditVerification(ok=True, entries=count, head=prev)


def _entries(session: Session, after: int, batch: int = 5000) -> Iterator[sa.Row[Any]]:
    """Every entry after seq `after`, in seq order, a batch at a time (keyset,
    so memory stays flat and no server-side cursor is needed)."""
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    while True:
        rows = session.execute(
            sa.select(table).where(table.c.seq > after).order_by(table.c.seq).limit(batch)
        ).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def _checkpoint_mac(audit_key: bytes, seq: int, hash_: str) -> str:
    return hmac.new(audit_key, f"audit checkpoint {seq} {hash_}".encode(), hashlib.sha256).hexdigest()


def _checkpoint(session: Session, audit_key: bytes) -> tuple[int, str] | None:
    """The checkpoint (seq, hash), if its MAC holds."""
    row = session.get(AuditCheckpoint, _CHECKPOINT_ID)
    if row is None or not hmac.compare_digest(row.mac, _checkpoint_mac(audit_key, row.seq, row.hash)):
        return None
    return row.seq, row.hash


def _save_checkpoint(session: Session, audit_key: bytes, seq: int, hash_: str) -> None:
    """Store (seq, hash) unless a valid checkpoint at least as new is there
    (a concurrent verification got further); a forged one is replaced."""
    current = _checkpoint(session, audit_key)
    if current is not None and current[0] >= seq:
        return
    values = {"seq": seq, "hash": hash_, "mac": _checkpoint_mac(audit_key, seq, hash_), "at": utcnow()}
    table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(id=_CHECKPOINT_ID, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[table.c.id], set_=values))


def verify(
    session: Session,
    *,
    full: bool,
    on_entry: Callable[[HashedStored], None] | None = None,
) -> AuditVerification:
    """Verify the chain; reads only.

    Incremental (`full=False`): only the entries after the checkpoint are
    read. `full=True` walks from genesis, and its entry at the checkpoint
    must still carry the checkpoint's hash. A checkpoint whose MAC does not
    hold was not written by this server: it is ignored, so the walk starts
    at genesis.
    """
    audit_key = key()
    checkpoint = _checkpoint(session, audit_key)
    start = (0, GENESIS)
    if checkpoint is not None and not full:
        # From the checkpoint's own entry, which must still be what was verified.
        seq = checkpoint[0]
        prev = session.execute(sa.select(AuditEntry.prev_hash).where(AuditEntry.seq == seq)).scalar()
        if prev is None:
            return AuditVerification(ok=False, entries=seq - 1, head=GENESIS, first_bad_seq=seq)
        start = (seq - 1, prev)
    return verify_chain(
        _entries(session, start[0]), audit_key, start=start, checkpoint=checkpoint, on_entry=on_entry
    )


def check(
    engine: sa.Engine, *, full: bool, on_entry: Callable[[HashedStored], None] | None = None
) -> AuditVerification:
    """verify() in a reading transaction, then a good result's head saved as
    the checkpoint in a short writing one: a long walk never holds writers
    back (SQLite has one write lock for the whole database)."""
    with transaction(engine, write=False) as session:
        result = verify(session, full=full, on_entry=on_entry)
    if result.ok and result.entries:
        with transaction(engine, write=True) as session:
            _save_checkpoint(session, key(), result.entries, result.head)
    return result


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
