"""audit lanes, and the report counters' deltas

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 07:00:00

Two kinds of rows every writer shared made concurrent commands queue on PostgreSQL (20-27 %
of their time at 4 clients; bench/README.md, (23); docs/audit-lanes.md):

* the audit chain's one head. ``audit_head`` gets ``stride``, ``base_seq`` and ``base_hash``
  and, on PostgreSQL, one row per *lane* (``workflow.audit``): the chain as it is becomes the
  chain up to the split (``base_seq``, ``base_hash``: its last event and hash), and lane
  ``l`` of ``stride`` lanes holds the events ``base_seq + 1 + l + k * stride`` from then on,
  chained from ``base_hash``. ``REHABFLOW_AUDIT_LANES`` (default 8 on PostgreSQL) sets how
  many; SQLite, which has one writer at a time, keeps one (``stride`` 1: the chain goes on as
  before). A running chain's tamper evidence is unbroken: ``rehabflow audit verify`` checks
  the chain up to the split, then every lane from it.
* the report counters. ``report_moves_delta`` and ``report_deadlines_delta`` have the
  counters' columns and no key: PostgreSQL's commands insert their deltas there, and the
  sweep folds them into the counters (``workflow.rollup.fold``).
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _lanes(dialect: str) -> int:
    if dialect != "postgresql":
        return 1
    lanes = int(os.environ.get("REHABFLOW_AUDIT_LANES", "8"))
    if lanes < 1:
        raise ValueError("REHABFLOW_AUDIT_LANES: at least 1")
    return lanes


def upgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stride", sa.Integer, nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(
            sa.Column("base_seq", BIG_ID, nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(
            sa.Column("base_hash", sa.String(64), nullable=False, server_default=GENESIS)
        )
    op.create_table(
        "report_moves_delta",
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("definition", sa.String(80), nullable=False),
        sa.Column("from_state", sa.String(64), nullable=False),
        sa.Column("to_state", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.create_table(
        "report_deadlines_delta",
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
    )
    bind = op.get_bind()
    lanes = _lanes(bind.dialect.name)
    head = bind.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).first()
    if head is None or lanes == 1:
        return
    at, at_hash = head
    # the split: every lane's head at the chain's end, one stride before its first seq
    bind.execute(sa.text("DELETE FROM audit_head"))
    bind.execute(
        sa.text(
            "INSERT INTO audit_head (id, seq, hash, prev_hash, stride, base_seq, base_hash) "
            "VALUES (:id, :seq, :hash, NULL, :stride, :base_seq, :hash)"
        ),
        [
            {
                "id": lane + 1,
                "seq": at + 1 + lane - lanes,
                "hash": at_hash,
                "stride": lanes,
                "base_seq": at,
            }
            for lane in range(lanes)
        ],
    )


def downgrade() -> None:
    bind = op.get_bind()
    heads = bind.execute(
        sa.text("SELECT id, seq, hash, stride, base_seq, base_hash FROM audit_head ORDER BY id")
    ).all()
    if len(heads) > 1:
        if any(
            seq != base + hid - stride or hash_ != base_hash
            for hid, seq, hash_, stride, base, base_hash in heads
        ):
            raise RuntimeError("the audit lanes hold events: they cannot be merged into one chain")
        _, _, _, _, base, base_hash = heads[0]
        bind.execute(sa.text("DELETE FROM audit_head WHERE id > 1"))
        bind.execute(
            sa.text("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"),
            {"seq": base, "hash": base_hash},
        )
    for counters, key in (
        ("report_moves", "level, day, unit, action, definition, from_state, to_state"),
        ("report_deadlines", "level, due_on, unit, key, status, late"),
    ):  # fold the deltas not folded yet, then drop their table
        bind.execute(
            sa.text(
                f"INSERT INTO {counters} ({key}, n) SELECT {key}, sum(n) FROM {counters}_delta "
                f"GROUP BY {key} ON CONFLICT ({key}) DO UPDATE SET n = {counters}.n + excluded.n"
            )
        )
        op.drop_table(f"{counters}_delta")
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("base_hash")
        batch_op.drop_column("base_seq")
        batch_op.drop_column("stride")
