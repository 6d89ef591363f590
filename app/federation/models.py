from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.agencies.models import AgencyPublic
from app.core.db import UTCDateTime, utcnow


class Peer(SQLModel, table=True):
    """Another caseapi instance this one trusts, set on the host only
    (`caseapi peer add`). Its key is the one whose thumbprint the operator
    confirmed when adding it; a peer's requests are verified against it."""

    __tablename__ = "peer"

    instance_id: str = Field(sa_type=sa.String(63), primary_key=True)
    url: str = Field(sa_type=sa.String(2000))
    public_key: dict[str, Any] = Field(sa_type=sa.JSON)
    thumbprint: str = Field(sa_type=sa.String(64))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_success_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=sa.String(500))


class PeerNonce(SQLModel, table=True):
    """A signed request's nonce, kept while its signature could still be
    accepted (the clock window), so that a replayed request is refused."""

    __tablename__ = "peer_nonce"

    instance_id: str = Field(foreign_key="peer.instance_id", ondelete="CASCADE", primary_key=True)
    nonce: str = Field(sa_type=sa.String(64), primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class InstanceDocument(SQLModel):
    instance_id: str
    public_key: dict[str, Any] = Field(description="The instance's Ed25519 public key as a JWK (RFC 8037)")
    thumbprint: str = Field(
        description="RFC 7638 thumbprint of the key: compare it before `caseapi peer add`"
    )


class AgencyDirectory(SQLModel):
    """The agencies an instance hosts, as it announces them to its peers."""

    instance_id: str
    items: list[AgencyPublic]
