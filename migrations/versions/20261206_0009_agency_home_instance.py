"""agency home instance

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agency") as batch:
        batch.add_column(sa.Column("home_instance", sa.String(length=63), nullable=True))
        batch.create_index(batch.f("ix_agency_home_instance"), ["home_instance"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agency") as batch:
        batch.drop_index(batch.f("ix_agency_home_instance"))
        batch.drop_column("home_instance")
