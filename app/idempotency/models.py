import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, utcnow


class IdempotencyRecord(SQLModel, table=True):
    """A creating POST that was answered, kept to answer its repeats.

    It holds where the created resource is, never the response body: a
    repeat re-reads the resource for the caller as it may see it then, and
    personal data stays in its own record (erased there, erased everywhere).
    """

    __tablename__ = "idempotency_record"

    # No foreign key: a write a peer's agency made through its mirror is kept
    # under a client id the home derives for it (app.federation.forward).
    client_id: uuid.UUID = Field(primary_key=True)
    key: str = Field(sa_type=sa.String(200), primary_key=True)
    fingerprint: str = Field(sa_type=sa.String(64))
    status_code: int
    location: str | None = Field(default=None, sa_type=sa.String(500))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
