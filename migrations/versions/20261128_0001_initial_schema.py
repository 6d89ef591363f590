"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 13:02:09.619518
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agency",
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column(
            "kind",
            sa.Enum(
                "police",
                "ministry",
                "prosecutor",
                "international_organization",
                "private_company",
                "government",
                "other",
                name="kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["agency.id"],
            name=op.f("fk_agency_parent_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agency")),
        sa.UniqueConstraint("code", name=op.f("uq_agency_code")),
    )
    with op.batch_alter_table("agency", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agency_created_at"), ["created_at"], unique=False)

    op.create_table(
        "audit_entry",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("agency_id", sa.Uuid(), nullable=True),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=True),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("purpose", sa.String(length=500), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_entry")),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entry_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_entry_agency_id"), ["agency_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_entry_case_id"), ["case_id"], unique=False)

    op.create_table(
        "event",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("request_from_agency_id", sa.Uuid(), nullable=True),
        sa.Column("request_to_agency_id", sa.Uuid(), nullable=True),
        sa.Column("at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event")),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_case_id"), ["case_id"], unique=False)

    op.create_table(
        "api_client",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agency_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agency_id"],
            ["agency.id"],
            name=op.f("fk_api_client_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_client")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_client_key_hash")),
    )
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_client_agency_id"), ["agency_id"], unique=False)

    op.create_table(
        "case",
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "active",
                "suspended",
                "closed",
                name="status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "handling_code",
            sa.Enum(
                "TLP:RED",
                "TLP:AMBER+STRICT",
                "TLP:AMBER",
                "TLP:GREEN",
                "TLP:CLEAR",
                name="handling_code",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("offence_types", sa.JSON(), nullable=False),
        sa.Column("modus_operandi", sa.JSON(), nullable=False),
        sa.Column("victim_regions", sa.JSON(), nullable=False),
        sa.Column("opened_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("lead_agency_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_agency_id"],
            ["agency.id"],
            name=op.f("fk_case_lead_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case")),
        sa.UniqueConstraint("reference", name=op.f("uq_case_reference")),
    )
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.create_index("ix_case_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_case_lead_agency_id"), ["lead_agency_id"], unique=False)

    op.create_table(
        "idempotency_record",
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("location", sa.String(length=500), nullable=True),
        sa.Column("etag", sa.String(length=100), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_client.id"],
            name=op.f("fk_idempotency_record_client_id_api_client"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "key", name=op.f("pk_idempotency_record")),
    )
    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_record_created_at"), ["created_at"], unique=False)

    op.create_table(
        "information_request",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("from_agency_id", sa.Uuid(), nullable=False),
        sa.Column("to_agency_id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "priority",
            sa.Enum("normal", "urgent", name="priority", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "sent",
                "acknowledged",
                "answered",
                "declined",
                "withdrawn",
                name="status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("due_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["case.id"],
            name=op.f("fk_information_request_case_id_case"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["from_agency_id"],
            ["agency.id"],
            name=op.f("fk_information_request_from_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["to_agency_id"],
            ["agency.id"],
            name=op.f("fk_information_request_to_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_information_request")),
    )
    with op.batch_alter_table("information_request", schema=None) as batch_op:
        batch_op.create_index(
            "ix_information_request_from_created",
            ["from_agency_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_information_request_to_created", ["to_agency_id", "created_at", "id"], unique=False
        )

    op.create_table(
        "location",
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=200), nullable=True),
        sa.Column("city", sa.String(length=200), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("searched_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("searched_by_agency_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_location_case_id_case"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["searched_by_agency_id"],
            ["agency.id"],
            name=op.f("fk_location_searched_by_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_location")),
    )
    with op.batch_alter_table("location", schema=None) as batch_op:
        batch_op.create_index(
            "ix_location_case_id_created_at_id", ["case_id", "created_at", "id"], unique=False
        )

    op.create_table(
        "participant",
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("agency_id", sa.Uuid(), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "lead",
                "partner",
                "observer",
                name="role",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"],
            ["agency.id"],
            name=op.f("fk_participant_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_participant_case_id_case"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "agency_id", name=op.f("pk_participant")),
    )
    with op.batch_alter_table("participant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_participant_agency_id"), ["agency_id"], unique=False)
        batch_op.create_index(
            "uq_participant_one_lead",
            ["case_id"],
            unique=True,
            sqlite_where=sa.text("role = 'lead'"),
            postgresql_where=sa.text("role = 'lead'"),
        )

    op.create_table(
        "detainee",
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("nationality", sa.String(length=2), nullable=True),
        sa.Column("detained_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("location_id", sa.Uuid(), nullable=True),
        sa.Column(
            "custody_status",
            sa.Enum(
                "detained",
                "in_custody",
                "house_arrest",
                "released_on_bail",
                "released",
                "extradited",
                "convicted",
                name="custody_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("charges", sa.JSON(), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("id_document", sa.String(length=200), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("detained_by_agency_id", sa.Uuid(), nullable=True),
        sa.Column("review_due", sa.Date(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_detainee_case_id_case"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["detained_by_agency_id"],
            ["agency.id"],
            name=op.f("fk_detainee_detained_by_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["location.id"],
            name=op.f("fk_detainee_location_id_location"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detainee")),
    )
    with op.batch_alter_table("detainee", schema=None) as batch_op:
        batch_op.create_index(
            "ix_detainee_case_id_created_at_id", ["case_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_detainee_case_id_review_due", ["case_id", "review_due"], unique=False)

    op.create_table(
        "request_message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("from_agency_id", sa.Uuid(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "source_evaluation",
            sa.Enum(
                "A",
                "B",
                "C",
                "X",
                name="source_evaluation",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column(
            "information_evaluation",
            sa.Enum(
                "1",
                "2",
                "3",
                "4",
                name="information_evaluation",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["from_agency_id"],
            ["agency.id"],
            name=op.f("fk_request_message_from_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["information_request.id"],
            name=op.f("fk_request_message_request_id_information_request"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_message")),
    )
    with op.batch_alter_table("request_message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_request_message_request_created", ["request_id", "created_at", "id"], unique=False
        )

    op.create_table(
        "seized_item",
        sa.Column(
            "category",
            sa.Enum(
                "computer",
                "mobile_phone",
                "sim_card",
                "storage_media",
                "database",
                "document",
                "cash",
                "crypto_asset",
                "vehicle",
                "other",
                name="category",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("location_id", sa.Uuid(), nullable=True),
        sa.Column("seized_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=False),
        sa.Column("seized_by_agency_id", sa.Uuid(), nullable=True),
        sa.Column("custodian_agency_id", sa.Uuid(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "seized",
                "under_examination",
                "transferred",
                "returned",
                "destroyed",
                name="status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "quantity IS NULL OR quantity >= 1", name=op.f("ck_seized_item_quantity_positive")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["case.id"], name=op.f("fk_seized_item_case_id_case"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["custodian_agency_id"],
            ["agency.id"],
            name=op.f("fk_seized_item_custodian_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["location.id"],
            name=op.f("fk_seized_item_location_id_location"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["seized_by_agency_id"],
            ["agency.id"],
            name=op.f("fk_seized_item_seized_by_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seized_item")),
    )
    with op.batch_alter_table("seized_item", schema=None) as batch_op:
        batch_op.create_index(
            "ix_seized_item_case_id_created_at_id", ["case_id", "created_at", "id"], unique=False
        )

    op.create_table(
        "custody_event",
        sa.Column(
            "action",
            sa.Enum(
                "seized",
                "transferred",
                "examined",
                "returned",
                "destroyed",
                name="action",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("from_agency_id", sa.Uuid(), nullable=True),
        sa.Column("to_agency_id", sa.Uuid(), nullable=True),
        sa.Column("at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seized_item_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("recorded_by_agency_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["from_agency_id"],
            ["agency.id"],
            name=op.f("fk_custody_event_from_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_agency_id"],
            ["agency.id"],
            name=op.f("fk_custody_event_recorded_by_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["seized_item_id"],
            ["seized_item.id"],
            name=op.f("fk_custody_event_seized_item_id_seized_item"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["to_agency_id"],
            ["agency.id"],
            name=op.f("fk_custody_event_to_agency_id_agency"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_event")),
    )
    with op.batch_alter_table("custody_event", schema=None) as batch_op:
        batch_op.create_index("ix_custody_event_item_seq", ["seized_item_id", "seq"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("custody_event", schema=None) as batch_op:
        batch_op.drop_index("ix_custody_event_item_seq")

    op.drop_table("custody_event")
    with op.batch_alter_table("seized_item", schema=None) as batch_op:
        batch_op.drop_index("ix_seized_item_case_id_created_at_id")

    op.drop_table("seized_item")
    with op.batch_alter_table("request_message", schema=None) as batch_op:
        batch_op.drop_index("ix_request_message_request_created")

    op.drop_table("request_message")
    with op.batch_alter_table("detainee", schema=None) as batch_op:
        batch_op.drop_index("ix_detainee_case_id_review_due")
        batch_op.drop_index("ix_detainee_case_id_created_at_id")

    op.drop_table("detainee")
    with op.batch_alter_table("participant", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_participant_one_lead",
            sqlite_where=sa.text("role = 'lead'"),
            postgresql_where=sa.text("role = 'lead'"),
        )
        batch_op.drop_index(batch_op.f("ix_participant_agency_id"))

    op.drop_table("participant")
    with op.batch_alter_table("location", schema=None) as batch_op:
        batch_op.drop_index("ix_location_case_id_created_at_id")

    op.drop_table("location")
    with op.batch_alter_table("information_request", schema=None) as batch_op:
        batch_op.drop_index("ix_information_request_to_created")
        batch_op.drop_index("ix_information_request_from_created")

    op.drop_table("information_request")
    with op.batch_alter_table("idempotency_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_record_created_at"))

    op.drop_table("idempotency_record")
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_lead_agency_id"))
        batch_op.drop_index("ix_case_created_at_id")

    op.drop_table("case")
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_client_agency_id"))

    op.drop_table("api_client")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_case_id"))

    op.drop_table("event")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entry_case_id"))
        batch_op.drop_index(batch_op.f("ix_audit_entry_agency_id"))
        batch_op.drop_index(batch_op.f("ix_audit_entry_action"))

    op.drop_table("audit_entry")
    with op.batch_alter_table("agency", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agency_created_at"))

    op.drop_table("agency")
