import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, utcnow
from app.core.types import CountryCode, Label, PastInstant, RequestModel, ShortText, UpdateModel, UTCInstant


class LocationBase(SQLModel):
    label: Label = Field(sa_type=sa.String(200))
    address: ShortText | None = Field(default=None, sa_type=sa.String(200))
    city: ShortText | None = Field(default=None, sa_type=sa.String(200))
    country: CountryCode | None = Field(default=None, sa_type=sa.String(2))
    searched_at: PastInstant | None = Field(default=None, sa_type=UTCDateTime)
    searched_by_agency_id: uuid.UUID | None = Field(
        default=None, foreign_key="agency.id", ondelete="RESTRICT"
    )


class Location(LocationBase, table=True):
    __tablename__ = "location"
    __table_args__ = (sa.Index("ix_location_case_id_created_at_id", "case_id", "created_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="case.id", ondelete="RESTRICT")
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LocationCreate(LocationBase, RequestModel):
    pass


class LocationUpdate(UpdateModel):
    not_nullable = frozenset({"label"})

    label: Label | None = None
    address: ShortText | None = None
    city: ShortText | None = None
    country: CountryCode | None = None
    searched_at: PastInstant | None = None
    searched_by_agency_id: uuid.UUID | None = None


class LocationPublic(LocationBase):
    id: uuid.UUID
    case_id: uuid.UUID
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant
