import uuid
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
    # Delivery to the peer (app.federation.delivery): the feed seq up to which
    # it acknowledged what this instance sent, and the deliverer's lease and backoff.
    delivered_seq: int = Field(default=0, sa_type=sa.BigInteger)
    failures: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_token: uuid.UUID | None = None
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Receiving from the peer: the highest seq of its feed applied here, so that
    # a delivery sent again (its receipt was lost) is acknowledged, not applied twice.
    received_seq: int = Field(default=0, sa_type=sa.BigInteger)


class PeerMirror(SQLModel, table=True):
    """At a case's home: a peer that holds a mirror of the case, so that it is
    withdrawn there when the peer stops qualifying, and nobody else is told."""

    __tablename__ = "peer_mirror"

    instance_id: str = Field(foreign_key="peer.instance_id", ondelete="CASCADE", primary_key=True)
    case_id: uuid.UUID = Field(primary_key=True, index=True)
    # When the case was last sent whole; amendments follow it (app.federation.mirror).
    delivered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


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


class PeerStatus(SQLModel):
    """How delivery to a peer stands (`GET /federation/peers`, `caseapi peer list`)."""

    instance_id: str
    url: str
    thumbprint: str
    last_success_at: datetime | None = Field(description="When the peer last acknowledged a delivery")
    last_error: str | None = Field(description="Why the last delivery to it failed; null after a success")
    pending: int = Field(
        description="Changes of cases the peer mirrors, or should, not yet acknowledged by it"
    )


class PeerList(SQLModel):
    items: list[PeerStatus]
