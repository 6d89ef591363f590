"""Imports every table so that SQLModel.metadata is complete (Alembic, tests)."""

from app.agencies.models import Agency
from app.attachments.models import Attachment
from app.auth.models import ApiClient
from app.cases.models import Case
from app.core.records import AuditCheckpoint, AuditEntry, Event
from app.detainees.models import Detainee
from app.evidence.models import CustodyEvent, SeizedItem
from app.federation.models import Peer, PeerNonce
from app.idempotency.models import IdempotencyRecord
from app.identifiers.models import HitSearchTerm, Identifier, PendingHitNotice
from app.locations.models import Location
from app.participants.models import Participant
from app.requests.models import InformationRequest, RequestMessage
from app.webhooks.models import WebhookDelivery, WebhookSubscription

__all__ = [
    "Agency",
    "ApiClient",
    "Attachment",
    "AuditCheckpoint",
    "AuditEntry",
    "Case",
    "CustodyEvent",
    "Detainee",
    "Event",
    "HitSearchTerm",
    "IdempotencyRecord",
    "Identifier",
    "InformationRequest",
    "Location",
    "Participant",
    "Peer",
    "PeerNonce",
    "PendingHitNotice",
    "RequestMessage",
    "SeizedItem",
    "WebhookDelivery",
    "WebhookSubscription",
]
