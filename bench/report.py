"""Time of the indicator report on a generated data set (PostgreSQL, bulk COPY).

    python -m bench.report --database-url URL [--cases 1000000] [--schema bench_report]
                           [--reuse] [--drop]

Fills a private schema with N synthetic cases written straight with COPY (not through the
service: the audit hashes are not a valid chain): subjects, cases walked along the shortest
paths of drug_rehab to a uniformly chosen state (as the demo does), opened over the two years
before 20/06/2026, with the audit events, activities (monthly check-ins in the check-in
states, absences and returns, support, family commitments), deadlines and document rows such
histories leave. 60 % of the cases are in the communes of Nghệ An (40), the rest in five other
provinces. Then it times ``workflow.reports.indicators`` (with the targets and the monthly
trend) for the whole country, the largest province, the largest commune and a commune of
median size, for 2026H1 and the year 2026, three runs each, and prints the best and the
median. ``--reuse`` keeps an existing data set of the same size; ``--drop`` removes the schema
at the end.

A rough figure for the reports issue; the benchmark issue's generator may replace this one.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from workflow import rollup, schema, units
from workflow.calendar import WorkingCalendar
from workflow.db import make_engine, make_session_factory
from workflow.definition import Definition
from workflow.registry import Registry
from workflow.reports import indicators, period
from workflow.simulate import path_to

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
END = datetime(2026, 6, 20, 3, 0, tzinfo=UTC)  # the day the report is made
SPAN_DAYS = 730
PROVINCES = ("40", "01", "79", "48", "31", "92")  # Nghệ An first (60 %), then five others
CHECK_IN_STATES = {"voluntary_home", "substitution_treatment", "post_rehab_supervision"}
ABSENCE_STATES = {"illegal_use_management", "voluntary_home", "substitution_treatment"}
COMMITMENT_STATES = {"voluntary_home", "substitution_treatment", "post_rehab_supervision"}
HASH = "0" * 64
BATCH = 20_000

COLUMNS = {
    "subjects": (
        "id",
        "full_name",
        "full_name_folded",
        "date_of_birth",
        "sex",
        "unit_code",
    ),
    "cases": (
        "id",
        "number",
        "subject_id",
        "definition_key",
        "definition_version",
        "state",
        "state_group",
        "version",
        "unit_code",
        "province_code",
        "fields",
        "opened_at",
        "state_entered_at",
        "closed_at",
        "updated_at",
    ),
    "audit_events": (
        "seq",
        "case_id",
        "at",
        "actor",
        "agency_type",
        "role",
        "action",
        "from_state",
        "to_state",
        "definition",
        "documents",
        "extra",
        "prev_hash",
        "hash",
    ),
    "activity_records": ("id", "case_id", "key", "at", "data", "audit_seq"),
    "deadlines": (
        "id",
        "case_id",
        "key",
        "status",
        "started_at",
        "anchor_on",
        "due_on",
        "escalation_level",
        "closed_at",
    ),
    "documents": (
        "id",
        "case_id",
        "type",
        "filename",
        "media_type",
        "size",
        "sha256",
        "uploaded_at",
        "revoked_at",
    ),
}


class Writer:
    """Rows of one batch per table, and the next id of each."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple]] = {t: [] for t in COLUMNS}
        self.next = {t: 1 for t in COLUMNS}

    def add(self, table: str, *values: Any) -> int:
        row_id = self.next[table]
        self.next[table] += 1
        self.rows[table].append((row_id, *values))
        return row_id

    def flush(self, conn: Any) -> None:
        with conn.cursor() as cur:
            for table, rows in self.rows.items():
                if not rows:
                    continue
                cols = ", ".join(COLUMNS[table])
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                rows.clear()
        conn.commit()


