"""case references unique per lead agency up to twins; idempotency records keep no response body

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 13:30:00

- `case.reference_key`: the reference NFKC-normalised and case-folded,
  filled for existing rows; unique with `lead_agency_id` instead of the
  reference being unique across all agencies.
- `idempotency_record` loses `body` and `etag`: a replay re-reads the
  created resource (its `location` stays), so no response, and no personal
  data, is kept there. Stored bodies are dropped with the column.
"""

import unicodedata
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _reference_key(reference: str) -> str:
    # A copy of app.cases.models.reference_key: a migration keeps the rule it was written with.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", reference).casefold())


def upgrade() -> None:
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference_key", sa.String(length=400), nullable=True))

    case = sa.table(
        "case",
        sa.column("id", sa.Uuid()),
        sa.column("reference", sa.String()),
        sa.column("lead_agency_id", sa.Uuid()),
        sa.column("reference_key", sa.String()),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(case.c.id, case.c.reference, case.c.lead_agency_id)).all()
    twins: dict[tuple[object, str], list[str]] = defaultdict(list)
    for row in rows:
        twins[(row.lead_agency_id, _reference_key(row.reference))].append(row.reference)
    clashes = [refs for refs in twins.values() if len(refs) > 1]
    if clashes:
        raise RuntimeError(
            "cases of one lead agency whose references differ only in case or Unicode form; "
            f"rename all but one of each group before migrating: {clashes}"
        )
    if rows:
        conn.execute(
            case.update()
            .where(case.c.id == sa.bindparam("case_id"))
            .values(reference_key=sa.bindparam("key")),
            [{"case_id": row.id, "key": _reference_key(row.reference)} for row in rows],
        )

    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.alter_column("reference_key", existing_type=sa.String(length=400), nullable=False)
        batch_op.drop_constraint(batch_op.f("uq_case_reference"), type_="unique")
        batch_op.create_index(
            "ux_case_lead_agency_id_reference_key", ["lead_agency_id", "reference_key"], unique=True
        )

    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.drop_column("body")
        batch_op.drop_column("etag")


def downgrade() -> None:
    # The bodies are gone: the records of the last day cannot answer replays
    # the old way, so they go too (the keys become new again).
    op.execute(sa.text("DELETE FROM idempotency_record"))
    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("etag", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("body", sa.LargeBinary(), nullable=False))

    # Fails if two agencies now use the same reference: the old schema cannot hold that.
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_index("ux_case_lead_agency_id_reference_key")
        batch_op.create_unique_constraint(batch_op.f("uq_case_reference"), ["reference"])
        batch_op.drop_column("reference_key")
