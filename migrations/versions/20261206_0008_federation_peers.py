"""federation peers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "peer",
        sa.Column("instance_id", sa.String(length=63), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("public_key", sa.JSON(), nullable=False),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_success_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_peer")),
    )
    op.create_table(
        "peer_nonce",
        sa.Column("instance_id", sa.String(length=63), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["peer.instance_id"],
            name=op.f("fk_peer_nonce_instance_id_peer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "nonce", name=op.f("pk_peer_nonce")),
    )
    op.create_index(op.f("ix_peer_nonce_created_at"), "peer_nonce", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_peer_nonce_created_at"), table_name="peer_nonce")
    op.drop_table("peer_nonce")
    op.drop_table("peer")
