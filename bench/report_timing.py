"""Where the time of one indicator report goes: every SQL statement, slowest first.

    python -m bench.report_timing --database-url URL [--unit CODE] [--period 2026]
                                  [--runs 2] [--top 12] [--workers 2]

Runs ``workflow.reports.indicators`` ``--runs`` times (the last one is shown: caches warm)
and prints its wall time and the slowest statements with their own times (on PostgreSQL the
statements of the two connections overlap, so they add up to more than the wall time).
``bench.run`` section 7 gives the totals of a full run; this is the tool to find what to
speed up next.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.generate import database_url
from workflow.calendar import WorkingCalendar, business_date
from workflow.db import make_engine, make_session_factory
from workflow.registry import Registry
from workflow.reports import indicators, period

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=None)
    p.add_argument("--unit", default=None, help="commune or province code (default: country)")
    p.add_argument("--period", default=None, help="2026H1, 2026H2 or 2026 (default: this year)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)

    engine = make_engine(database_url(args.database_url))
    timings: list[tuple[float, str]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["bench.t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        took = time.perf_counter() - conn.info.pop("bench.t0", time.perf_counter())
        timings.append((took, " ".join(statement.split())))

    registry = Registry.from_directory(DEFINITIONS)
    today = business_date(datetime.now(UTC))
    start, end = period(args.period or str(today.year))
    factory = make_session_factory(engine)
    wall = 0.0
    for _ in range(max(1, args.runs)):
        timings.clear()
        t0 = time.perf_counter()
        with factory() as session:
            indicators(
                session,
                registry,
                args.unit,
                start,
                end,
                today=today,
                calendar=WorkingCalendar(),
                workers=args.workers,
            )
        wall = time.perf_counter() - t0
    where = args.unit or "the country"
    print(f"report of {where}, {start.isoformat()}..{end.isoformat()}: {wall:.3f} s")
    for took, sql in sorted(timings, reverse=True)[: args.top]:
        print(f"{took:8.3f} s  {sql[:110]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
