"""Imports every table so that SQLModel.metadata is complete (Alembic, tests)."""

from app.agencies.models import Agency
from app.attachments.models import Attachment
from app.audit.models import AuditEntry
from app.auth.models import ApiClient
from app.cases.models import Case
from app.detainees.models import Detainee
from app.events.models import Event
from app.evidence.models import CustodyEvent, SeizedItem
from app.idempotency.models import IdempotencyRecord
from app.locations.models import Location
from app.participants.models import Participant
from app.requests.models import InformationRequest, RequestMessage

__all__ = [
    "Agency",
    "ApiClient",
    "Attachment",
    "AuditEntry",
    "Case",
    "CustodyEvent",
    "Detainee",
    "Event",
    "IdempotencyRecord",
    "InformationRequest",
    "Location",
    "Participant",
    "RequestMessage",
    "SeizedItem",
]
