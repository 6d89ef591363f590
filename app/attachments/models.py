import re
import unicodedata
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime, utcnow
from app.core.types import UTCInstant

_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;[\x20-\x7e]*)?")


def control_free(filename: str) -> str:
    """The rule for a filename, whether it comes with an upload or in a bundle."""
    if any(unicodedata.category(ch) == "Cc" for ch in filename):
        raise ValueError("The filename must not contain control characters.")
    return filename


def media_type(value: str) -> str:
    """`type/subtype[; parameters]` with the type in lower case, as stored; ValueError otherwise."""
    value = value.strip()
    if len(value) > 255 or not _MEDIA_TYPE.fullmatch(value):
        raise ValueError("Content-Type must be a media type such as application/pdf.")
    type_, _, params = value.partition(";")
    return type_.strip().lower() + (";" + params if params else "")


class Attachment(SQLModel, table=True):
    """A file attached to a case or to a message of an information request.

    The bytes live in the storage under `sha256`; several rows may name the
    same file (the same content uploaded twice).
    """

    __tablename__ = "attachment"
    __table_args__ = (
        sa.CheckConstraint(
            "(case_id IS NULL) <> (message_id IS NULL) AND (message_id IS NULL) = (request_id IS NULL)",
            name="one_parent",
        ),
        sa.Index("ix_attachment_case_created", "case_id", "created_at", "id"),
        sa.Index("ix_attachment_message_created", "message_id", "created_at", "id"),
        sa.Index("ix_attachment_sha256", "sha256"),
        # An agency's storage quota sums its uploads' sizes: read from the index alone.
        sa.Index("ix_attachment_uploader_size", "uploaded_by_agency_id", "size"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID | None = Field(default=None, foreign_key="case.id", ondelete="RESTRICT")
    request_id: uuid.UUID | None = Field(
        default=None, foreign_key="information_request.id", ondelete="RESTRICT"
    )
    message_id: uuid.UUID | None = Field(default=None, foreign_key="request_message.id", ondelete="RESTRICT")
    uploaded_by_agency_id: uuid.UUID = Field(foreign_key="agency.id", ondelete="RESTRICT")
    filename: str = Field(sa_type=sa.String(255))
    content_type: str = Field(sa_type=sa.String(255))
    size: int = Field(sa_type=sa.BigInteger)
    sha256: str = Field(sa_type=sa.String(64))
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DatabaseIdentity(SQLModel, table=True):
    """This database's random id, in its one row. The storage directory is marked
    with it on first use (app.attachments.storage), so that a sweep or a server
    pointed at another database's files refuses instead of taking them for orphans."""

    __tablename__ = "database_identity"
    __table_args__ = (sa.CheckConstraint("slot = 1", name="one_row"),)

    slot: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    database_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AttachmentPublic(SQLModel):
    id: uuid.UUID
    case_id: uuid.UUID | None
    request_id: uuid.UUID | None
    message_id: uuid.UUID | None
    uploaded_by_agency_id: uuid.UUID
    filename: str
    content_type: str
    size: int
    sha256: str
    version: int
    created_at: UTCInstant