class CaseMaker:
    def __init__(self, registry: Registry, rng: random.Random) -> None:
        self.rng = rng
        self.registry = registry
        self.paths: dict[tuple[int, str], list[str]] = {}
        self.communes = {p: [u.code for u in units.communes_of(p)] for p in PROVINCES}

    def path(self, d: Definition, target: str) -> list[str]:
        key = (d.version, target)
        if key not in self.paths:
            self.paths[key] = path_to(d, target) or []
        return self.paths[key]

    def unit(self) -> tuple[str, str]:
        rng = self.rng
        province = PROVINCES[0] if rng.random() < 0.6 else rng.choice(PROVINCES[1:])
        communes = self.communes[province]
        # a few large communes: the square skews the choice towards the first ones
        return communes[int(len(communes) * rng.random() ** 2)], province

    def make(self, w: Writer, n: int) -> None:
        rng = self.rng
        opened = END - timedelta(days=rng.uniform(60, SPAN_DAYS), hours=rng.uniform(0, 10))
        d = self.registry.in_force("drug_rehab", opened.date())
        states = list(d.states)
        target = states[n % len(states)]
        unit, province = self.unit()
        case_id = w.next["cases"]
        subject = w.add(
            "subjects", "Nguyễn Văn Thử", "nguyen van thu", date(1990, 1, 1), "male", unit
        )
        events: list[tuple] = []  # (at, action, from, to)
        state, at = d.initial_state.key, opened
        events.append((at, "case.opened", None, state))
        for key in self.path(d, target):
            t = d.transitions[key]
            leave = at + timedelta(days=rng.uniform(1, 45), hours=rng.uniform(0, 8))
            if leave >= END:
                break
            self.stay(w, d, case_id, state, at, leave, events)
            for req in t.documents:
                revoked = leave + timedelta(days=3) if rng.random() < 0.005 else None
                w.add(
                    "documents",
                    case_id,
                    req.any_of[0],
                    "scan.pdf",
                    "application/pdf",
                    1000,
                    HASH,
                    leave,
                    revoked if revoked and revoked < END else None,
                )
            for dl in t.effects.start_deadlines:
                due = (leave + timedelta(days=rng.uniform(5, 40))).date()
                nxt = leave + timedelta(days=rng.uniform(2, 45))
                status, closed = ("met", nxt) if nxt < END else ("open", None)
                w.add("deadlines", case_id, dl, status, leave, leave.date(), due, 0, closed)
            events.append((leave, f"transition:{key}", state, t.dest))
            state, at = t.dest, leave
        self.stay(w, d, case_id, state, at, END, events)
        closed_at = at if d.states[state].kind == "terminal" else None
        events.sort(key=lambda e: e[0])
        w.add(
            "cases",
            f"{unit}-{opened.year}-{case_id:07d}",
            subject,
            d.key,
            d.version,
            state,
            d.states[state].group,
            len(events),
            unit,
            province,
            "{}",
            opened,
            at,
            closed_at,
            events[-1][0],
        )
        for e_at, action, frm, to in events:
            seq = w.add(
                "audit_events",
                case_id,
                e_at,
                "bench",
                "commune_police",
                "officer",
                action,
                frm,
                to,
                d.ref,
                "[]",
                "{}",
                HASH,
                HASH,
            )
            if action.startswith("activity:"):
                w.add("activity_records", case_id, action.split(":", 1)[1], e_at, "{}", seq)

    def stay(
        self,
        w: Writer,
        d: Definition,
        case_id: int,
        state: str,
        start: datetime,
        end: datetime,
        events: list[tuple],
    ) -> None:
        """The activities (and check-in deadlines) of a stay in ``state``."""
        rng = self.rng

        def activity(key: str, at: datetime) -> None:
            events.append((at, f"activity:{key}", state, state))

        if state in CHECK_IN_STATES:
            due = start + timedelta(days=30)
            while due < end + timedelta(days=30):
                done = rng.random() < 0.85
                if due >= end:
                    w.add("deadlines", case_id, "check_in_due", "open", start, start.date(),
                          due.date(), 0, None)  # fmt: skip
                    break
                if done:
                    activity("check_in", due - timedelta(days=rng.uniform(0, 5)))
                status = "met" if done else "cancelled"
                w.add("deadlines", case_id, "check_in_due", status, start, start.date(),
                      due.date(), 0, due - timedelta(days=1))  # fmt: skip
                due += timedelta(days=30)
        span = (end - start).total_seconds()
        if state in ABSENCE_STATES and rng.random() < 0.03:
            away = start + timedelta(seconds=span * rng.uniform(0.1, 0.6))
            activity("report_absence", away)
            if rng.random() < 0.5:
                activity("report_return", away + timedelta(seconds=span * 0.2))
        if state in COMMITMENT_STATES and rng.random() < 0.7:
            activity("family_commitment_signed", start + timedelta(hours=2))
        if state == "rehab_completed" and rng.random() < 0.8:
            activity("support_given", start + timedelta(hours=3))


