"""The API's resources. Unknown fields a newer server adds are kept, not refused;
enumerations are plain strings for the same reason."""

import uuid
from datetime import date, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr


class Resource(BaseModel):
    """A record as the API answered it, with the ETag of that answer."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # The fields that name the record in its path, in order (see Spec.item).
    identity: ClassVar[tuple[str, ...]] = ("id",)
    _etag: str | None = PrivateAttr(default=None)

    @property
    def etag(self) -> str | None:
        """The version this copy shows; update() and delete() send it as If-Match.

        A record read by id carries the answer's ETag; one read in a list
        carries its `version`, which the API's ETag quotes (`"3"`).
        """
        if self._etag is not None:
            return self._etag
        version = getattr(self, "version", None)
        return f'"{version}"' if isinstance(version, int) else None

    def ids(self) -> tuple[str, ...]:
        return tuple(str(getattr(self, name)) for name in self.identity)


class Agency(Resource):
    id: uuid.UUID
    code: str
    name: str
    country: str | None = None
    kind: str
    parent_id: uuid.UUID | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class Case(Resource):
    id: uuid.UUID
    reference: str
    title: str
    summary: str | None = None
    status: str
    handling_code: str
    offence_types: list[str] = []
    modus_operandi: list[str] = []
    victim_regions: list[str] = []
    opened_at: datetime | None = None
    closed_at: datetime | None = None
    lead_agency_id: uuid.UUID
    access: str
    version: int
    created_at: datetime
    updated_at: datetime


class Participant(Resource):
    identity: ClassVar[tuple[str, ...]] = ("case_id", "agency_id")
    case_id: uuid.UUID
    agency_id: uuid.UUID
    agency_code: str
    role: str
    version: int
    created_at: datetime
    updated_at: datetime


class Location(Resource):
    id: uuid.UUID
    case_id: uuid.UUID
    label: str
    address: str | None = None
    city: str | None = None
    country: str | None = None
    searched_at: datetime | None = None
    searched_by_agency_id: uuid.UUID | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class SeizedItem(Resource):
    id: uuid.UUID
    case_id: uuid.UUID
    category: str
    description: str
    quantity: int | None = None
    location_id: uuid.UUID | None = None
    seized_at: datetime | None = None
    seized_by_agency_id: uuid.UUID | None = None
    custodian_agency_id: uuid.UUID | None = None
    status: str
    sha256: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class CustodyEvent(Resource):
    identity: ClassVar[tuple[str, ...]] = ("seized_item_id", "id")
    id: uuid.UUID
    seized_item_id: uuid.UUID
    seq: int
    action: str
    from_agency_id: uuid.UUID | None = None
    to_agency_id: uuid.UUID | None = None
    at: datetime
    note: str | None = None
    recorded_by_agency_id: uuid.UUID | None = None
    created_at: datetime


class Detainee(Resource):
    id: uuid.UUID
    case_id: uuid.UUID
    label: str
    nationality: str | None = None
    detained_at: datetime | None = None
    detained_by_agency_id: uuid.UUID | None = None
    location_id: uuid.UUID | None = None
    custody_status: str
    charges: list[str] = []
    full_name: str | None = None
    date_of_birth: date | None = None
    id_document: str | None = None
    personal_data_redacted: bool
    review_due: date
    version: int
    created_at: datetime
    updated_at: datetime


class InformationRequest(Resource):
    id: uuid.UUID
    from_agency_id: uuid.UUID
    to_agency_id: uuid.UUID
    case_id: uuid.UUID | None = None
    subject: str
    body: str
    priority: str
    status: str
    due_at: datetime
    overdue: bool
    version: int
    created_at: datetime
    updated_at: datetime


class Message(Resource):
    identity: ClassVar[tuple[str, ...]] = ("request_id", "id")
    id: uuid.UUID
    request_id: uuid.UUID
    from_agency_id: uuid.UUID
    body: str
    source_evaluation: str | None = None
    information_evaluation: str | None = None
    created_at: datetime


class Event(Resource):
    identity: ClassVar[tuple[str, ...]] = ("seq",)
    seq: int
    type: str
    resource_type: str
    resource_id: uuid.UUID
    case_id: uuid.UUID | None = None
    at: datetime


class AuditEntry(Resource):
    identity: ClassVar[tuple[str, ...]] = ("seq",)
    seq: int
    at: datetime
    agency_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None
    action: str
    resource_type: str
    resource_id: uuid.UUID | None = None
    case_id: uuid.UUID | None = None
    purpose: str | None = None
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    ok: bool
    entries: int
    head: str
    first_bad_seq: int | None = None


class CategoryCount(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    items: int
    quantity: int
    unknown_quantity: int


class CaseSummary(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    case_id: uuid.UUID
    locations: int
    seized_items: dict[str, CategoryCount]
    detainees: dict[str, int]


class Identifier(Resource):
    id: uuid.UUID
    case_id: uuid.UUID
    kind: str
    value: str
    normalized: str
    note: str | None = None
    version: int
    created_at: datetime


class Attachment(Resource):
    id: uuid.UUID
    case_id: uuid.UUID | None = None
    request_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    uploaded_by_agency_id: uuid.UUID
    filename: str
    content_type: str
    size: int
    sha256: str
    version: int
    created_at: datetime


class Subscription(Resource):
    id: uuid.UUID
    agency_id: uuid.UUID
    url: str
    event_types: list[str] = []
    description: str | None = None
    status: str
    last_delivered_seq: int
    consecutive_failures: int
    failing_since: datetime | None = None
    next_attempt_at: datetime | None = None
    disabled_at: datetime | None = None
    version: int
    created_at: datetime
    # Only in the answer to create(): the signing secret, shown once.
    secret: str | None = None


class Delivery(Resource):
    id: uuid.UUID
    subscription_id: uuid.UUID
    event_seq: int
    event_type: str
    attempt: int
    attempted_at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    next_attempt_at: datetime | None = None


class HitMatch(BaseModel):
    """`full`: the case and the identifier; `summary`: a TLP:GREEN/CLEAR case
    the caller takes no part in, named so that it can ask its lead to join."""

    model_config = ConfigDict(extra="allow", frozen=True)
    access: str
    case: dict[str, object]
    identifier: dict[str, object] | None = None


class HitResult(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str
    normalized: str
    hit: bool
    matches: list[HitMatch]


class PeerStatus(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    instance_id: str
    status: str


class HitResults(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    items: list[HitResult]
    # Only for a federated search: every peer asked, and how it answered.
    peers: list[PeerStatus] = []


class InstanceDocument(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    instance_id: str
    public_key: dict[str, str]
    thumbprint: str


class PeerState(BaseModel):
    """How delivery to a peer instance stands (admin)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    instance_id: str
    url: str
    thumbprint: str
    last_success_at: datetime | None = None
    last_error: str | None = None
    pending: int


class PeerList(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    items: list[PeerState]


class Health(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    status: str
