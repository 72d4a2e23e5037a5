"""indexes of the reports

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 09:00:00

* ``ix_audit_state_changes``: the audit events that move a case (``to_state`` set and
  different from ``from_state``), by time; on PostgreSQL it carries the columns the reports
  read (index-only scans), so a report reads the moves of its period and after, not the log.
* ``ix_documents_revoked``: the few revoked documents (the only way a case can lack a document
  its state requires).
* ``ix_deadlines_due_on``: deadlines by due date with what the reports count.
* ``ix_activity_key_at`` (PostgreSQL): the same index, now carrying ``case_id`` and ``id``, so
  the activities of a kind (check-ins, absences, support, commitments) are read from the index.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATE_CHANGE = "to_state IS NOT NULL AND (from_state IS NULL OR from_state <> to_state)"


def upgrade() -> None:
    op.create_index(
        "ix_audit_state_changes",
        "audit_events",
        ["at"],
        postgresql_where=sa.text(STATE_CHANGE),
        sqlite_where=sa.text(STATE_CHANGE),
        postgresql_include=["case_id", "seq", "action", "definition", "from_state", "to_state"],
    )
    op.create_index(
        "ix_audit_state_actions",
        "audit_events",
        ["action", "at"],
        postgresql_where=sa.text(STATE_CHANGE),
        sqlite_where=sa.text(STATE_CHANGE),
        postgresql_include=["case_id", "seq"],
    )
    op.create_index(
        "ix_documents_revoked",
        "documents",
        ["case_id"],
        postgresql_where=sa.text("revoked_at IS NOT NULL"),
        sqlite_where=sa.text("revoked_at IS NOT NULL"),
        postgresql_include=["type"],
    )
    op.create_index(
        "ix_deadlines_due_on",
        "deadlines",
        ["due_on"],
        postgresql_include=["key", "status", "closed_at", "case_id"],
    )

    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_activity_key_at", table_name="activity_records")
        op.create_index(
            "ix_activity_key_at",
            "activity_records",
            ["key", "at"],
            postgresql_include=["case_id", "id"],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_activity_key_at", table_name="activity_records")
        op.create_index("ix_activity_key_at", "activity_records", ["key", "at"])
    op.drop_index("ix_deadlines_due_on", table_name="deadlines")
    op.drop_index("ix_documents_revoked", table_name="documents")
    op.drop_index("ix_audit_state_actions", table_name="audit_events")
    op.drop_index("ix_audit_state_changes", table_name="audit_events")
