"""the audit head keeps the hash before its last one

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 18:00:00

``audit_head.prev_hash``: the ``prev_hash`` of the last event (the hash the head had before
it). PostgreSQL's one-statement append (``workflow.audit.PG_APPEND_CTES``) moves the head
with ``SET prev_hash = hash, hash = …`` and returns it, since ``RETURNING`` cannot read a
row's old values before PostgreSQL 18. Filled here from the last event (NULL when the chain
is empty).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE audit_head SET prev_hash = "
        "(SELECT e.prev_hash FROM audit_events e WHERE e.seq = audit_head.seq)"
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("prev_hash")
