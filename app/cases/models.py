import unicodedata
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import (
    LongText,
    Ordering,
    PastInstant,
    RequestModel,
    ShortText,
    Text,
    UpdateModel,
    UTCInstant,
)


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

    @property
    def strictness(self) -> int:
        """Higher is stricter: CLEAR 0 < GREEN < AMBER < AMBER+STRICT < RED 4."""
        return len(HandlingCode) - 1 - list(HandlingCode).index(self)


Reference = Annotated[str, Text(100, 1)]
Title = Annotated[str, Text(300, 1)]
Tags = list[ShortText]
CASE_ORDER: Ordering = (("opened_at", "closed_at"),)


class CaseBase(SQLModel):
    reference: Reference = Field(
        sa_type=sa.String(100),
        description="Unique among the lead agency's cases, ignoring case and Unicode compatibility forms",
    )
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
    share_personal_data: bool = Field(
        default=False,
        description=(
            "Whether detainees' personal data reaches the mirrors of this case on peer instances "
            "(§9); otherwise it stays home and mirrors answer it redacted. Set by the lead agency."
        ),
    )


def reference_key(reference: str) -> str:
    """The form in which two references are the same one: NFKC and case-folded
    (Unicode's NFKC_Casefold), so `REF-1`, `ref-1` and `REF-1` in full-width letters
    are one reference. Case folding can undo NFKC, hence the second pass."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", reference).casefold())


def search_text(reference: str, title: str, summary: str | None) -> str:
    """What `q=` searches: reference, title and summary, case-folded in Python.

    Stored rather than folded by the database at query time: SQLite's
    lower() and LIKE fold ASCII only, so `q=киеве` would miss "Киеве".
    """
    return "\n".join((reference, title, summary or "")).casefold()


class Case(CaseBase, table=True):
    __tablename__ = "case"
    __table_args__ = (
        # References are the lead agency's own numbering: unique per lead, never
        # across agencies (a refusal would tell one agency another's references).
        sa.Index("ux_case_lead_agency_id_reference_key", "lead_agency_id", "reference_key", unique=True),
        sa.Index("ix_case_created_at_id", "created_at", "id"),
        # A trigram index answers `search_text LIKE '%...%'` without reading
        # the table (a q= that matches nothing costs an index probe).
        sa.Index(
            "ix_case_search_text_trgm",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
            info={"only_on": "postgresql"},  # migrations/env.py
        ).ddl_if(dialect="postgresql"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    lead_agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT", index=True)
    # Kept from the reference (derived_columns()) by every statement that writes a case.
    reference_key: str = Field(default="", sa_type=sa.String(400))
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    search_text: str = Field(default="", sa_type=sa.Text, description="search_text() of the case, for q=")
    # Set when the case was imported from a bundle (app.bundles): the digest of
    # the document, and what it claimed about where it came from. The ids may
    # name another instance's rows, hence no foreign keys.
    origin_bundle_sha256: str | None = Field(default=None, sa_type=sa.String(64))
    origin_case_id: uuid.UUID | None = None
    origin_lead_agency_id: uuid.UUID | None = None
    origin_exported_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Set on a mirror (app.federation): the peer instance the case lives on.
    home_instance: str | None = Field(default=None, sa_type=sa.String(63), index=True)


class CaseOrigin(SQLModel):
    """Where an imported case came from, as its bundle claimed: nothing here is
    vouched for by this instance but the digest of the document imported."""

    bundle_sha256: str = Field(description="SHA-256 of the imported document, as in the import's audit entry")
    case_id: uuid.UUID | None = Field(description="The case's id where it was exported")
    lead_agency_id: uuid.UUID | None = Field(description="Its lead agency there")
    exported_at: UTCInstant | None = Field(description="When it was exported")


def origin_of(case: Any) -> CaseOrigin | None:
    """The origin of a case row (a row of its columns); None unless imported."""
    if case.origin_bundle_sha256 is None:
        return None
    return CaseOrigin.model_construct(
        bundle_sha256=case.origin_bundle_sha256,
        case_id=case.origin_case_id,
        lead_agency_id=case.origin_lead_agency_id,
        exported_at=case.origin_exported_at,
    )


def derived_columns(reference: str, title: str, summary: str | None) -> dict[str, str]:
    """The columns kept from a case's reference, title and summary: every
    statement that writes those writes these too."""
    return {"reference_key": reference_key(reference), "search_text": search_text(reference, title, summary)}


class CaseCreate(CaseBase, RequestModel):
    ordering = CASE_ORDER


class CaseUpdate(UpdateModel):
    ordering = CASE_ORDER
    not_nullable = frozenset(
        {
            "reference",
            "title",
            "status",
            "handling_code",
            "offence_types",
            "modus_operandi",
            "victim_regions",
            "share_personal_data",
        }
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
    share_personal_data: bool | None = None


class CasePublic(CaseBase):
    id: uuid.UUID
    lead_agency_id: uuid.UUID
    access: Literal["full", "summary"] = Field(
        description="`summary`: the caller sees this case's own fields only (TLP:GREEN/CLEAR)"
    )
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant
    origin: CaseOrigin | None = Field(
        default=None, description="Set on a case imported from a bundle: what the bundle claimed"
    )
    home_instance: str | None = Field(
        default=None,
        description="The peer instance this case lives on, when this is a mirror of it; null at home",
    )


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