def generate(engine: Any, registry: Registry, n: int, seed: int = 2026) -> None:
    maker, w = CaseMaker(registry, random.Random(seed)), Writer()
    raw = engine.raw_connection()
    conn = raw.driver_connection
    t0 = time.perf_counter()
    for i in range(n):
        maker.make(w, i)
        if (i + 1) % BATCH == 0 or i + 1 == n:
            w.flush(conn)
            rate = (i + 1) / (time.perf_counter() - t0)
            print(f"\r{i + 1:>9} cases ({rate:,.0f}/s)", end="", flush=True)
    print()
    with conn.cursor() as cur:
        last = w.next["audit_events"] - 1
        # the events were numbered 1..last in one chain: one lane (workflow.audit)
        cur.execute("DELETE FROM audit_head WHERE id > 1")
        cur.execute(
            "UPDATE audit_head SET seq = %s, stride = 1, base_seq = 0, base_hash = %s",
            (last, "0" * 64),
        )
        for table, col in (("cases", "id"), ("subjects", "id"), ("activity_records", "id"),
                           ("deadlines", "id"), ("documents", "id")):  # fmt: skip
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                f"(SELECT coalesce(max({col}), 1) FROM {table}))"
            )
    conn.commit()
    raw.close()
    vacuum(engine)


def vacuum(engine: Any) -> None:
    """VACUUM ANALYZE, as autovacuum would in time: the visibility map lets the report read
    its indexes only (a freshly bulk-loaded table has none and falls back to the heap)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--schema", default="bench_report")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--drop", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    registry = Registry.from_directory(DEFINITIONS)
    admin = make_engine(args.database_url)
    engine = make_engine(
        args.database_url, connect_args={"options": f"-csearch_path={args.schema}"}
    )
    have = 0
    if args.reuse:
        with engine.connect() as c:
            try:
                have = c.execute(text("select count(*) from cases")).scalar_one()
            except Exception:
                have = 0
    if have != args.cases:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA IF EXISTS {args.schema} CASCADE"))
            c.execute(text(f"CREATE SCHEMA {args.schema}"))
        schema.upgrade(engine)
        t = time.perf_counter()
        generate(engine, registry, args.cases)
        with make_session_factory(engine)() as session:  # the reports' daily counters
            rollup.rebuild(session)
            session.commit()
        print(f"generated {args.cases} cases in {time.perf_counter() - t:.0f} s")
    else:
        schema.upgrade(engine)  # new indexes of later migrations
        vacuum(engine)
    with engine.connect() as c:
        sizes = {
            t: c.execute(text(f"select count(*) from {t}")).scalar_one()
            for t in ("cases", "audit_events", "activity_records", "deadlines", "documents")
        }
        province = c.execute(
            text("select province_code from cases group by 1 order by count(*) desc limit 1")
        ).scalar_one()
        commune = c.execute(
            text("select unit_code from cases group by 1 order by count(*) desc limit 1")
        ).scalar_one()
        typical = c.execute(  # the commune of median size
            text(
                "select unit_code from (select unit_code, count(*) n from cases group by 1) x "
                "order by n limit 1 offset (select count(distinct unit_code) / 2 from cases)"
            )
        ).scalar_one()
        per = {
            u: c.execute(
                text("select count(*) from cases where unit_code = :u or province_code = :u"),
                {"u": u},
            ).scalar_one()
            for u in (province, commune, typical)
        }
    print("rows:", ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    factory = make_session_factory(engine)
    calendar = WorkingCalendar()
    for spec in ("2026H1", "2026"):
        start, end = period(spec)
        for unit in (None, province, commune, typical):
            times = []
            for _ in range(args.runs):
                with factory() as session:
                    t = time.perf_counter()
                    indicators(
                        session, registry, unit, start, end, today=END.date(), calendar=calendar
                    )
                    times.append(time.perf_counter() - t)
            label = unit or "country"
            cases = per.get(unit, sizes["cases"])
            print(
                f"{spec:>7} {label:>8} ({cases:>9,} cases): best {min(times):.3f} s, "
                f"median {statistics.median(times):.3f} s"
            )
    engine.dispose()
    if args.drop:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA IF EXISTS {args.schema} CASCADE"))
    admin.dispose()


if __name__ == "__main__":
    main()
