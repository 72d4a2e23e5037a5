"""How long one deadline sweep takes, as a function of the due items and of the open cases.

    python -m bench.sweep --open 10000 --due 1000 [--database-url URL] [--explain]

The database is filled directly (COPY on PostgreSQL, SQLAlchemy core bulk inserts elsewhere),
not through the service: ``open`` cases each with one open ``register_voluntary`` deadline due
in a year, plus ``due`` cases whose deadline fell due yesterday, so today's sweep owes each of
them its level-1 escalation (``next_action_on`` = today). One ``sweep_deadlines`` pass is timed
(audit events, outbox rows and all), checked to have processed exactly ``due`` items, and one
line with the figures is printed. ``--explain`` shows PostgreSQL's plan for the sweep's select.

On PostgreSQL the work happens in a private schema, dropped afterwards (``--keep`` keeps it);
with a SQLite URL (or ``sqlite``) a temporary file is used. The goal: the time depends on
``due``, not on ``open``, because the select is an index range scan on
``ix_deadlines_sweep (status, next_action_on)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import event, func, insert, select, text
from sqlalchemy.engine import Engine

from workflow import schema
from workflow.calendar import business_date
from workflow.db import make_engine, make_session_factory
from workflow.model import AuditEvent, Case, Deadline, Subject
from workflow.registry import Registry
from workflow.service import CaseService
from workflow.storage import MemoryBlobStore
from workflow.sweep import sweep_deadlines

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = os.environ.get(
    "REHABFLOW_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
COMMUNE, PROVINCE = "17662", "40"
KEY, STATE = "register_voluntary", "addicted"
CHUNK = 5000


# ---------------------------------------------------------------------------- database
@contextmanager
def database(url: str, keep: bool) -> Iterator[Engine]:
    """A migrated, empty database: a private PostgreSQL schema or a temporary SQLite file."""
    if url == "sqlite" or url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="rfbench-") as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            schema.upgrade(engine)
            try:
                yield engine
            finally:
                engine.dispose()
        return
    name = f"rfbench_{os.getpid()}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {name}"))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={name}"})
    try:
        schema.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        if keep:
            print(f"schema {name} kept", file=sys.stderr)
        else:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


# -------------------------------------------------------------------------------- rows
def rows(n_open: int, n_due: int, today: date, now: datetime, group: str) -> Iterator[tuple]:
    """(subject, case, deadline) dicts: the open cases first, then the due ones."""
    for i in range(1, n_open + n_due + 1):
        due_item = i > n_open
        if due_item:  # fell due yesterday: the level-1 escalation is owed today
            due_on = today - timedelta(days=1)
            remind_on = reminded_on = due_on - timedelta(days=1)
            next_action_on = today
        else:  # far in the future: the reminder is the next thing, in a year
            due_on = today + timedelta(days=365)
            remind_on, reminded_on = due_on - timedelta(days=1), None
            next_action_on = remind_on
        subject = {
            "id": i,
            "full_name": f"Người thử {i}",
            "full_name_folded": f"nguoi thu {i}",
            "date_of_birth": date(1990, 1, 1),
            "sex": "male",
            "national_id": None,
            "national_id_hash": None,
            "address": None,
            "unit_code": COMMUNE,
        }
        case = {
            "id": i,
            "number": f"BENCH-{i:08d}",
            "subject_id": i,
            "definition_key": "drug_rehab",
            "definition_version": 1,
            "state": STATE,
            "state_group": group,
            "version": 1,
            "unit_code": COMMUNE,
            "province_code": PROVINCE,
            "fields": {},
            "opened_at": now - timedelta(days=30),
            "state_entered_at": now - timedelta(days=10),
            "closed_at": None,
            "updated_at": now - timedelta(days=10),
        }
        deadline = {
            "id": i,
            "case_id": i,
            "key": KEY,
            "status": "open",
            "started_at": now - timedelta(days=10),
            "anchor_on": due_on - timedelta(days=7),
            "due_on": due_on,
            "remind_on": remind_on,
            "next_action_on": next_action_on,
            "escalation_level": 0,
            "reminded_on": reminded_on,
            "auto_transition": None,
            "closed_at": None,
            "closed_by": None,
        }
        yield subject, case, deadline


def fill(engine: Engine, n_open: int, n_due: int, today: date, now: datetime, group: str) -> None:
    tables = [m.__table__ for m in (Subject, Case, Deadline)]
    if engine.dialect.name == "postgresql":
        _fill_copy(engine, tables, rows(n_open, n_due, today, now, group))
    else:
        with engine.begin() as conn:
            chunk: list[tuple] = []
            for item in rows(n_open, n_due, today, now, group):
                chunk.append(item)
                if len(chunk) == CHUNK:
                    _insert(conn, tables, chunk)
                    chunk = []
            _insert(conn, tables, chunk)


def _insert(conn, tables, chunk) -> None:  # noqa: ANN001
    if chunk:
        for i, table in enumerate(tables):
            conn.execute(insert(table), [item[i] for item in chunk])


def _fill_copy(engine: Engine, tables, items) -> None:  # noqa: ANN001
    from psycopg.types.json import Jsonb

    items = list(items)
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            for i, table in enumerate(tables):
                cols = [c.name for c in table.columns]
                names = ", ".join(f'"{c}"' for c in cols)
                with cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                    for item in items:
                        row = item[i]
                        copy.write_row(
                            [Jsonb(row[c]) if isinstance(row[c], dict) else row[c] for c in cols]
                        )
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"(SELECT max(id) FROM {table.name}))"
                )
            cur.execute("ANALYZE subjects, cases, deadlines")  # fresh statistics, as in production
        conn.commit()
    finally:
        raw.close()


# ------------------------------------------------------------------------------- sweep
def sweep_select(today: date, batch: int = 500):  # noqa: ANN201
    """The sweep's select, as written in ``workflow/sweep.py`` (checked against what runs)."""
    return (
        select(Deadline)
        .where(Deadline.status == "open", Deadline.next_action_on <= today)
        .order_by(Deadline.next_action_on, Deadline.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )


def explain(engine: Engine, today: date) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the sweep's select, in a transaction rolled back."""
    compiled = sweep_select(today).compile(dialect=engine.dialect)
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params
        ).scalars()
        out = list(plan)
        conn.rollback()
    return out


