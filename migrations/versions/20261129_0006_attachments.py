"""attachments

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 13:55:10.964942
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attachment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.Uuid(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("uploaded_by_agency_id", sa.Uuid(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(case_id IS NULL) <> (message_id IS NULL) AND (message_id IS NULL) = (request_id IS NULL)",
            name=op.f("ck_attachment_one_parent"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_attachment_case_id_case"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["request_message.id"],
            name=op.f("fk_attachment_message_id_request_message"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["information_request.id"],
            name=op.f("fk_attachment_request_id_information_request"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by_agency_id"],
            ["agency.id"],
            name=op.f("fk_attachment_uploaded_by_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachment")),
    )
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.create_index("ix_attachment_case_created", ["case_id", "created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_attachment_message_created", ["message_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_attachment_sha256", ["sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.drop_index("ix_attachment_sha256")
        batch_op.drop_index("ix_attachment_message_created")
        batch_op.drop_index("ix_attachment_case_created")

    op.drop_table("attachment")
