import uuid
from datetime import datetime

import sqlalchemy as sa
from pydantic import AwareDatetime
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class Event(SQLModel, table=True):
    """The change feed. `seq` is handed out under the journal lock, which is
    held until commit, so a higher seq is never visible before a lower one."""

    __tablename__ = "event"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    type: str = Field(sa_type=sa.String(64))
    resource_type: str = Field(sa_type=sa.String(40))
    resource_id: uuid.UUID
    case_id: uuid.UUID | None = Field(default=None, index=True)
    # The two agencies of an information request (for a webhook subscription,
    # its agency twice): only they see its events.
    request_from_agency_id: uuid.UUID | None = None
    request_to_agency_id: uuid.UUID | None = None
    # A notification (hit.received) goes to one agency only; from_agency_id
    # names the agency whose action caused it.
    recipient_agency_id: uuid.UUID | None = None
    from_agency_id: uuid.UUID | None = None
    at: datetime = Field(sa_type=UTCDateTime)


class EventPublic(SQLModel):
    seq: int
    type: str
    resource_type: str
    resource_id: uuid.UUID
    case_id: uuid.UUID | None
    from_agency_id: uuid.UUID | None = Field(
        default=None, description="hit.received: the agency whose search matched an identifier of the case"
    )
    at: AwareDatetime
