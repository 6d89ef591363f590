import uuid
from datetime import datetime

import sqlalchemy as sa
from pydantic import AwareDatetime
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class AuditEntry(SQLModel, table=True):
    """Append-only and hash-chained: `hash` covers the entry's canonical
    content and `prev_hash`, so an altered, deleted or reordered row breaks
    the chain from that point on."""

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
    prev_hash: str = Field(sa_type=sa.String(64))
    hash: str = Field(sa_type=sa.String(64))


class AuditEntryPublic(SQLModel):
    seq: int
    at: AwareDatetime
    agency_id: uuid.UUID | None
    client_id: uuid.UUID | None
    action: str
    resource_type: str
    resource_id: uuid.UUID | None
    case_id: uuid.UUID | None
    purpose: str | None
    prev_hash: str
    hash: str


class AuditVerification(SQLModel):
    ok: bool
    entries: int
    head: str
    first_bad_seq: int | None = None
