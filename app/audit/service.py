"""The hash-chained audit trail: append under the journal lock, verify from a checkpoint.

Each entry's `hash` is an HMAC-SHA256, under the server's audit key
(app.secrets; never in the database), of its canonical content including
`prev_hash`. Someone who can write to the database but does not hold the
key can alter, drop or add entries, but cannot make them verify.

Entries written before the chain was keyed carry a plain SHA-256 of the same
content, which anyone can compute. They verify only up to the pre-key end an
operator recorded under the key (`caseapi audit reset-checkpoint
--pre-key-head`); without that record every entry must be keyed, so a chain
rewritten in the unkeyed form fails.

The checkpoint row exists from the chain's first entry on (the journal writes
it with that entry): a chain without a checkpoint whose MAC holds is a
finding, never a fresh start, as deleting the row would otherwise hide a cut
tail.
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
from app.config import get_settings
from app.db import bulk_insert, transaction, utcnow
from app.errors import AppError
from app.pagination import PageParams, paginate
from app.secrets import audit_key

if TYPE_CHECKING:
    from app.journal import Change

GENESIS = "0" * 64
_CHECKPOINT_ID = 1
# The row recording where the unkeyed, pre-key beginning of the chain ends.
_PRE_KEY_ID = 2


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
    pre_key: tuple[int, str] | None = None,
    on_entry: Callable[[HashedStored], None] | None = None,
) -> AuditVerification:
    """Walk the chain in seq order from `start` (the seq and hash of the last
    entry known good, genesis by default); the first entry that does not
    verify is named.

    Every entry must be keyed, but those up to the recorded `pre_key` end,
    which must be unkeyed and end at its hash. The entries at `checkpoint`
    and `pre_key` must carry their recorded hashes, and the chain must reach
    both: a verification once saw them.
    """
    count, prev = start
    expected_seq = count + 1
    for entry in entries:
        good = entry.seq == expected_seq and entry.prev_hash == prev
        if good and pre_key is not None and entry.seq <= pre_key[0]:
            good = entry.hash == _unkeyed_hash(entry) and (entry.seq < pre_key[0] or entry.hash == pre_key[1])
        elif good:
            good = entry.hash == entry_hash(entry, audit_key)
        if good and checkpoint is not None and entry.seq == checkpoint[0]:
            good = entry.hash == checkpoint[1]
        if not good:
            return AuditVerification(
                ok=False, entries=count, head=prev, first_bad_seq=entry.seq, reason="entry does not verify"
            )
        if on_entry is not None:
            on_entry(entry)
        count, prev, expected_seq = count + 1, entry.hash, expected_seq + 1
    reach = max(checkpoint[0] if checkpoint else 0, pre_key[0] if pre_key else 0)
    if count < reach:
        # Entries a verification once saw are gone: the chain's tail was cut.
        return AuditVerification(
            ok=False, entries=count, head=prev, first_bad_seq=count + 1, reason="entries are missing"
        )
    return AuditVerification(ok=True, entries=count, head=prev)


def _entries(
    session: Session, after: int, *where: sa.ColumnElement[bool], batch: int = 5000
) -> Iterator[Any]:
    """Every entry after seq `after` (and matching `where`), in seq order, a
    batch at a time (keyset, so memory stays flat and no server-side cursor
    is needed)."""
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    while True:
        rows = session.execute(
            sa.select(table).where(table.c.seq > after, *where).order_by(table.c.seq).limit(batch)
        ).all()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def host_entries(
    session: Session, *, after: int, case_id: uuid.UUID | None, action: str | None
) -> Iterator[Any]:
    """The whole instance's log, for the host (`caseapi audit list`), in seq order."""
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    where = [table.c.case_id == case_id] if case_id is not None else []
    if action is not None:
        where.append(table.c.action == action)
    return _entries(session, after, *where)


def _mac(audit_key: bytes, row_id: int, seq: int, hash_: str) -> str:
    label = "audit checkpoint" if row_id == _CHECKPOINT_ID else "audit pre-key end"
    return hmac.new(audit_key, f"{label} {seq} {hash_}".encode(), hashlib.sha256).hexdigest()


def _recorded(session: Session, audit_key: bytes, row_id: int) -> tuple[int, str] | bool | None:
    """The (seq, hash) of a MAC'ed row of audit_checkpoint; None when there is
    no row, False when its MAC does not hold (written without the key)."""
    row = session.get(AuditCheckpoint, row_id)
    if row is None:
        return None
    if not hmac.compare_digest(row.mac.encode(), _mac(audit_key, row_id, row.seq, row.hash).encode()):
        return False
    return row.seq, row.hash


def _record(session: Session, audit_key: bytes, row_id: int, seq: int, hash_: str) -> None:
    values = {"seq": seq, "hash": hash_, "mac": _mac(audit_key, row_id, seq, hash_), "at": utcnow()}
    table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(id=row_id, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[table.c.id], set_=values))


