"""identifiers, hit/no-hit search terms, notifications in the feed, case-folded case search

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 13:15:11.863390
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = (
    "phone",
    "email",
    "iban",
    "bank_card",
    "crypto_address",
    "domain",
    "ip",
    "url",
    "document_number",
    "other",
)


def _kind() -> sa.Enum:
    return sa.Enum(*KINDS, name="kind", native_enum=False, create_constraint=True)


_CASE = sa.table(
    "case",
    sa.column("id", sa.Uuid()),
    sa.column("reference", sa.String()),
    sa.column("title", sa.String()),
    sa.column("summary", sa.Text()),
    sa.column("search_text", sa.Text()),
)


def _fill_search_text(batch: int = 5000) -> None:
    """Fold existing cases in Python, as app.cases.models.search_text() does at this
    revision (SQLite's lower() would fold ASCII only)."""
    conn = op.get_bind()
    while True:
        rows = conn.execute(
            sa.select(_CASE.c.id, _CASE.c.reference, _CASE.c.title, _CASE.c.summary)
            .where(_CASE.c.search_text.is_(None))
            .limit(batch)
        ).all()
        if not rows:
            return
        conn.execute(
            _CASE.update().where(_CASE.c.id == sa.bindparam("case_id")),
            [
                {
                    "case_id": row.id,
                    "search_text": "\n".join((row.reference, row.title, row.summary or "")).casefold(),
                }
                for row in rows
            ],
        )


def upgrade() -> None:
    op.create_table(
        "hit_search_term",
        sa.Column("search_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", _kind(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("search_id", "position", name=op.f("pk_hit_search_term")),
    )
    with op.batch_alter_table("hit_search_term", schema=None) as batch_op:
        batch_op.create_index("ix_hit_search_term_digest", ["digest"], unique=False)

    op.create_table(
        "identifier",
        sa.Column("kind", _kind(), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("normalized", sa.String(length=1000), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_identifier_case_id_case"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identifier")),
    )
    with op.batch_alter_table("identifier", schema=None) as batch_op:
        batch_op.create_index(
            "ix_identifier_case_id_created_at_id", ["case_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_identifier_kind_normalized", ["kind", "normalized"], unique=False)

    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("search_text", sa.Text(), nullable=True))
    _fill_search_text()
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.alter_column("search_text", existing_type=sa.Text(), nullable=False)
    if op.get_bind().dialect.name == "postgresql":
        # pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_case_search_text_trgm",
            "case",
            ["search_text"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        )

    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_agency_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("from_agency_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("from_agency_id")
        batch_op.drop_column("recipient_agency_id")

    # The pg_trgm extension stays: other objects of the database may use it.
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_case_search_text_trgm", table_name="case")
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_column("search_text")

    with op.batch_alter_table("identifier", schema=None) as batch_op:
        batch_op.drop_index("ix_identifier_kind_normalized")
        batch_op.drop_index("ix_identifier_case_id_created_at_id")
    op.drop_table("identifier")

    with op.batch_alter_table("hit_search_term", schema=None) as batch_op:
        batch_op.drop_index("ix_hit_search_term_digest")
    op.drop_table("hit_search_term")
