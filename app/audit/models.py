import uuid
from typing import Any

from pydantic import AwareDatetime
from sqlmodel import SQLModel


class AuditEntryPublic(SQLModel):
    seq: int
    at: AwareDatetime
    agency_id: uuid.UUID | None
    client_id: uuid.UUID | None
    action: str
    resource_type: str
    resource_id: uuid.UUID | None
    case_id: uuid.UUID | None
    purpose: str | None
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str
