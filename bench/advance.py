"""Rough time of one ``advance`` (and the SQL statements it sends), on SQLite or PostgreSQL.

    python -m bench.advance [--database-url URL] [--cases 300]

Opens N cases with the transition's document attached, then fires ``request_determination``
on each, sequentially, and prints the median and p95 time and the statement count of one
advance. A rough figure for the engine issue; the full harness is the benchmark issue's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from datetime import time as dtime

from sqlalchemy import event, text

from workflow import schema
from workflow.accounts import Accounts
from workflow.actors import actor_from_user
from workflow.calendar import BUSINESS_TZ
from workflow.db import make_engine, make_session_factory
from workflow.registry import Registry
from workflow.service import CaseService, SubjectData
from workflow.simulate import fake_pdf

DEFINITIONS = __import__("pathlib").Path(__file__).resolve().parent.parent / "definitions"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args()
    if args.database_url:
        admin = make_engine(args.database_url)
        with admin.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS bench_advance CASCADE"))
            conn.execute(text("CREATE SCHEMA bench_advance"))
        engine = make_engine(
            args.database_url, connect_args={"options": "-csearch_path=bench_advance"}
        )
    else:
        engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    schema.upgrade(engine)
    factory = make_session_factory(engine)
    registry = Registry.from_directory(DEFINITIONS)
    service = CaseService(factory, registry)
    now = datetime.combine(date(2026, 11, 2), dtime(9), tzinfo=BUSINESS_TZ).astimezone(UTC)
    user = Accounts(factory, registry).create_user(
        "bench.officer", "commune_police", "officer", "17662", now
    )
    with factory() as s:
        from workflow.model import User

        actor = actor_from_user(s.get(User, user.id))
    ids = []
    for i in range(args.cases):
        c = service.open_case(SubjectData("Nguyễn Văn Thử", "17662"), actor, now, version=1)
        service.attach_document(
            c.case_id,
            "determination_request",
            fake_pdf(str(i)),
            actor,
            now,
            filename="r.pdf",
            media_type="application/pdf",
        )
        ids.append(c.case_id)
    data = {"request_date": "2026-11-02", "reason": "own_request"}
    statements: list[str] = []
    times = []
    for n, cid in enumerate(ids):
        if n == len(ids) - 1:
            event.listen(
                engine, "before_cursor_execute", lambda *a: statements.append(a[2].split()[0])
            )
        t0 = time.perf_counter()
        service.advance(cid, "request_determination", data, actor, now)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(
        f"{engine.dialect.name}: advance median {statistics.median(times) * 1000:.2f} ms, "
        f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms over {len(times)} cases; "
        f"{len(statements)} SQL statements in one advance"
    )
    if args.database_url:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS bench_advance CASCADE"))


if __name__ == "__main__":
    main()
