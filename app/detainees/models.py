import uuid
from datetime import date, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import (
    CountryCode,
    Label,
    Ordering,
    PastDate,
    PastInstant,
    RequestModel,
    ShortText,
    UpdateModel,
    UTCInstant,
)


class CustodyStatus(StrEnum):
    detained = "detained"
    in_custody = "in_custody"
    house_arrest = "house_arrest"
    released_on_bail = "released_on_bail"
    released = "released"
    extradited = "extradited"
    convicted = "convicted"


PERSONAL_FIELDS = ("full_name", "date_of_birth", "id_document")

Charges = list[ShortText]
# Born before detained; the review of a detention comes after it.
DETAINEE_ORDER: Ordering = (("date_of_birth", "detained_at"), ("detained_at", "review_due"))


class DetaineeBase(SQLModel):
    label: Label = Field(sa_type=sa.String(200), description="A non-identifying label")
    nationality: CountryCode | None = Field(default=None, sa_type=sa.String(2))
    detained_at: PastInstant | None = Field(default=None, sa_type=UTCDateTime)
    location_id: uuid.UUID | None = Field(default=None, foreign_key="location.id", ondelete="RESTRICT")
    custody_status: CustodyStatus = Field(
        default=CustodyStatus.detained, sa_type=str_enum(CustodyStatus, "custody_status")
    )
    charges: Charges = Field(default_factory=list, sa_type=sa.JSON, max_length=50)
    full_name: ShortText | None = Field(default=None, sa_type=sa.String(200))
    date_of_birth: PastDate | None = None
    id_document: ShortText | None = Field(default=None, sa_type=sa.String(200))
    review_due: date | None = Field(
        default=None,
        description="When keeping this record must next be justified; defaults to one year after detained_at",
    )


class Detainee(DetaineeBase, table=True):
    __tablename__ = "detainee"
    __table_args__ = (
        sa.Index("ix_detainee_case_id_created_at_id", "case_id", "created_at", "id"),
        sa.Index("ix_detainee_case_id_review_due", "case_id", "review_due"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="case.id", ondelete="RESTRICT")
    # Null only where the source does not say which agency detained the person.
    detained_by_agency_id: uuid.UUID | None = Field(
        default=None, foreign_key="agency.id", ondelete="RESTRICT"
    )
    review_due: date = Field()
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DetaineeCreate(DetaineeBase, RequestModel):
    ordering = DETAINEE_ORDER

    detained_by_agency_id: uuid.UUID | None = Field(
        default=None, description="Defaults to the caller's agency"
    )


class DetaineeUpdate(UpdateModel):
    ordering = DETAINEE_ORDER
    not_nullable = frozenset({"label", "custody_status", "charges", "review_due"})

    label: Label | None = None
    nationality: CountryCode | None = None
    detained_at: PastInstant | None = None
    detained_by_agency_id: uuid.UUID | None = None
    location_id: uuid.UUID | None = None
    custody_status: CustodyStatus | None = None
    charges: Charges | None = Field(default=None, max_length=50)
    full_name: ShortText | None = None
    date_of_birth: PastDate | None = None
    id_document: ShortText | None = None
    review_due: date | None = None


class DetaineePublic(DetaineeBase):
    id: uuid.UUID
    case_id: uuid.UUID
    detained_by_agency_id: uuid.UUID | None
    review_due: date
    personal_data_redacted: bool
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant
