"""The tables the journal writes (app.core.journal): the audit log, its
checkpoint, and the event feed. Domains read them (app.audit, app.events,
app.webhooks); only the journal appends to them."""

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime


class AuditEntry(SQLModel, table=True):
    """Append-only and hash-chained: `hash` is an HMAC, under the server's
    audit key, of the entry's canonical content and `prev_hash`, so an
    altered, deleted, reordered or inserted row breaks the chain from that
    point on, and only a holder of the key can write a row that verifies."""

    __tablename__ = "audit_entry"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = Field(sa_type=UTCDateTime)
    agency_id: uuid.UUID | None = Field(default=None, index=True)
    client_id: uuid.UUID | None = None
    action: str = Field(sa_type=sa.String(64), index=True)
    resource_type: str = Field(sa_type=sa.String(40))
    resource_id: uuid.UUID | None = None
    case_id: uuid.UUID | None = Field(default=None, index=True)
    purpose: str | None = Field(default=None, sa_type=sa.String(500))
    # What a change of many rows did, e.g. a bundle import's counts and digest.
    detail: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    prev_hash: str = Field(sa_type=sa.String(64))
    hash: str = Field(sa_type=sa.String(64))


class AuditCheckpoint(SQLModel, table=True):
    """The newest entry a verification found intact (row id 1; seq 0 from
    the chain's first entry until a verification moves it), and where the
    chain's unkeyed, pre-key beginning ends, when an operator recorded one (id 2).

    `mac` is an HMAC of the row's kind, seq and hash under the audit key: the
    database alone cannot move either past a forged entry. Verification
    starts from the checkpoint, and the entry at `seq` must still carry `hash`.
    """

    __tablename__ = "audit_checkpoint"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int
    hash: str = Field(sa_type=sa.String(64))
    mac: str = Field(sa_type=sa.String(64))
    at: datetime = Field(sa_type=UTCDateTime)


class Event(SQLModel, table=True):
    """The change feed. `seq` is handed out under the journal lock, which is
    held until commit, so a higher seq is never visible before a lower one."""

    __tablename__ = "event"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    type: str = Field(sa_type=sa.String(64))
    resource_type: str = Field(sa_type=sa.String(40))
    resource_id: uuid.UUID
    case_id: uuid.UUID | None = Field(default=None, index=True)
    # The two agencies of an information request (for a webhook subscription,
    # its agency twice): only they see its events.
    request_from_agency_id: uuid.UUID | None = None
    request_to_agency_id: uuid.UUID | None = None
    # The information request of a request's, message's or message
    # attachment's event: its case, once the record itself is deleted, is the
    # case of the mirrors it must leave (app.federation.delivery).
    request_id: uuid.UUID | None = None
    # A notification (hit.received) goes to one agency only; from_agency_id
    # names the agency whose action caused it.
    recipient_agency_id: uuid.UUID | None = None
    from_agency_id: uuid.UUID | None = None
    at: datetime = Field(sa_type=UTCDateTime)


class AuditVerification(SQLModel):
    ok: bool
    entries: int
    head: str
    first_bad_seq: int | None = None
    # Why the chain does not verify: an entry, missing entries, or the checkpoint.
    reason: str | None = None
