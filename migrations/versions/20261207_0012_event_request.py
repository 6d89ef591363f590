"""event.request_id: the information request of a request's, message's or message attachment's event

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event") as batch:
        batch.add_column(sa.Column("request_id", sa.Uuid(), nullable=True))
    # The events written before: their request, found through the records
    # still there (a message attachment deleted before this revision names none).
    event = sa.table(
        "event",
        sa.column("resource_type", sa.String()),
        sa.column("resource_id", sa.Uuid()),
        sa.column("request_id", sa.Uuid()),
    )
    op.execute(
        event.update()
        .where(event.c.resource_type == "information_request")
        .values(request_id=event.c.resource_id)
    )
    for resource_type, table_name in (
        ("request_message", "request_message"),
        ("message_attachment", "attachment"),
    ):
        table = sa.table(table_name, sa.column("id", sa.Uuid()), sa.column("request_id", sa.Uuid()))
        of_event = sa.select(table.c.request_id).where(table.c.id == event.c.resource_id).scalar_subquery()
        op.execute(event.update().where(event.c.resource_type == resource_type).values(request_id=of_event))


def downgrade() -> None:
    with op.batch_alter_table("event") as batch:
        batch.drop_column("request_id")
