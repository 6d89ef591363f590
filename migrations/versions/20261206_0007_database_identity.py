"""database identity for the storage mark, and the index of the storage quota

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 18:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "database_identity",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("database_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("slot = 1", name=op.f("ck_database_identity_one_row")),
        sa.PrimaryKeyConstraint("slot", name=op.f("pk_database_identity")),
    )
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.create_index("ix_attachment_uploader_size", ["uploaded_by_agency_id", "size"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.drop_index("ix_attachment_uploader_size")
    op.drop_table("database_identity")
