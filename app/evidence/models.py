import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
from pydantic import StrictInt
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import LongText, MultilineText, PastInstant, RequestModel, Sha256, UpdateModel, UTCInstant


class Category(StrEnum):
    computer = "computer"
    mobile_phone = "mobile_phone"
    sim_card = "sim_card"
    storage_media = "storage_media"
    database = "database"
    document = "document"
    cash = "cash"
    crypto_asset = "crypto_asset"
    vehicle = "vehicle"
    other = "other"


class ItemStatus(StrEnum):
    seized = "seized"
    under_examination = "under_examination"
    transferred = "transferred"
    returned = "returned"
    destroyed = "destroyed"


class CustodyAction(StrEnum):
    seized = "seized"
    transferred = "transferred"
    examined = "examined"
    returned = "returned"
    destroyed = "destroyed"


Description = Annotated[str, MultilineText(2000, 1)]
# A JSON number, not a string that looks like one; bounded below by the field
# limits so that it fits every database's integer.
Quantity = StrictInt


class SeizedItemBase(SQLModel):
    category: Category = Field(sa_type=str_enum(Category, "category"))
    description: Description = Field(sa_type=sa.String(2000))
    quantity: Quantity | None = Field(
        default=None, ge=1, le=1_000_000_000, description="null when the count is unknown"
    )
    location_id: uuid.UUID | None = Field(default=None, foreign_key="location.id", ondelete="RESTRICT")
    seized_at: PastInstant | None = Field(default=None, sa_type=UTCDateTime)
    sha256: Sha256 | None = Field(
        default=None, sa_type=sa.String(64), description="Digest of digital evidence, 64 lowercase hex"
    )


class SeizedItem(SeizedItemBase, table=True):
    __tablename__ = "seized_item"
    __table_args__ = (
        sa.Index("ix_seized_item_case_id_created_at_id", "case_id", "created_at", "id"),
        sa.CheckConstraint("quantity IS NULL OR quantity >= 1", name="quantity_positive"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="case.id", ondelete="RESTRICT")
    # Null only where the source does not say who seized or holds the item.
    seized_by_agency_id: uuid.UUID | None = Field(default=None, foreign_key="agency.id", ondelete="RESTRICT")
    custodian_agency_id: uuid.UUID | None = Field(default=None, foreign_key="agency.id", ondelete="RESTRICT")
    status: ItemStatus = Field(default=ItemStatus.seized, sa_type=str_enum(ItemStatus, "status"))
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SeizedItemCreate(SeizedItemBase, RequestModel):
    seized_by_agency_id: uuid.UUID | None = Field(default=None, description="Defaults to the caller's agency")
    custodian_agency_id: uuid.UUID | None = Field(default=None, description="Defaults to the seizing agency")


class SeizedItemUpdate(UpdateModel):
    """Custodian and status change only through custody events."""

    not_nullable = frozenset({"category", "description"})

    category: Category | None = None
    description: Description | None = None
    quantity: Quantity | None = Field(default=None, ge=1, le=1_000_000_000)
    location_id: uuid.UUID | None = None
    seized_at: PastInstant | None = None
    sha256: Sha256 | None = None


class SeizedItemPublic(SeizedItemBase):
    id: uuid.UUID
    case_id: uuid.UUID
    seized_by_agency_id: uuid.UUID | None
    custodian_agency_id: uuid.UUID | None
    status: ItemStatus
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant


class CustodyEventBase(SQLModel):
    action: CustodyAction = Field(sa_type=str_enum(CustodyAction, "action"))
    from_agency_id: uuid.UUID | None = Field(default=None, foreign_key="agency.id", ondelete="RESTRICT")
    to_agency_id: uuid.UUID | None = Field(default=None, foreign_key="agency.id", ondelete="RESTRICT")
    at: PastInstant = Field(sa_type=UTCDateTime)
    note: LongText | None = Field(default=None, sa_type=sa.Text)


class CustodyEvent(CustodyEventBase, table=True):
    """Append-only: no route updates or deletes a row of this table."""

    __tablename__ = "custody_event"
    __table_args__ = (sa.Index("ix_custody_event_item_seq", "seized_item_id", "seq", unique=True),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    seized_item_id: uuid.UUID = Field(foreign_key="seized_item.id", ondelete="RESTRICT")
    seq: int = Field(description="Position in the item's chain, from 1")
    recorded_by_agency_id: uuid.UUID | None = Field(
        default=None, foreign_key="agency.id", ondelete="RESTRICT"
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CustodyEventCreate(CustodyEventBase, RequestModel):
    at: PastInstant | None = Field(default=None, description="Defaults to now")  # type: ignore[assignment]


class CustodyEventPublic(CustodyEventBase):
    id: uuid.UUID
    seized_item_id: uuid.UUID
    seq: int
    recorded_by_agency_id: uuid.UUID | None
    created_at: UTCInstant
