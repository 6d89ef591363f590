import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime, str_enum, utcnow
from app.types import LongText, Ordering, PastInstant, RequestModel, ShortText, Text, UpdateModel, UTCInstant


class CaseStatus(StrEnum):
    open = "open"
    active = "active"
    suspended = "suspended"
    closed = "closed"


class HandlingCode(StrEnum):
    """FIRST Traffic Light Protocol 2.0."""

    red = "TLP:RED"
    amber_strict = "TLP:AMBER+STRICT"
    amber = "TLP:AMBER"
    green = "TLP:GREEN"
    clear = "TLP:CLEAR"


Reference = Text(100, 1)
Title = Text(300, 1)
Tags = list[ShortText]  # type: ignore[valid-type]
CASE_ORDER: Ordering = (("opened_at", "closed_at"),)


class CaseBase(SQLModel):
    reference: Reference = Field(sa_type=sa.String(100), description="Unique case reference")
    title: Title = Field(sa_type=sa.String(300))
    summary: LongText | None = Field(default=None, sa_type=sa.Text)
    status: CaseStatus = Field(default=CaseStatus.open, sa_type=str_enum(CaseStatus, "status"))
    handling_code: HandlingCode = Field(
        default=HandlingCode.amber, sa_type=str_enum(HandlingCode, "handling_code")
    )
    offence_types: Tags = Field(default_factory=list, sa_type=sa.JSON, max_length=50)
    modus_operandi: Tags = Field(default_factory=list, sa_type=sa.JSON, max_length=50)
    victim_regions: Tags = Field(
        default_factory=list,
        sa_type=sa.JSON,
        max_length=50,
        description="Countries (ISO 3166-1 alpha-2) or regions such as EU and CIS",
    )
    opened_at: PastInstant | None = Field(default=None, sa_type=UTCDateTime)
    closed_at: PastInstant | None = Field(default=None, sa_type=UTCDateTime)


class Case(CaseBase, table=True):
    __tablename__ = "case"
    __table_args__ = (
        sa.UniqueConstraint("reference"),
        sa.Index("ix_case_created_at_id", "created_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    lead_agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT", index=True)
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CaseCreate(CaseBase, RequestModel):
    ordering = CASE_ORDER


class CaseUpdate(UpdateModel):
    ordering = CASE_ORDER
    not_nullable = frozenset(
        {"reference", "title", "status", "handling_code", "offence_types", "modus_operandi", "victim_regions"}
    )

    reference: Reference | None = None
    title: Title | None = None
    summary: LongText | None = None
    status: CaseStatus | None = None
    handling_code: HandlingCode | None = None
    offence_types: Tags | None = Field(default=None, max_length=50)
    modus_operandi: Tags | None = Field(default=None, max_length=50)
    victim_regions: Tags | None = Field(default=None, max_length=50)
    opened_at: PastInstant | None = None
    closed_at: PastInstant | None = None


class CasePublic(CaseBase):
    id: uuid.UUID
    lead_agency_id: uuid.UUID
    access: Literal["full", "summary"] = Field(
        description="`summary`: the caller sees this case's own fields only (TLP:GREEN/CLEAR)"
    )
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant


class CaseSummary(SQLModel):
    case_id: uuid.UUID
    locations: int
    seized_items: dict[str, "CategoryCount"]
    detainees: dict[str, int]


class CategoryCount(SQLModel):
    items: int = Field(description="Seized-item records in this category")
    quantity: int = Field(description="Sum of the known quantities")
    unknown_quantity: int = Field(description="Records whose quantity is unknown")


CaseSummary.model_rebuild()