def first_checkpoint(dialect_name: str) -> tuple[sa.Insert, dict[str, Any]]:
    """The checkpoint at genesis, written with the chain's first entry, under
    the journal lock: from then on the row must exist. Never replaces one."""
    table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = (
        dialect.insert(table)
        .values(id=_CHECKPOINT_ID, seq=0, hash=GENESIS, mac=sa.bindparam("mac"), at=sa.bindparam("at"))
        .on_conflict_do_nothing(index_elements=[table.c.id])
    )
    return stmt, {"mac": _mac(key(), _CHECKPOINT_ID, 0, GENESIS), "at": utcnow()}


def _save_checkpoint(session: Session, audit_key: bytes, seq: int, hash_: str) -> None:
    """Store (seq, hash) unless a valid checkpoint at least as new is there
    (a concurrent verification got further)."""
    current = _recorded(session, audit_key, _CHECKPOINT_ID)
    if isinstance(current, tuple) and current[0] >= seq:
        return
    _record(session, audit_key, _CHECKPOINT_ID, seq, hash_)


def verify(
    session: Session,
    *,
    full: bool,
    on_entry: Callable[[HashedStored], None] | None = None,
    pre_key: tuple[int, str] | None = None,
    trust_checkpoint: bool = True,
) -> AuditVerification:
    """Verify the chain; reads only.

    Incremental (`full=False`): only the entries after the checkpoint are
    read. `full=True` walks from genesis, and its entry at the checkpoint
    must still carry the checkpoint's hash. A checkpoint that is missing, or
    whose MAC does not hold, is a finding: the whole chain is walked to name
    a bad entry too. `pre_key` and `trust_checkpoint=False` are for an
    operator recording new ones (reset_checkpoint()).
    """
    audit_key = key()
    if pre_key is None:
        recorded = _recorded(session, audit_key, _PRE_KEY_ID)
        pre_key = recorded if isinstance(recorded, tuple) else None
    checkpoint = _recorded(session, audit_key, _CHECKPOINT_ID) if trust_checkpoint else None
    if not isinstance(checkpoint, tuple):
        result = verify_chain(_entries(session, 0), audit_key, pre_key=pre_key, on_entry=on_entry)
        if result.ok and trust_checkpoint and (checkpoint is False or result.entries):
            missing = "missing" if checkpoint is None else "not written with the audit key"
            return result.model_copy(update={"ok": False, "reason": f"the checkpoint is {missing}"})
        return result
    start = (0, GENESIS)
    if checkpoint[0] > 0 and not full:
        # From the checkpoint's own entry, which must still be what was verified.
        seq = checkpoint[0]
        prev = session.execute(sa.select(AuditEntry.prev_hash).where(AuditEntry.seq == seq)).scalar()
        if prev is None:
            return AuditVerification(
                ok=False, entries=seq - 1, head=GENESIS, first_bad_seq=seq, reason="entries are missing"
            )
        start = (seq - 1, prev)
    return verify_chain(
        _entries(session, start[0]),
        audit_key,
        start=start,
        checkpoint=checkpoint,
        pre_key=pre_key,
        on_entry=on_entry,
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


def reset_checkpoint(engine: sa.Engine, *, pre_key_head: str | None) -> AuditVerification:
    """An operator's decision, on the host: walk the whole chain ignoring the
    checkpoint and, when it verifies, record its head as the new checkpoint.

    `pre_key_head`: the hash of the last entry written before the chain was
    keyed (as recorded then); entries up to it are accepted unkeyed, and
    where they end is recorded under the key. One transaction, so the chain
    cannot move between the walk and the record.
    """
    with transaction(engine, write=True) as session:
        pre_key = None
        if pre_key_head is not None:
            seq = session.execute(sa.select(AuditEntry.seq).where(AuditEntry.hash == pre_key_head)).scalar()
            if seq is None:
                raise AppError(404, f"no audit entry has the hash {pre_key_head}")
            pre_key = (seq, pre_key_head)
        result = verify(session, full=True, pre_key=pre_key, trust_checkpoint=False)
        if result.ok:
            audit_key = key()
            if pre_key is not None:
                _record(session, audit_key, _PRE_KEY_ID, *pre_key)
            _record(session, audit_key, _CHECKPOINT_ID, result.entries, result.head)
    return result


def list_entries(
    session: Session,
    visible: sa.ColumnElement[bool],
    params: PageParams,
    *,
    case_id: uuid.UUID | None,
    action: str | None,
) -> tuple[list[AuditEntry], str | None]:
    """One page of the entries `visible` admits (app.access.audit_entries_visible)."""
    stmt = sa.select(AuditEntry).where(visible)
    if case_id is not None:
        stmt = stmt.where(AuditEntry.case_id == case_id)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    return paginate(session, stmt, params, scope="audit", keys=(AuditEntry.seq,))
