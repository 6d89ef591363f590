"""hit/no-hit: notifications queued per search, search terms with their time (for retention)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 18:10:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AT = app.core.db.UTCDateTime(timezone=True)
_TERM = sa.table("hit_search_term", sa.column("search_id", sa.Uuid()), sa.column("searched_at", _AT))
_AUDIT = sa.table(
    "audit_entry", sa.column("action", sa.String()), sa.column("resource_id", sa.Uuid()), sa.column("at", _AT)
)


def _fill_searched_at() -> None:
    """A search's time is its audit entry's; a term without one counts from now."""
    at = (
        sa.select(_AUDIT.c.at)
        .where(_AUDIT.c.action == "hit.searched", _AUDIT.c.resource_id == _TERM.c.search_id)
        .scalar_subquery()
    )
    now = sa.literal(datetime.now(UTC), _AT)
    op.get_bind().execute(_TERM.update().values(searched_at=sa.func.coalesce(at, now)))


def upgrade() -> None:
    op.create_table(
        "hit_notice_pending",
        sa.Column("search_id", sa.Uuid(), nullable=False),
        sa.Column("agency_id", sa.Uuid(), nullable=False),
        sa.Column("searched_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"],
            ["agency.id"],
            name=op.f("fk_hit_notice_pending_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("search_id", name=op.f("pk_hit_notice_pending")),
    )
    with op.batch_alter_table("hit_notice_pending", schema=None) as batch_op:
        batch_op.create_index("ix_hit_notice_pending_searched_at", ["searched_at"], unique=False)

    with op.batch_alter_table("hit_search_term", schema=None) as batch_op:
        batch_op.add_column(sa.Column("searched_at", app.core.db.UTCDateTime(timezone=True), nullable=True))
    _fill_searched_at()
    with op.batch_alter_table("hit_search_term", schema=None) as batch_op:
        batch_op.alter_column("searched_at", existing_type=_AT, nullable=False)
        batch_op.create_index("ix_hit_search_term_searched_at", ["searched_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hit_search_term", schema=None) as batch_op:
        batch_op.drop_index("ix_hit_search_term_searched_at")
        batch_op.drop_column("searched_at")

    with op.batch_alter_table("hit_notice_pending", schema=None) as batch_op:
        batch_op.drop_index("ix_hit_notice_pending_searched_at")
    op.drop_table("hit_notice_pending")
