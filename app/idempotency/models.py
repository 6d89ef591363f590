import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime, utcnow


class IdempotencyRecord(SQLModel, table=True):
    """The first response to a creating POST, kept to answer its repeats."""

    __tablename__ = "idempotency_record"

    client_id: uuid.UUID = Field(foreign_key="api_client.id", ondelete="CASCADE", primary_key=True)
    key: str = Field(sa_type=sa.String(200), primary_key=True)
    fingerprint: str = Field(sa_type=sa.String(64))
    status_code: int
    body: bytes = Field(sa_type=sa.LargeBinary)
    location: str | None = Field(default=None, sa_type=sa.String(500))
    etag: str | None = Field(default=None, sa_type=sa.String(100))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
