"""daily counts of moves and deadlines for the reports

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 15:40:00

``report_moves`` (see ``workflow.rollup``): per level (commune / province), business day
(Vietnam), place, action, definition version and states, how many audit events moved cases;
kept by the transaction that writes each event. Filled here from the audit log and the cases'
current places (the same grouping as ``workflow.rollup.expected``).

``report_deadlines``: per level, due date, place, key, status and whether it was closed after
its due date, how many deadlines; kept by the transactions that start, close or move them.
Their secondary indexes leave the count ``n`` out, so a command's ``n = n + 1`` touches no
index (a HOT update) and the counters of a busy day do not bloat them.

``ix_cases_place``: a province's or a commune's cases (id, closed_at, group) read from the
index alone, the side of the reports' joins that picks a place. ``ix_cases_closed``: the
closed cases and when (the absences of the whole country). ``ix_activity_absences``: the
absences and returns in the order of the reports' window over them (no sort).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ABSENCE_KEYS = "key IN ('report_absence', 'report_return')"
MOVES = "e.to_state IS NOT NULL AND (e.from_state IS NULL OR e.from_state <> e.to_state)"


def upgrade() -> None:
    op.create_table(
        "report_moves",
        sa.Column("level", sa.String(8), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("unit", sa.String(8), primary_key=True),
        sa.Column("action", sa.String(128), primary_key=True),
        sa.Column("definition", sa.String(80), primary_key=True),
        sa.Column("from_state", sa.String(64), primary_key=True),
        sa.Column("to_state", sa.String(64), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_report_moves_unit_day",
        "report_moves",
        ["level", "unit", "day"],
        postgresql_include=["action", "definition", "from_state", "to_state"],
    )
    op.create_index(
        "ix_cases_place",
        "cases",
        ["province_code", "unit_code"],
        postgresql_include=["id", "closed_at", "state_group"],
    )
    op.create_table(
        "report_deadlines",
        sa.Column("level", sa.String(8), primary_key=True),
        sa.Column("due_on", sa.Date, primary_key=True),
        sa.Column("unit", sa.String(8), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("late", sa.Boolean, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_report_deadlines_unit_due",
        "report_deadlines",
        ["level", "unit", "due_on"],
        postgresql_include=["key", "status", "late"],
    )
    op.create_index(
        "ix_cases_closed",
        "cases",
        ["id"],
        postgresql_where=sa.text("closed_at IS NOT NULL"),
        sqlite_where=sa.text("closed_at IS NOT NULL"),
        postgresql_include=["closed_at"],
    )
    op.create_index(
        "ix_activity_absences",
        "activity_records",
        ["case_id", "at", "id"],
        postgresql_where=sa.text(ABSENCE_KEYS),
        sqlite_where=sa.text(ABSENCE_KEYS),
        postgresql_include=["key"],
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    day = "date(timezone('Asia/Ho_Chi_Minh', e.at))" if postgres else "date(e.at, '+7 hours')"
    closed_day = (
        "date(timezone('Asia/Ho_Chi_Minh', d.closed_at))"
        if postgres
        else "date(d.closed_at, '+7 hours')"
    )
    for level, unit in (("commune", "c.unit_code"), ("province", "c.province_code")):
        op.execute(
            f"""
            INSERT INTO report_moves
                (level, day, unit, action, definition, from_state, to_state, n)
            SELECT '{level}', {day}, {unit}, e.action, coalesce(e.definition, ''),
                   coalesce(e.from_state, ''), e.to_state, count(*)
            FROM audit_events e JOIN cases c ON c.id = e.case_id
            WHERE {MOVES}
            GROUP BY 1, 2, 3, 4, 5, 6, 7
            """
        )
        op.execute(
            f"""
            INSERT INTO report_deadlines (level, due_on, unit, key, status, late, n)
            SELECT '{level}', d.due_on, {unit}, d.key, d.status,
                   coalesce({closed_day} > d.due_on, false), count(*)
            FROM deadlines d JOIN cases c ON c.id = d.case_id
            GROUP BY 1, 2, 3, 4, 5, 6
            """
        )


def downgrade() -> None:
    op.drop_index("ix_activity_absences", table_name="activity_records")
    op.drop_index("ix_cases_closed", table_name="cases")
    op.drop_index("ix_report_deadlines_unit_due", table_name="report_deadlines")
    op.drop_table("report_deadlines")
    op.drop_index("ix_cases_place", table_name="cases")
    op.drop_index("ix_report_moves_unit_day", table_name="report_moves")
    op.drop_table("report_moves")
