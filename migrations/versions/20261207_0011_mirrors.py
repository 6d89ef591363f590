"""mirrors: a case's home instance and personal-data sharing, delivery to peers

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AT = app.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    # A peer's clients are known at home by derived ids (app.federation.forward), not as rows.
    with op.batch_alter_table("idempotency_record") as batch:
        batch.drop_constraint("fk_idempotency_record_client_id_api_client", type_="foreignkey")
    with op.batch_alter_table("case") as batch:
        batch.add_column(
            sa.Column("share_personal_data", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("home_instance", sa.String(length=63), nullable=True))
        batch.create_index(batch.f("ix_case_home_instance"), ["home_instance"], unique=False)
    with op.batch_alter_table("case") as batch:
        batch.alter_column("share_personal_data", server_default=None)
    with op.batch_alter_table("peer") as batch:
        batch.add_column(sa.Column("delivered_seq", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", _AT, nullable=True))
        batch.add_column(sa.Column("lease_token", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("lease_until", _AT, nullable=True))
        batch.add_column(sa.Column("received_seq", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("peer") as batch:
        for name in ("delivered_seq", "failures", "received_seq"):
            batch.alter_column(name, server_default=None)
    op.create_table(
        "peer_mirror",
        sa.Column("instance_id", sa.String(length=63), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("delivered_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["peer.instance_id"],
            name=op.f("fk_peer_mirror_instance_id_peer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "case_id", name=op.f("pk_peer_mirror")),
    )
    with op.batch_alter_table("peer_mirror") as batch:
        batch.create_index(batch.f("ix_peer_mirror_case_id"), ["case_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("peer_mirror") as batch:
        batch.drop_index(batch.f("ix_peer_mirror_case_id"))
    op.drop_table("peer_mirror")
    with op.batch_alter_table("peer") as batch:
        for name in (
            "received_seq",
            "lease_until",
            "lease_token",
            "next_attempt_at",
            "failures",
            "delivered_seq",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("case") as batch:
        batch.drop_index(batch.f("ix_case_home_instance"))
        batch.drop_column("home_instance")
        batch.drop_column("share_personal_data")
    # Records of a peer's clients have no client row to refer to.
    clients = sa.table("api_client", sa.column("id", sa.Uuid()))
    records = sa.table("idempotency_record", sa.column("client_id", sa.Uuid()))
    op.execute(records.delete().where(records.c.client_id.not_in(sa.select(clients.c.id))))
    with op.batch_alter_table("idempotency_record") as batch:
        batch.create_foreign_key(
            "fk_idempotency_record_client_id_api_client",
            "api_client",
            ["client_id"],
            ["id"],
            ondelete="CASCADE",
        )
