import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import RequestModel, Text, UTCInstant

# `case.created`, or every type of a resource: `request.*`.
_EVENT_TYPE = re.compile(r"^[a-z][a-z_]{0,39}\.(\*|[a-z][a-z_]{0,39})$")


def _event_type(value: str) -> str:
    if not _EVENT_TYPE.match(value):
        raise ValueError("an event type such as 'case.created', or 'request.*' for all of a resource's")
    return value


EventTypePattern = Annotated[str, AfterValidator(_event_type)]


def matches(patterns: list[str], event_type: str) -> bool:
    """No patterns: every event. `request.*` matches `request.created`, not `request_message.created`."""
    if not patterns:
        return True
    resource = event_type.partition(".")[0]
    return any(p == event_type or p == f"{resource}.*" for p in patterns)


class DeliveryError(StrEnum):
    """Why an attempt failed; the response body is never kept."""

    http_status = "http_status"  # an answer other than 2xx (redirects are not followed)
    timeout = "timeout"
    connection = "connection"  # refused, reset, TLS failure
    unresolvable = "unresolvable"
    address_refused = "address_refused"  # the host now resolves to a non-public address


class WebhookSubscription(SQLModel, table=True):
    """An agency's webhook. `last_seq` is its cursor in the event feed: the
    last event delivered (or skipped as not visible or not wanted)."""

    __tablename__ = "webhook_subscription"
    __table_args__ = (sa.Index("ix_webhook_subscription_agency_created", "agency_id", "created_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT")
    url: str = Field(sa_type=sa.String(2000))
    event_types: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    description: str | None = Field(default=None, sa_type=sa.String(500))
    # The signing secret, AES-GCM-sealed under a key derived from the audit key.
    secret_sealed: bytes = Field(sa_type=sa.LargeBinary)
    last_seq: int = Field(default=0, sa_type=sa.BigInteger)
    failures: int = Field(default=0)  # consecutive failed attempts at the event after last_seq
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    disabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A deliverer's claim: no other deliverer takes the subscription until it expires.
    lease_token: uuid.UUID | None = None
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WebhookDelivery(SQLModel, table=True):
    """One attempt to deliver one event: never the response body."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        # The log's order; attempts of one batch may share an instant (a coarse clock).
        sa.Index(
            "ix_webhook_delivery_subscription_attempted",
            "subscription_id",
            "attempted_at",
            "event_seq",
            "attempt",
            "id",
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    subscription_id: uuid.UUID = Field(foreign_key="webhook_subscription.id", ondelete="CASCADE")
    event_seq: int = Field(sa_type=sa.BigInteger)
    event_type: str = Field(sa_type=sa.String(64))
    attempt: int
    attempted_at: datetime = Field(sa_type=UTCDateTime)
    status_code: int | None = None
    error: DeliveryError | None = Field(default=None, sa_type=str_enum(DeliveryError, "delivery_error"))
    duration_ms: int
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SubscriptionCreate(RequestModel):
    url: str = PydanticField(
        min_length=1,
        max_length=2000,
        description="https URL on a public address; it receives each event as a signed POST",
    )
    event_types: list[EventTypePattern] = PydanticField(
        default_factory=list,
        max_length=50,
        description="Exact types (`request.created`) or a resource's (`request.*`); empty: every event",
    )
    description: Annotated[str, Text(500)] | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.cyberpolice.kz/caseapi",
                    "event_types": ["request.*", "seized_item.created"],
                    "description": "KZ-MVD duty desk: urgent requests about the Kyiv call centre",
                }
            ]
        },
    )


class SubscriptionPublic(SQLModel):
    id: uuid.UUID
    agency_id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["active", "disabled"]
    last_delivered_seq: int
    consecutive_failures: int
    failing_since: UTCInstant | None
    next_attempt_at: UTCInstant | None
    disabled_at: UTCInstant | None
    created_at: UTCInstant
    version: int


class SubscriptionCreated(SubscriptionPublic):
    secret: str = PydanticField(description="Standard Webhooks signing secret (`whsec_...`); shown once")


class DeliveryPublic(SQLModel):
    id: uuid.UUID
    subscription_id: uuid.UUID
    event_seq: int
    event_type: str
    attempt: int
    attempted_at: UTCInstant
    status_code: int | None
    error: DeliveryError | None
    duration_ms: int
    next_attempt_at: UTCInstant | None
