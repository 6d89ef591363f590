import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import RequestModel, UpdateModel, UTCInstant


class Role(StrEnum):
    lead = "lead"
    partner = "partner"
    observer = "observer"


class Participant(SQLModel, table=True):
    __tablename__ = "participant"
    __table_args__ = (
        # Exactly one lead per case.
        sa.Index(
            "uq_participant_one_lead",
            "case_id",
            unique=True,
            sqlite_where=sa.text("role = 'lead'"),
            postgresql_where=sa.text("role = 'lead'"),
        ),
    )

    case_id: uuid.UUID = Field(foreign_key="case.id", ondelete="CASCADE", primary_key=True)
    agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT", primary_key=True, index=True)
    role: Role = Field(sa_type=str_enum(Role, "role"))
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ParticipantCreate(RequestModel):
    agency_id: uuid.UUID
    role: Role


class ParticipantUpdate(UpdateModel):
    not_nullable = frozenset({"role"})

    role: Role | None = None


class ParticipantPublic(SQLModel):
    case_id: uuid.UUID
    agency_id: uuid.UUID
    agency_code: str
    role: Role
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant
