"""keyed audit chain checkpoint, audit entry detail, imported case origin

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 13:30:00

Existing audit entries keep their unkeyed SHA-256 hashes: a migration cannot
hold the audit key. Verification accepts them as the chain's beginning only
(app.audit.service); every entry written from now on is an HMAC.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.Column("at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoint")),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detail", sa.JSON(), nullable=True))
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin_bundle_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("origin_case_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("origin_lead_agency_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("origin_exported_at", app.core.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_column("origin_exported_at")
        batch_op.drop_column("origin_lead_agency_id")
        batch_op.drop_column("origin_case_id")
        batch_op.drop_column("origin_bundle_sha256")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_column("detail")
    op.drop_table("audit_checkpoint")
