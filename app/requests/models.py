import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, str_enum, utcnow
from app.core.types import MultilineText, RequestModel, Text, UTCInstant


class Priority(StrEnum):
    normal = "normal"
    urgent = "urgent"


class RequestStatus(StrEnum):
    sent = "sent"
    acknowledged = "acknowledged"
    answered = "answered"
    declined = "declined"
    withdrawn = "withdrawn"


class SourceEvaluation(StrEnum):
    """Europol 4x4: reliability of the source."""

    A = "A"
    B = "B"
    C = "C"
    X = "X"


class InformationEvaluation(StrEnum):
    """Europol 4x4: reliability of the information."""

    one = "1"
    two = "2"
    three = "3"
    four = "4"


Subject = Annotated[str, Text(300, 1)]
Body = Annotated[str, MultilineText(20_000, 1)]


class InformationRequest(SQLModel, table=True):
    __tablename__ = "information_request"
    __table_args__ = (
        sa.Index("ix_information_request_to_created", "to_agency_id", "created_at", "id"),
        sa.Index("ix_information_request_from_created", "from_agency_id", "created_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    from_agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT")
    to_agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT")
    case_id: uuid.UUID | None = Field(default=None, foreign_key="case.id", ondelete="SET NULL")
    subject: str = Field(sa_type=sa.String(300))
    body: str = Field(sa_type=sa.Text)
    priority: Priority = Field(sa_type=str_enum(Priority, "priority"))
    status: RequestStatus = Field(default=RequestStatus.sent, sa_type=str_enum(RequestStatus, "status"))
    due_at: datetime = Field(sa_type=UTCDateTime)
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class InformationRequestCreate(RequestModel):
    to_agency_id: uuid.UUID
    case_id: uuid.UUID | None = None
    subject: Subject
    body: Body
    priority: Priority = Priority.normal
    due_at: UTCInstant | None = Field(
        default=None, description="Defaults to 8 hours (urgent) or 7 days (normal) after sending"
    )


class InformationRequestUpdate(RequestModel):
    status: RequestStatus


class InformationRequestPublic(SQLModel):
    id: uuid.UUID
    from_agency_id: uuid.UUID
    to_agency_id: uuid.UUID
    case_id: uuid.UUID | None
    subject: str
    body: str
    priority: Priority
    status: RequestStatus
    due_at: UTCInstant
    overdue: bool
    version: int
    created_at: UTCInstant
    updated_at: UTCInstant


class RequestMessage(SQLModel, table=True):
    __tablename__ = "request_message"
    __table_args__ = (sa.Index("ix_request_message_request_created", "request_id", "created_at", "id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    request_id: uuid.UUID = Field(foreign_key="information_request.id", ondelete="CASCADE")
    from_agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT")
    body: str = Field(sa_type=sa.Text)
    source_evaluation: SourceEvaluation | None = Field(
        default=None, sa_type=str_enum(SourceEvaluation, "source_evaluation")
    )
    information_evaluation: InformationEvaluation | None = Field(
        default=None, sa_type=str_enum(InformationEvaluation, "information_evaluation")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RequestMessageCreate(RequestModel):
    body: Body
    source_evaluation: SourceEvaluation | None = None
    information_evaluation: InformationEvaluation | None = None


class RequestMessagePublic(SQLModel):
    id: uuid.UUID
    request_id: uuid.UUID
    from_agency_id: uuid.UUID
    body: str
    source_evaluation: SourceEvaluation | None
    information_evaluation: InformationEvaluation | None
    created_at: UTCInstant