def capture(engine: Engine) -> list[str]:
    """Record the SQL of the sweep's selects on ``deadlines`` as they run."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "FROM deadlines" in statement and "FOR UPDATE" in statement:
            seen.append(statement)

    return seen


def run(args: argparse.Namespace) -> int:
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        raise SystemExit("--now needs a time zone, e.g. 2027-03-02T09:00+07:00")
    today = business_date(now)
    registry = Registry.from_directory(ROOT / "definitions")
    group = registry.get("drug_rehab", 1).states[STATE].group
    with database(args.database_url, args.keep) as engine:
        t0 = time.perf_counter()
        fill(engine, args.open, args.due, today, now, group)
        filled = time.perf_counter() - t0
        service = CaseService(
            make_session_factory(engine),
            registry,
            secret_key=os.urandom(16).hex(),
            blobs=MemoryBlobStore(),
        )
        pg = engine.dialect.name == "postgresql"
        plan = explain(engine, today) if args.explain and pg else []
        statements = capture(engine)

        t0 = time.perf_counter()
        report = sweep_deadlines(service, now, batch=args.batch)
        elapsed = time.perf_counter() - t0

        with engine.connect() as conn:
            events = conn.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "deadline.escalated")
            )
            left = conn.scalar(
                select(func.count())
                .select_from(Deadline)
                .where(Deadline.status == "open", Deadline.next_action_on <= today)
            )
        expected = str(sweep_select(today, args.batch).compile(dialect=engine.dialect))
        ok = (
            report.rows == report.escalations == events == args.due
            and report.reminders == report.automatic == 0
            and left == 0
        )
        print(
            f"sweep [{engine.dialect.name}]: {args.due} due among {args.open} open cases: "
            f"{elapsed:.3f} s ({args.due / elapsed:.0f} items/s, batch {args.batch}); "
            f"processed {report.rows}, escalations {report.escalations}, audit events {events}; "
            f"{'OK' if ok else 'MISMATCH'} (fill {filled:.1f} s)"
        )
        if plan:
            print(f"EXPLAIN of the sweep's select ({len(statements)} run):")
            for line in plan:
                print("   ", line)
            uses = any("ix_deadlines_sweep" in line for line in plan)
            print(f"uses ix_deadlines_sweep: {'yes' if uses else 'NO'}")
            if statements and statements[0] != expected:
                print("note: the sweep ran a different select than bench.sweep explains:")
                print("   ", statements[0])
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--open", type=int, default=10_000, help="cases with nothing due (10000)")
    p.add_argument("--due", type=int, default=1_000, help="cases owing an escalation (1000)")
    p.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    p.add_argument("--now", default=None, help="the sweep's time, ISO 8601 (default: now)")
    p.add_argument("--batch", type=int, default=500, help="sweep batch size (500)")
    p.add_argument("--explain", action="store_true", help="show the select's plan (PostgreSQL)")
    p.add_argument("--keep", action="store_true", help="do not drop the PostgreSQL schema")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
