import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, utcnow


class Scope(StrEnum):
    read = "read"
    write = "write"
    personal_data = "personal_data"
    admin = "admin"


class ApiClient(SQLModel, table=True):
    """A tool of one agency. Only the SHA-256 of its key is stored: keys are
    256-bit random secrets, so a fast hash is enough and lets a lookup use
    the index."""

    __tablename__ = "api_client"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT", index=True)
    name: str = Field(sa_type=sa.String(200))
    key_hash: str = Field(sa_type=sa.String(64), unique=True)
    scopes: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
