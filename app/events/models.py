import uuid

from pydantic import AwareDatetime
from sqlmodel import Field, SQLModel


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
