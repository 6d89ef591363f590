"""A case bundle: one case and everything under it, as one JSON document.

The same model is what `GET /cases/{id}/bundle` answers and what
`POST /bundles` accepts, so an export can be imported as it is. Every part
extends the domain's Create model (unknown or read-only fields are a 422)
with the `id` that references inside the bundle use: a seized item's or
detainee's `location_id` names a location of the same bundle. Ids are only
references: an import gives every row a new id.
"""

import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, StringConstraints
from sqlmodel import Field

from app.attachments.models import control_free, media_type
from app.cases.models import CaseCreate, CaseOrigin
from app.core.types import PastInstant, RequestModel, UTCInstant
from app.detainees.models import DetaineeCreate
from app.evidence.models import CustodyEventBase, ItemStatus, SeizedItemCreate
from app.identifiers.models import IdentifierTransfer as BundleIdentifier
from app.locations.models import LocationCreate
from app.participants.models import Role

# Far above any real case; a bound keeps a hostile document from pinning the server.
MAX_ROWS = 200_000
MAX_CHAIN = 1_000


class BundleCase(CaseCreate):
    id: uuid.UUID | None = Field(default=None, description="The case's id where it was exported; not kept")
    origin: CaseOrigin | None = Field(
        default=None,
        description="Informative: where the exported case was itself imported from. An import "
        "records where its own bundle came from (`exported_from`) instead",
    )


class BundleSource(RequestModel):
    """Where and when a bundle was exported. Claims: an import keeps them as
    the new case's `origin` and vouches for none of them."""

    case_id: uuid.UUID | None = None
    lead_agency_id: uuid.UUID | None = None
    exported_at: UTCInstant | None = None


class BundleParticipant(RequestModel):
    agency_id: uuid.UUID
    role: Role


class BundleLocation(LocationCreate):
    id: uuid.UUID = Field(description="Referenced by `location_id` of items and detainees in the bundle")


class BundleCustodyEvent(CustodyEventBase, RequestModel):
    at: PastInstant
    recorded_by_agency_id: uuid.UUID | None = Field(
        default=None,
        description="Who recorded the event where it was exported; an import records the importer instead",
    )


class BundleSeizedItem(SeizedItemCreate):
    id: uuid.UUID
    seized_by_agency_id: uuid.UUID | None = Field(default=None, description="As exported; null when unknown")
    custodian_agency_id: uuid.UUID | None = Field(
        default=None, description="The current custodian: must be where the chain of custody ends"
    )
    status: ItemStatus | None = Field(
        default=None, description="Must agree with the chain of custody; derived from it when omitted"
    )
    custody: list[BundleCustodyEvent] = Field(
        min_length=1, max_length=MAX_CHAIN, description="The chain in order; the first event is `seized`"
    )


class BundleDetainee(DetaineeCreate):
    id: uuid.UUID
    detained_by_agency_id: uuid.UUID | None = Field(
        default=None, description="As exported; null when unknown"
    )
    personal_data_redacted: bool = Field(
        default=False, description="True when the export withheld full_name, date_of_birth and id_document"
    )


class BundleAttachment(RequestModel):
    """A case attachment's metadata; the bytes travel apart, if at all."""

    filename: Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(control_free)]
    content_type: Annotated[str, AfterValidator(media_type)]
    size: int = Field(ge=0, description="In bytes")
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="Of the content, in lower-case hex"
    )
    created_at: UTCInstant | None = Field(
        default=None, description="When it was attached where it was exported; an import records its own time"
    )


class Bundle(RequestModel):
    bundle_version: Literal[1]
    exported_from: BundleSource | None = Field(
        default=None, description="Set by the export; kept by an import as the new case's `origin`"
    )
    case: BundleCase
    participants: list[BundleParticipant] = Field(
        default_factory=list,
        max_length=MAX_ROWS,
        description="Informative: an import does not carry them over",
    )
    locations: list[BundleLocation] = Field(default_factory=list, max_length=MAX_ROWS)
    seized_items: list[BundleSeizedItem] = Field(default_factory=list, max_length=MAX_ROWS)
    detainees: list[BundleDetainee] = Field(default_factory=list, max_length=MAX_ROWS)
    identifiers: list[BundleIdentifier] = Field(default_factory=list, max_length=MAX_ROWS)
    attachments: list[BundleAttachment] = Field(
        default_factory=list,
        max_length=MAX_ROWS,
        description="The case's attachments in list order, without their bytes. An import attaches "
        "only a file this instance holds and the importer can already download; the others are "
        "counted as `attachments_missing` in the import's audit entry",
    )
