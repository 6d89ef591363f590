"""Reading and verifying the audit log (the chain itself: app.audit.chain).

The checkpoint row exists from the chain's first entry on (the journal writes
it with that entry): a chain without a checkpoint whose MAC holds is a
finding, never a fresh start, as deleting the row would otherwise hide a cut
tail.
"""

import hmac
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.audit.chain import CHECKPOINT_ID, GENESIS, PRE_KEY_ID, HashedStored, key, mac, verify_chain
from app.audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from app.db import transaction, utcnow
from app.errors import AppError
from app.pagination import PageParams, paginate_sync


def head_seq(session: Session) -> int:
    """The newest entry's seq: the chain's length when it is intact."""
    return session.execute(sa.select(sa.func.coalesce(sa.func.max(AuditEntry.seq), 0))).scalar_one()


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


def _recorded(session: Session, audit_key: bytes, row_id: int) -> tuple[int, str] | bool | None:
    """The (seq, hash) of a MAC'ed row of audit_checkpoint; None when there is
    no row, False when its MAC does not hold (written without the key)."""
    row = session.get(AuditCheckpoint, row_id)
    if row is None:
        return None
    if not hmac.compare_digest(row.mac.encode(), mac(audit_key, row_id, row.seq, row.hash).encode()):
        return False
    return row.seq, row.hash


def _record(session: Session, audit_key: bytes, row_id: int, seq: int, hash_: str) -> None:
    values = {"seq": seq, "hash": hash_, "mac": mac(audit_key, row_id, seq, hash_), "at": utcnow()}
    table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(id=row_id, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[table.c.id], set_=values))


def _save_checkpoint(session: Session, audit_key: bytes, seq: int, hash_: str) -> None:
    """Store (seq, hash) unless a valid checkpoint at least as new is there
    (a concurrent verification got further)."""
    current = _recorded(session, audit_key, CHECKPOINT_ID)
    if isinstance(current, tuple) and current[0] >= seq:
        return
    _record(session, audit_key, CHECKPOINT_ID, seq, hash_)


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
        recorded = _recorded(session, audit_key, PRE_KEY_ID)
        pre_key = recorded if isinstance(recorded, tuple) else None
    checkpoint = _recorded(session, audit_key, CHECKPOINT_ID) if trust_checkpoint else None
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
                _record(session, audit_key, PRE_KEY_ID, *pre_key)
            _record(session, audit_key, CHECKPOINT_ID, result.entries, result.head)
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
    return paginate_sync(session, stmt, params, scope="audit", keys=(AuditEntry.seq,))
