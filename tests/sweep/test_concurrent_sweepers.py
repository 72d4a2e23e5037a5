"""Two sweepers at once on PostgreSQL: every due item is processed exactly once.

Each sweeper is a separate application (its own engine, session factory and CaseService) on
the same database, released together by a barrier at the same ``now``. Rows are shared out with
``FOR UPDATE SKIP LOCKED``; the audit chain must stay one line.

One case of each kind is driven through the service; the others are copies of it made in SQL
(subject, case and deadline rows; driving 80 cases through their documents and transitions would
take half a minute and prove nothing more about the sweep).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from workflow.db import make_engine, make_session_factory
from workflow.model import AuditEvent, Case, Deadline, OutboxMessage, Subject
from workflow.registry import Registry
from workflow.service import CaseService
from workflow.storage import MemoryBlobStore
from workflow.sweep import SweepReport, sweep_deadlines

from ..conftest import PG_URL, Actors, _truncate_pg
from ..integration.helpers import Driver, at

pytestmark = pytest.mark.postgres

LATE = 60  # register_voluntary overdue: level 1 due
CLOSING = 20  # supervision_term due (automatic close) + a missed roll-call (levels 1 and 2)
NOW = at(date(2027, 3, 2))  # Tuesday
JOIN_TIMEOUT = 120.0


@pytest.fixture
def pg(pg_engine: Engine) -> Engine:
    _truncate_pg(pg_engine)
    return pg_engine


@pytest.fixture
def services(pg: Engine, registry: Registry) -> Iterator[list[CaseService]]:
    """Three applications on the same database: one to prepare cases, two sweepers."""
    with pg.connect() as conn:
        schema = conn.execute(text("select current_schema()")).scalar_one()
    engines = [
        make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"}) for _ in range(3)
    ]
    yield [
        CaseService(
            make_session_factory(e), registry, secret_key="test-secret", blobs=MemoryBlobStore()
        )
        for e in engines
    ]
    for e in engines:
        e.dispose()


def late_case(drive: Driver) -> int:
    """Result Fri 19/02/2027 -> due Fri 26/02; level 1 fires from Sat 27/02, level 2 only on
    06/03 (5 working days after due), so at NOW exactly one escalation is due."""
    day = date(2027, 2, 19)
    cid = drive.open(day).case_id
    drive.fire(cid, "request_determination", day)
    drive.fire(cid, "record_addiction_result", day, result_date=day.isoformat())
    return cid


def closing_case(drive: Driver) -> int:
    """Substitution treatment then 12 months of supervision decided Mon 02/03/2026: due at NOW;
    the monthly roll-call due 02/04/2026 was never recorded (levels 1 and 2 overdue)."""
    day = date(2026, 3, 2)
    cid = drive.open(day).case_id
    for key in (
        "request_determination",
        "record_addiction_result",
        "register_substitution",
        "complete_substitution",
        "decide_post_rehab",
    ):
        drive.fire(cid, key, day)
    return cid


def copies(engine: Engine, case_id: int, n: int) -> list[int]:
    """``n`` copies of a case: its subject, the case row and its deadline rows."""
    subjects, cases, deadlines = (m.__table__ for m in (Subject, Case, Deadline))
    out = []
    with engine.begin() as conn:
        case = conn.execute(select(cases).where(cases.c.id == case_id)).mappings().one()
        subject = (
            conn.execute(select(subjects).where(subjects.c.id == case["subject_id"]))
            .mappings()
            .one()
        )
        rows = conn.execute(select(deadlines).where(deadlines.c.case_id == case_id)).mappings()
        rows = [{k: v for k, v in r.items() if k != "id"} for r in rows]
        subject = {k: v for k, v in subject.items() if k != "id"}
        case = {k: v for k, v in case.items() if k != "id"}
        for i in range(n):
            subject_id = conn.execute(
                subjects.insert().values(subject).returning(subjects.c.id)
            ).scalar_one()
            copy = {**case, "subject_id": subject_id, "number": f"{case['number']}-{i}"}
            new_id = conn.execute(cases.insert().values(copy).returning(cases.c.id)).scalar_one()
            conn.execute(deadlines.insert(), [{**r, "case_id": new_id} for r in rows])
            out.append(new_id)
    return out


@dataclass
class Outcome:
    report: SweepReport | None = None
    error: BaseException | None = None


def together(*calls: Callable[[], Any]) -> list[Outcome]:
    barrier = threading.Barrier(len(calls))
    outcomes = [Outcome() for _ in calls]

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[i].report = call()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcomes[i].error = exc

    threads = [
        threading.Thread(target=run, args=(i, c), daemon=True, name=f"sweeper-{i}")
        for i, c in enumerate(calls)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a sweeper hangs"
    return outcomes


@pytest.mark.parametrize("batch", [7, 500])
def test_two_sweepers_process_each_due_item_once(
    pg: Engine, services: list[CaseService], batch: int
) -> None:
    prep, one, two = services
    drive = Driver(prep, Actors(prep.session_factory))
    late, closing = late_case(drive), closing_case(drive)
    late = [late, *copies(pg, late, LATE - 1)]
    closing = [closing, *copies(pg, closing, CLOSING - 1)]
    with prep.uow(read_only=True) as uow:
        due = list(
            uow.session.execute(
                select(Deadline.id, Deadline.case_id, Deadline.key).where(
                    Deadline.status == "open", Deadline.next_action_on <= NOW.date()
                )
            ).all()
        )
        # (seqs are no high-water mark: each audit lane has its own)
        before = set(uow.session.scalars(select(AuditEvent.seq)))
    by_key = Counter(k for _, _, k in due)
    assert by_key == {
        "register_voluntary": LATE,
        "supervision_term": CLOSING,
        "check_in_due": CLOSING,
    }

    outcomes = together(
        lambda: sweep_deadlines(one, NOW, batch=batch),
        lambda: sweep_deadlines(two, NOW, batch=batch),
    )
    errors = [o.error for o in outcomes if o.error is not None]
    assert not errors, errors
    reports = [o.report for o in outcomes]
    assert sum(r.rows for r in reports) == len(due) == LATE + 2 * CLOSING
    assert sum(r.escalations for r in reports) == LATE + 2 * CLOSING
    assert sum(r.automatic for r in reports) == CLOSING
    assert sum(r.reminders + r.automatic_refused for r in reports) == 0

    with prep.uow(read_only=True) as uow:
        s = uow.session
        events = [e for e in s.execute(select(AuditEvent)).scalars() if e.seq not in before]
        escalated = Counter(
            (e.extra["deadline_id"], e.extra["level"])
            for e in events
            if e.action == "deadline.escalated"
        )
        closed = Counter(e.case_id for e in events if e.action == "transition:end_supervision")
        actors = {e.actor for e in events}
        states = dict(s.execute(select(Case.id, Case.state)).all())
        messages = Counter(
            m.audit_seq
            for m in s.execute(
                select(OutboxMessage).where(OutboxMessage.topic == "deadline_escalated")
            ).scalars()
        )
    level_1 = {i for i, _, k in due if k in ("register_voluntary", "check_in_due")}
    level_2 = {i for i, _, k in due if k == "check_in_due"}
    expected = {(i, 1) for i in level_1} | {(i, 2) for i in level_2}
    assert set(escalated) == expected
    assert set(escalated.values()) == {1}, [k for k, n in escalated.items() if n > 1]
    assert closed == Counter(closing)
    assert actors == {"system"}
    assert all(states[c] == "closed" for c in closing)
    assert all(states[c] == "addicted" for c in late)
    assert len(messages) == len(expected) and set(messages.values()) == {1}
    assert one.verify_audit().ok

    # and nothing is left for anyone
    again = together(lambda: sweep_deadlines(one, NOW), lambda: sweep_deadlines(two, NOW))
    assert [(o.error, o.report.rows) for o in again] == [(None, 0), (None, 0)]


def test_sweeper_holding_rows_and_an_automatic_transition_do_not_deadlock(
    services: list[CaseService],
) -> None:
    """Lock order. The automatic close of a case, run by one sweeper, cancels the case's open
    roll-call deadline: like every command it locks the case, writes the deadline row, then
    takes the audit-chain head. Meanwhile the other sweeper has taken that very roll-call
    row in its batch (FOR UPDATE) and is about to append its escalation to the audit chain.
    The interleaving is forced with hooks; both sweepers must finish, the case closed today and
    each item processed once (not: PostgreSQL detecting a deadlock and aborting one of them)."""
    prep, one, two = services
    drive = Driver(prep, Actors(prep.session_factory))
    cid = closing_case(drive)
    has_rows, has_head = threading.Event(), threading.Event()

    real_audit_event = two._audit_event

    def audit_event_of_two(*args: Any, **kwargs: Any) -> AuditEvent:
        has_rows.set()  # two holds its batch (the roll-call row) and wants the chain head
        has_head.wait(timeout=2)  # once one's transition holds the head (if it can get it)
        return real_audit_event(*args, **kwargs)

    real_audit = one._audit

    def audit_of_one(*args: Any, **kwargs: Any) -> AuditEvent:
        event = real_audit(*args, **kwargs)
        if event.action.startswith("transition:"):
            has_head.set()
        return event

    two._audit_event = audit_event_of_two
    one._audit = audit_of_one

    def sweep_one() -> SweepReport:
        assert has_rows.wait(timeout=30)
        return sweep_deadlines(one, NOW, batch=1)

    outcomes = together(lambda: sweep_deadlines(two, NOW, batch=1), sweep_one)
    errors = [o.error for o in outcomes if o.error is not None]
    assert not errors, errors
    reports = [o.report for o in outcomes]
    assert sum(r.rows for r in reports) == 2
    assert (sum(r.escalations for r in reports), sum(r.automatic for r in reports)) == (2, 1)
    with prep.uow(read_only=True) as uow:
        assert uow.session.get(Case, cid).state == "closed"
    assert prep.verify_audit().ok
