"""The case list's plans (``workflow.queries``): a filtered page is read from an index in the
list's order, however many newer cases of the commune the filter leaves out."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.engine import Engine

from workflow.model import Case, Subject
from workflow.queries import CaseFilter, list_cases

from ..conftest import COMMUNE, OTHER_COMMUNE, PROVINCE

WHEN = datetime(2026, 6, 1, 8, tzinfo=UTC)
WANTED, OTHER = "compulsory_dossier", "voluntary"


def _fill(engine: Engine, wanted: int, newer_others: int) -> list[int]:
    """A commune whose ``wanted`` oldest cases are in the state and group asked for and whose
    ``newer_others`` newest are in others (a backlog, as the benchmark's demo commune
    holds), after another commune's older cases in that group (half as many): the group is
    common, so a planner that takes the rows to be spread evenly by id expects to find a
    page of them soon when walking the cases backwards by id. Vacuumed (as autovacuum
    would) and statistics gathered. The ids of the commune's cases asked for, newest
    first."""
    row = {
        "definition_key": "drug_rehab",
        "definition_version": 1,
        "version": 1,
        "province_code": PROVINCE,
        "fields": {},
        "opened_at": WHEN,
        "state_entered_at": WHEN,
        "updated_at": WHEN,
    }
    with engine.begin() as conn:
        subject = conn.execute(
            insert(Subject).returning(Subject.id),
            {"full_name": "Nguyễn Văn A", "full_name_folded": "nguyen van a", "unit_code": COMMUNE},
        ).scalar_one()
        row["subject_id"] = subject
        conn.execute(
            insert(Case),
            [row | {"unit_code": OTHER_COMMUNE, "state": "dossier", "state_group": WANTED}]
            * (newer_others // 2),
        )
        conn.execute(
            insert(Case),
            [row | {"unit_code": COMMUNE, "state": "dossier", "state_group": WANTED}] * wanted,
        )
        conn.execute(
            insert(Case),
            [row | {"unit_code": COMMUNE, "state": "home_rehab", "state_group": OTHER}]
            * newer_others,
        )
        ids = conn.execute(
            text("SELECT id FROM cases WHERE unit_code = :u AND state_group = :g ORDER BY id DESC"),
            {"u": COMMUNE, "g": WANTED},
        ).scalars()
        wanted_ids = list(ids)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    return wanted_ids


def _page_and_plan(engine: Engine, session_factory, actor, f: CaseFilter, **kw):  # noqa: ANN001, ANN202
    """A page of the list (as ``list_cases`` gives it) and the plan of its statement."""
    sent: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:  # noqa: ANN001
        if "FROM cases" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with session_factory() as session:
            page = list_cases(session, actor, f, date(2026, 6, 1), **kw)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(statement, parameters)] = sent
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            plan = conn.exec_driver_sql(f"EXPLAIN (COSTS OFF) {statement}", parameters)
        else:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        lines = [str(r[-1]) for r in plan]
    return page, "\n".join(lines)


@pytest.mark.parametrize(
    ("f", "index"),
    [
        (CaseFilter(group=WANTED), "ix_cases_unit_group"),
        (CaseFilter(state="dossier"), "ix_cases_unit_state"),
    ],
    ids=["group", "state"],
)
def test_a_filtered_page_is_read_from_its_index_in_order(
    engine: Engine,
    session_factory,  # noqa: ANN001
    actors,  # noqa: ANN001
    f: CaseFilter,
    index: str,
) -> None:
    """The ``group=`` (or ``state=``) filter of a commune whose 3,000 newest cases are in
    another group and state: the page's ids come from ``ix_cases_unit_group`` (or
    ``ix_cases_unit_state``), already in the list's order, rather than
    from a walk backwards through every newer case of the commune (what PostgreSQL chose
    when the page was one query, the index there or not); the pages hold the group's cases,
    newest first, and the cursor goes on where the last page ended."""
    wanted = _fill(engine, wanted=30, newer_others=3000)
    police = actors.get("commune_police", "officer")
    (rows, cursor), plan = _page_and_plan(engine, session_factory, police, f, limit=20)
    assert index in plan, plan
    if engine.dialect.name == "postgresql":
        # the page is the first rows of the index scan (no sort, no filter below its limit);
        # the sort above it orders the page's rows only
        lines = plan.splitlines()
        below_limit = lines[next(i for i, x in enumerate(lines) if x.strip(" ->") == "Limit") + 1]
        assert f"Index Only Scan Backward using {index}" in below_limit, plan
    else:
        assert "TEMP B-TREE" not in plan and "SCAN cases" not in plan, plan
    assert [c.id for c in rows] == wanted[:20]
    assert cursor is not None
    (rows, cursor), _ = _page_and_plan(engine, session_factory, police, f, limit=20, cursor=cursor)
    assert [c.id for c in rows] == wanted[20:] and cursor is None
