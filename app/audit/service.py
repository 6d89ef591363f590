"""Reading and verifying the audit log (the chain itself: app.core.chain).

The checkpoint row exists from the chain's first entry on (the journal writes
it with that entry): a chain without a checkpoint whose MAC holds is a
finding, never a fresh start, as deleting the row would otherwise hide a cut
tail.
"""

import functools
import hmac
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app import access
from app.auth.models import Scope
from app.auth.service import Principal
from app.core.chain import CHECKPOINT_ID, GENESIS, PRE_KEY_ID, HashedStored, mac, verify_chain
from app.core.db import table_of, utcnow
from app.core.errors import AppError
from app.core.pagination import PageParams, keyset, read_page
from app.core.records import AuditCheckpoint, AuditEntry, AuditVerification
from app.core.uow import Database, Row, Statements, Tx

ENTRIES = table_of(AuditEntry)
CHECKPOINTS = table_of(AuditCheckpoint)
KEYS = (ENTRIES.c.seq,)
# Entries read per round trip by a walk of the chain: memory stays flat.
BATCH = 5000

_HEAD_SEQ = sa.select(sa.func.coalesce(sa.func.max(ENTRIES.c.seq), 0))


async def head_seq(db: Statements) -> int:
    """The newest entry's seq: the chain's length when it is intact."""
    return int(await db.scalar(_HEAD_SEQ))


@functools.cache
def _batch_statement(*, case: bool, action: bool) -> sa.Select[Any]:
    stmt = sa.select(ENTRIES).where(ENTRIES.c.seq > sa.bindparam("after", type_=ENTRIES.c.seq.type))
    if case:
        stmt = stmt.where(ENTRIES.c.case_id == sa.bindparam("case_id"))
    if action:
        stmt = stmt.where(ENTRIES.c.action == sa.bindparam("action"))
    return stmt.order_by(ENTRIES.c.seq).limit(sa.bindparam("batch", type_=sa.Integer))


async def _entries(
    db: Statements, after: int, *, case_id: uuid.UUID | None = None, action: str | None = None
) -> AsyncIterator[Row]:
    """Every entry after seq `after` (and of the case and action, when given),
    in seq order, a batch at a time (keyset, so memory stays flat and no
    server-side cursor is needed)."""
    stmt = _batch_statement(case=case_id is not None, action=action is not None)
    values: dict[str, Any] = {"batch": BATCH}
    if case_id is not None:
        values["case_id"] = case_id
    if action is not None:
        values["action"] = action
    while True:
        rows = await db.all(stmt, values | {"after": after})
        for row in rows:
            yield row
        if len(rows) < BATCH:
            return
        after = rows[-1].seq


def host_entries(
    db: Statements, *, after: int, case_id: uuid.UUID | None, action: str | None
) -> AsyncIterator[Row]:
    """The whole instance's log, for the host (`caseapi audit list`), in seq order."""
    return _entries(db, after, case_id=case_id, action=action)


_CHECKPOINT = sa.select(CHECKPOINTS).where(CHECKPOINTS.c.id == sa.bindparam("row_id"))
_CHECKPOINT_LOCKED = _CHECKPOINT.with_for_update()


async def _recorded(
    db: Statements, audit_key: bytes, row_id: int, *, for_update: bool = False
) -> tuple[int, str] | bool | None:
    """The (seq, hash) of a MAC'ed row of audit_checkpoint; None when there is
    no row, False when its MAC does not hold (written without the key)."""
    row = await db.first(_CHECKPOINT_LOCKED if for_update else _CHECKPOINT, {"row_id": row_id})
    if row is None:
        return None
    if not hmac.compare_digest(row.mac.encode(), mac(audit_key, row_id, row.seq, row.hash).encode()):
        return False
    return row.seq, row.hash


