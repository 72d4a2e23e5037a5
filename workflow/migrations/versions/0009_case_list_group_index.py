"""the case list filtered by state group has its own index

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 06:10:00

``ix_cases_unit_group`` is ``(unit_code, state_group, id)``: a commune's cases in one group
(the case list's ``group=`` filter, ``ORDER BY id DESC LIMIT n``) are read straight from the
index, as ``ix_cases_unit_state`` serves the ``state=`` filter (migration 0008), once the
list picks its page's ids by a subquery on the filtered columns (``workflow.queries``).
Without both, PostgreSQL walks ``cases_pkey`` backwards until n rows match: on the benchmark
database, whose demo commune held hundreds of thousands of recent cases in other groups, one
page filtered out 628,152 rows (0.2-0.5 s warm, the list's p99). A group is a set of states,
but ``state IN (…)`` on ``ix_cases_unit_state`` cannot return the rows in id order (one range
per state), so it does not help. The write cost of one more index entry per case write is
measured in bench/README.md, (13): none measurable.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cases_unit_group", "cases", ["unit_code", "state_group", "id"])


def downgrade() -> None:
    op.drop_index("ix_cases_unit_group", table_name="cases")
