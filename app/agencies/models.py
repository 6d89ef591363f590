import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import CountryCode, RequestModel, Text, UpdateModel, UTCInstant


class AgencyKind(StrEnum):
    police = "police"
    ministry = "ministry"
    prosecutor = "prosecutor"
    international_organization = "international_organization"
    private_company = "private_company"
    government = "government"
    other = "other"


AgencyCode = Annotated[str, Text(40, 2)]
AgencyName = Annotated[str, Text(300, 1)]


class AgencyBase(SQLModel):
    code: AgencyCode = Field(sa_type=sa.String(40), description="Unique short code, e.g. KZ-MVD")
    name: AgencyName = Field(sa_type=sa.String(300))
    country: CountryCode | None = Field(
        default=None, sa_type=sa.String(2), description="ISO 3166-1 alpha-2; null for international bodies"
    )
    kind: AgencyKind = Field(sa_type=str_enum(AgencyKind, "kind"))
    parent_id: uuid.UUID | None = Field(default=None, foreign_key="agency.id", ondelete="RESTRICT")


class Agency(AgencyBase, table=True):
    __tablename__ = "agency"
    __table_args__ = (sa.UniqueConstraint("code"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # The peer instance that hosts the agency (app.federation); None: this one.
    home_instance: str | None = Field(default=None, sa_type=sa.String(63), index=True)
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AgencyCreate(AgencyBase, RequestModel):
    pass


class AgencyUpdate(UpdateModel):
    """No parent_id: the hierarchy decides who reads AMBER cases, so no API key
    changes it (it is set at creation; the host changes it with `caseapi agency`)."""

    not_nullable = frozenset({"code", "name", "kind"})

    code: AgencyCode | None = None
    name: AgencyName | None = None
    country: CountryCode | None = None
    kind: AgencyKind | None = None


class AgencyPublic(AgencyBase):
    id: uuid.UUID
    home_instance: str | None = Field(
        default=None,
        description="The peer instance that hosts the agency (it changes there only); null: this one",
    )
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant
