import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from app.cases.models import HandlingCode
from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import RequestModel, Text, UTCInstant
from app.identifiers.normalize import IdentifierKind

MAX_VALUE = 500
# IDNA's ASCII form of a host can be longer than the value as written.
MAX_NORMALIZED = 1000
MAX_HIT_ITEMS = 1000

Value = Annotated[str, Text(MAX_VALUE, 1)]
Note = Annotated[str, Text(2000)]


class IdentifierBase(SQLModel):
    kind: IdentifierKind = Field(sa_type=str_enum(IdentifierKind, "kind"))
    value: Value = Field(sa_type=sa.String(MAX_VALUE), description="As given")
    note: Note | None = Field(default=None, sa_type=sa.String(2000))


class Identifier(IdentifierBase, table=True):
    """A phone number, account, wallet, domain... found in a case.

    (kind, normalized) is what hit/no-hit searches look up across cases.
    """

    __tablename__ = "identifier"
    __table_args__ = (
        sa.Index("ix_identifier_case_id_created_at_id", "case_id", "created_at", "id"),
        sa.Index("ix_identifier_kind_normalized", "kind", "normalized"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="case.id", ondelete="RESTRICT")
    normalized: str = Field(sa_type=sa.String(MAX_NORMALIZED))
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class IdentifierCreate(IdentifierBase, RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "phone",
                    "value": "+7 701 000 00 01",
                    "note": "Number that called victims in Kazakhstan offering 'chargeback' recovery",
                }
            ]
        }
    )


class IdentifierTransfer(IdentifierCreate):
    """An identifier in a case bundle."""

    normalized: str | None = Field(
        default=None,
        max_length=MAX_NORMALIZED,
        description="As exported. An import validates and normalises it again and prefers it to "
        "`value`: a phone number written without country code is another number in another country",
    )


class IdentifierPublic(IdentifierBase):
    id: uuid.UUID
    case_id: uuid.UUID
    normalized: str
    version: int
    created_at: UTCInstant


# --- hit/no-hit ---------------------------------------------------------------------------------------


class HitItem(RequestModel):
    kind: IdentifierKind
    value: Value


class HitSearch(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"kind": "phone", "value": "+7 701 000 00 01"},
                        {"kind": "iban", "value": "KZ86 125K ZT50 0410 0100"},
                    ]
                }
            ]
        }
    )

    items: list[HitItem] = Field(min_length=1, max_length=MAX_HIT_ITEMS)
    federated: bool = Field(
        default=False, description="Ask every peer instance too, each by its own rules (federation)"
    )


# The answer of a search is plain pydantic, not SQLModel: no table stands behind it,
# and SQLModel's __init__ would run for every object of it, in every search and for
# every peer's answer a federated search reads (app.federation.hits).
class HitCase(BaseModel):
    id: uuid.UUID
    reference: str
    title: str
    handling_code: HandlingCode
    lead_agency_id: uuid.UUID


class HitIdentifier(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    kind: IdentifierKind
    normalized: str
    note: str | None


class HitMatch(BaseModel):
    access: Literal["full", "summary"] = Field(
        description="`summary`: a TLP:GREEN/CLEAR case the caller takes no part in; ask its lead to join"
    )
    case: HitCase
    identifier: HitIdentifier | None = Field(description="Only with full access to the case")
    home_instance: str | None = Field(
        default=None, description="The instance the case lives on (federation); null for this one"
    )


class HitResult(BaseModel):
    kind: IdentifierKind
    normalized: str
    hit: bool
    matches: list[HitMatch]


PeerStatus = Literal["answered", "unreachable", "timeout", "refused"]


class PeerAnswer(BaseModel):
    instance_id: str
    status: PeerStatus


class HitResults(BaseModel):
    items: list[HitResult]
    peers: list[PeerAnswer] | None = Field(
        default=None,
        description="With `federated`: every peer asked and how it answered; none is left out",
    )


# How a federating instance asks its peers (app.federation.hits): the searching
# agency, the normalised items; each item's matches on the peers, and each peer's answer.
PeerSearch = Callable[
    [Any, list[tuple[IdentifierKind, str]]],
    Awaitable[tuple[list[list[HitMatch]], list[PeerAnswer]]],
]


class HitSearchTerm(SQLModel, table=True):
    """What a search looked for, as keyed hashes: the audit entry of the search
    (resource_id = search_id) says who searched and when; an auditor holding
    the server's key can tell whether a given value was searched, and nobody
    reading the database learns the values. Kept for CASEAPI_HIT_SEARCH_RETENTION_DAYS."""

    __tablename__ = "hit_search_term"
    __table_args__ = (
        sa.Index("ix_hit_search_term_digest", "digest"),
        sa.Index("ix_hit_search_term_searched_at", "searched_at"),
    )

    search_id: uuid.UUID = Field(primary_key=True)
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: IdentifierKind = Field(sa_type=str_enum(IdentifierKind, "kind"))
    digest: str = Field(sa_type=sa.String(64), description="HMAC-SHA256 of kind and normalized value")
    searched_at: datetime = Field(sa_type=UTCDateTime)


class PendingHitNotice(SQLModel, table=True):
    """A search whose hit.received notifications are still to be sent (app.identifiers.notices).

    Every search writes one, matches or not, so that a search costs the same
    whether or not a case hidden from the searcher holds what it asked for.
    The searched values are sealed with a key the database does not hold;
    the row goes once its notifications are written.
    """

    __tablename__ = "hit_notice_pending"
    __table_args__ = (sa.Index("ix_hit_notice_pending_searched_at", "searched_at"),)

    search_id: uuid.UUID = Field(primary_key=True)
    agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT")
    searched_at: datetime = Field(sa_type=UTCDateTime)
    sealed: bytes = Field(sa_type=sa.LargeBinary, description="AES-GCM of the distinct (kind, normalized)")
