"""The audit hash chain: how entries are hashed, appended and verified.

Each entry's `hash` is an HMAC-SHA256, under the server's audit key
(app.core.secrets; never in the database), of its canonical content including
`prev_hash`. Someone who can write to the database but does not hold the
key can alter, drop or add entries, but cannot make them verify.

Entries written before the chain was keyed carry a plain SHA-256 of the same
content, which anyone can compute. They verify only up to the pre-key end an
operator recorded under the key (`caseapi audit reset-checkpoint
--pre-key-head`); without that record every entry must be keyed, so a chain
rewritten in the unkeyed form fails.

The journal (app.core.journal) appends with entry_rows() and, with the chain's
first entry, first_checkpoint(); app.audit.service reads and verifies. Each
takes the key as a parameter: it is the one the Database carries (app.core.uow),
from the settings of the app or command that made it.
"""

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterable, Callable, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.core.db import utcnow
from app.core.records import AuditCheckpoint, AuditEntry, AuditVerification

if TYPE_CHECKING:
    from app.core.journal import Change

GENESIS = "0" * 64
CHECKPOINT_ID = 1
# The row recording where the unkeyed, pre-key beginning of the chain ends.
PRE_KEY_ID = 2


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


def entry_hash(entry: HashedContent, audit_key: bytes) -> str:
    return hmac.new(audit_key, _canonical(entry), hashlib.sha256).hexdigest()


def _unkeyed_hash(entry: HashedContent) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


_ENTRIES: sa.Table = AuditEntry.__table__  # type: ignore[attr-defined]
AUDIT_HEAD = sa.select(_ENTRIES.c.seq, _ENTRIES.c.hash).order_by(_ENTRIES.c.seq.desc()).limit(1).subquery()


def entry_rows(
    changes: Sequence["Change"], at: datetime, head_seq: int | None, head_hash: str | None, audit_key: bytes
) -> list[dict[str, Any]]:
    """The chain's next entries, hashed under `audit_key`: rows of audit_entry
    after the head (seq and hash; None for an empty chain), which must have
    been read under the journal lock (AUDIT_HEAD), so that the chain cannot
    move under us."""
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
        row["hash"] = prev = entry_hash(SimpleNamespace(**row), audit_key)
        rows.append(row)
    return rows


async def verify_chain(
    entries: AsyncIterable[HashedStored],
    audit_key: bytes,
    *,
    start: tuple[int, str] = (0, GENESIS),
    checkpoint: tuple[int, str] | None = None,
    pre_key: tuple[int, str] | None = None,
    on_entry: Callable[[HashedStored], None] | None = None,
) -> AuditVerification:
    """Walk the chain in seq order from `start` (the seq and hash of the last
    entry known good, genesis by default); the first entry that does not
    verify is named. `entries` arrive as they are read (a batch at a time):
    the walk stops at a bad one, and memory stays flat however long the chain.

    Every entry must be keyed, but those up to the recorded `pre_key` end,
    which must be unkeyed and end at its hash. The entries at `checkpoint`
    and `pre_key` must carry their recorded hashes, and the chain must reach
    both: a verification once saw them.
    """
    count, prev = start
    expected_seq = count + 1
    async for entry in entries:
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


def mac(audit_key: bytes, row_id: int, seq: int, hash_: str) -> str:
    label = "audit checkpoint" if row_id == CHECKPOINT_ID else "audit pre-key end"
    return hmac.new(audit_key, f"{label} {seq} {hash_}".encode(), hashlib.sha256).hexdigest()


def first_checkpoint(dialect_name: str, audit_key: bytes) -> tuple[sa.Insert, dict[str, Any]]:
    """The checkpoint at genesis, written with the chain's first entry, under
    the journal lock: from then on the row must exist. Never replaces one."""
    table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = (
        dialect.insert(table)
        .values(id=CHECKPOINT_ID, seq=0, hash=GENESIS, mac=sa.bindparam("mac"), at=sa.bindparam("at"))
        .on_conflict_do_nothing(index_elements=[table.c.id])
    )
    return stmt, {"mac": mac(audit_key, CHECKPOINT_ID, 0, GENESIS), "at": utcnow()}