@functools.cache
def _upsert_checkpoint(dialect_name: str) -> sa.Executable:
    """INSERT of a row of audit_checkpoint that replaces the one with its id."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    columns = ("seq", "hash", "mac", "at")
    stmt = dialect.insert(CHECKPOINTS).values(
        id=sa.bindparam("row_id", type_=CHECKPOINTS.c.id.type),
        **{name: sa.bindparam(name, type_=CHECKPOINTS.c[name].type) for name in columns},
    )
    upsert: sa.Executable = stmt.on_conflict_do_update(
        index_elements=[CHECKPOINTS.c.id], set_={name: stmt.excluded[name] for name in columns}
    )
    return upsert


async def _record(tx: Tx, audit_key: bytes, row_id: int, seq: int, hash_: str) -> None:
    values = {"seq": seq, "hash": hash_, "mac": mac(audit_key, row_id, seq, hash_), "at": utcnow()}
    await tx.execute(_upsert_checkpoint(tx.dialect_name), {"row_id": row_id, **values})


async def _save_checkpoint(tx: Tx, audit_key: bytes, seq: int, hash_: str) -> None:
    """Store (seq, hash) unless a valid checkpoint at least as new is there
    (a concurrent verification got further)."""
    current = await _recorded(tx, audit_key, CHECKPOINT_ID, for_update=True)
    if isinstance(current, tuple) and current[0] >= seq:
        return
    await _record(tx, audit_key, CHECKPOINT_ID, seq, hash_)


_PREV_HASH = sa.select(ENTRIES.c.prev_hash).where(ENTRIES.c.seq == sa.bindparam("seq"))
_SEQ_OF_HASH = sa.select(ENTRIES.c.seq).where(ENTRIES.c.hash == sa.bindparam("hash"))


async def verify(
    db: Statements,
    audit_key: bytes,
    *,
    full: bool,
    on_entry: Callable[[HashedStored], None] | None = None,
    pre_key: tuple[int, str] | None = None,
    trust_checkpoint: bool = True,
) -> AuditVerification:
    """Verify the chain, keyed under `audit_key`; reads only.

    Incremental (`full=False`): only the entries after the checkpoint are
    read. `full=True` walks from genesis, and its entry at the checkpoint
    must still carry the checkpoint's hash. A checkpoint that is missing, or
    whose MAC does not hold, is a finding: the whole chain is walked to name
    a bad entry too. `pre_key` and `trust_checkpoint=False` are for an
    operator recording new ones (reset_checkpoint()).
    """
    if pre_key is None:
        recorded = await _recorded(db, audit_key, PRE_KEY_ID)
        pre_key = recorded if isinstance(recorded, tuple) else None
    checkpoint = await _recorded(db, audit_key, CHECKPOINT_ID) if trust_checkpoint else None
    if not isinstance(checkpoint, tuple):
        result = await verify_chain(_entries(db, 0), audit_key, pre_key=pre_key, on_entry=on_entry)
        if result.ok and trust_checkpoint and (checkpoint is False or result.entries):
            missing = "missing" if checkpoint is None else "not written with the audit key"
            return result.model_copy(update={"ok": False, "reason": f"the checkpoint is {missing}"})
        return result
    start = (0, GENESIS)
    if checkpoint[0] > 0 and not full:
        # From the checkpoint's own entry, which must still be what was verified.
        seq = checkpoint[0]
        prev = await db.scalar(_PREV_HASH, {"seq": seq})
        if prev is None:
            return AuditVerification(
                ok=False, entries=seq - 1, head=GENESIS, first_bad_seq=seq, reason="entries are missing"
            )
        start = (seq - 1, prev)
    return await verify_chain(
        _entries(db, start[0]),
        audit_key,
        start=start,
        checkpoint=checkpoint,
        pre_key=pre_key,
        on_entry=on_entry,
    )


async def check(
    db: Database, *, full: bool, on_entry: Callable[[HashedStored], None] | None = None
) -> AuditVerification:
    """verify() on reads outside any transaction, then a good result's head
    saved as the checkpoint in a short unit of work: a long walk never holds
    writers back (SQLite has one write lock for the whole database). The
    chain is only appended to, so entries committed during the walk are
    verified as they are read."""
    result = await verify(db, db.audit_key, full=full, on_entry=on_entry)
    if result.ok and result.entries:
        async with db.transaction() as tx:
            await _save_checkpoint(tx, db.audit_key, result.entries, result.head)
    return result


async def reset_checkpoint(tx: Tx, audit_key: bytes, *, pre_key_head: str | None) -> AuditVerification:
    """An operator's decision, on the host: walk the whole chain ignoring the
    checkpoint and, when it verifies, record its head as the new checkpoint.

    `pre_key_head`: the hash of the last entry written before the chain was
    keyed (as recorded then); entries up to it are accepted unkeyed, and
    where they end is recorded under the key. One unit of work, so the chain
    cannot move between the walk and the record.
    """
    pre_key = None
    if pre_key_head is not None:
        seq = await tx.scalar(_SEQ_OF_HASH, {"hash": pre_key_head})
        if seq is None:
            raise AppError(404, f"no audit entry has the hash {pre_key_head}")
        pre_key = (seq, pre_key_head)
    result = await verify(tx, audit_key, full=True, pre_key=pre_key, trust_checkpoint=False)
    if result.ok:
        if pre_key is not None:
            await _record(tx, audit_key, PRE_KEY_ID, *pre_key)
        await _record(tx, audit_key, CHECKPOINT_ID, result.entries, result.head)
    return result


@functools.cache
def _list_statement(*, admin: bool, case: bool, action: bool, after: bool) -> sa.Select[Any]:
    stmt = sa.select(ENTRIES).where(access.audit_entries_visible(admin=admin))
    if case:
        stmt = stmt.where(ENTRIES.c.case_id == sa.bindparam("case_id"))
    if action:
        stmt = stmt.where(ENTRIES.c.action == sa.bindparam("action"))
    return keyset(stmt, keys=KEYS, after=after)


async def list_entries(
    db: Statements,
    p: Principal,
    params: PageParams,
    *,
    case_id: uuid.UUID | None,
    action: str | None,
) -> tuple[list[Row], str | None]:
    """One page of the entries the caller reads (app.access.audit_entries_visible)."""
    stmt = _list_statement(
        admin=p.has(Scope.admin),
        case=case_id is not None,
        action=action is not None,
        after=bool(params.cursor),
    )
    values = access.principal_params(p)
    if case_id is not None:
        values["case_id"] = case_id
    if action is not None:
        values["action"] = action
    return await read_page(db, stmt, values, params, scope="audit", keys=KEYS)
