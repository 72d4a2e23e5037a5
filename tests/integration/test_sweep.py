"""The deadline sweep driven by a simulated clock: reminders, escalation ladders, check-in
schedules and automatic transitions; idempotent; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from workflow.model import AuditEvent, Case, Deadline, OutboxMessage
from workflow.sweep import sweep_deadlines

from .helpers import Driver, at


def audit_actions(service, case_id: int) -> list[tuple]:  # noqa: ANN001
    with service.uow(read_only=True) as uow:
        rows = uow.session.execute(
            select(AuditEvent.action, AuditEvent.extra)
            .where(AuditEvent.case_id == case_id)
            .order_by(AuditEvent.seq)
        ).all()
    return [(a, e.get("deadline"), e.get("level")) for a, e in rows if a.startswith("deadline")]


def deadline(service, case_id: int, key: str) -> Deadline:  # noqa: ANN001
    with service.uow(read_only=True) as uow:
        return (
            uow.session.execute(
                select(Deadline)
                .where(Deadline.case_id == case_id, Deadline.key == key)
                .order_by(Deadline.id.desc())
            )
            .scalars()
            .first()
        )


def outbox_count(service) -> int:  # noqa: ANN001
    with service.uow(read_only=True) as uow:
        return uow.session.scalar(select(func.count()).select_from(OutboxMessage))


def test_escalation_ladder_across_tet(service, actors) -> None:  # noqa: ANN001
    """Result 03/02/2027; due 17/02 (Tết 04-10/02); reminder 1 working day before (16/02);
    level 1 the day after due (18/02); level 2 when 5 more working days have passed
    (18, 19, 22, 23, 24/02) -> 25/02."""
    drive = Driver(service, actors)
    cid = drive.open(date(2027, 2, 1)).case_id
    drive.fire(cid, "request_determination", date(2027, 2, 1))
    drive.fire(cid, "record_addiction_result", date(2027, 2, 3), result_date="2027-02-03")
    row = deadline(service, cid, "register_voluntary")
    assert (row.due_on, row.remind_on) == (date(2027, 2, 17), date(2027, 2, 16))
    assert sweep_deadlines(service, at(date(2027, 2, 15))).reminders == 0
    r = sweep_deadlines(service, at(date(2027, 2, 16)))
    assert (r.reminders, r.escalations) == (1, 0)
    assert sweep_deadlines(service, at(date(2027, 2, 17))).escalations == 0  # due today: on time
    assert sweep_deadlines(service, at(date(2027, 2, 18))).escalations == 1
    assert sweep_deadlines(service, at(date(2027, 2, 24))).escalations == 0
    assert sweep_deadlines(service, at(date(2027, 2, 25))).escalations == 1
    assert audit_actions(service, cid) == [
        ("deadline.reminder", "register_voluntary", None),
        ("deadline.escalated", "register_voluntary", 1),
        ("deadline.escalated", "register_voluntary", 2),
    ]
    assert deadline(service, cid, "register_voluntary").next_action_on is None


def test_sweep_is_idempotent_and_late_sweep_catches_up(service, actors) -> None:  # noqa: ANN001
    drive = Driver(service, actors)
    cid = drive.open(date(2026, 11, 2)).case_id
    drive.fire(cid, "request_determination", date(2026, 11, 2))
    drive.fire(cid, "record_addiction_result", date(2026, 11, 2))
    first = sweep_deadlines(service, at(date(2026, 12, 31)))
    # everything overdue is escalated once; a reminder after the due date is pointless
    assert (first.reminders, first.escalations) == (0, 2)
    before = (outbox_count(service), len(audit_actions(service, cid)))
    again = sweep_deadlines(service, at(date(2026, 12, 31)))
    assert (again.rows, again.reminders, again.escalations) == (0, 0, 0)
    assert (outbox_count(service), len(audit_actions(service, cid))) == before


def test_met_deadline_does_not_escalate(service, actors) -> None:  # noqa: ANN001
    drive = Driver(service, actors)
    cid = drive.open(date(2026, 11, 2)).case_id
    drive.fire(cid, "request_determination", date(2026, 11, 2))
    drive.fire(cid, "record_addiction_result", date(2026, 11, 2))
    drive.fire(cid, "register_substitution", date(2026, 11, 4))
    assert deadline(service, cid, "register_voluntary").status == "met"
    sweep_deadlines(service, at(date(2026, 12, 31)))
    assert ("deadline.escalated", "register_voluntary", 1) not in audit_actions(service, cid)


def test_monthly_check_in_schedule(service, actors) -> None:  # noqa: ANN001
    drive = Driver(service, actors)
    day = date(2026, 3, 2)
    cid = drive.open(day).case_id
    for key in ("request_determination", "record_addiction_result", "register_substitution"):
        drive.fire(cid, key, day)
    first = deadline(service, cid, "check_in_due")
    assert (first.status, first.due_on) == ("open", date(2026, 4, 2))
    drive.activity(cid, "check_in", date(2026, 3, 30), result="present")
    # the next one: a month after the check-in, 30/04; 30/04 and 01/05 are holidays and
    # 02-03/05 a weekend, so it ends on Monday 04/05
    assert deadline(service, cid, "check_in_due").due_on == date(2026, 5, 4)
    assert sweep_deadlines(service, at(date(2026, 5, 4))).escalations == 0
    # missed: escalates to the commune police the day after due
    assert sweep_deadlines(service, at(date(2026, 5, 5))).escalations == 1
    drive.fire(cid, "complete_substitution", date(2026, 5, 6))
    assert deadline(service, cid, "check_in_due").status == "cancelled"  # left the schedule


def test_automatic_close_after_24_months_of_supervision(service, actors) -> None:  # noqa: ANN001
    drive = Driver(service, actors)
    day = date(2026, 11, 13)
    cid = drive.open(day, born=date(1988, 11, 2)).case_id
    for key in (
        "request_determination",
        "record_addiction_result",
        "open_compulsory_dossier",
        "notify_dossier_reading",
        "send_for_legal_check",
        "transfer_to_court",
    ):
        drive.fire(cid, key, day)
    drive.fire(cid, "accept_case", day, complex=False, review_days=15)
    drive.fire(cid, "decide_compulsory", day, term_months=12)
    drive.fire(cid, "escort_to_facility", date(2026, 11, 16))
    drive.fire(cid, "release_from_facility", date(2027, 11, 16))
    drive.fire(cid, "decide_post_rehab", date(2027, 11, 17))
    due = deadline(service, cid, "supervision_term").due_on
    assert due == date(2029, 11, 19)  # 17/11/2029 is a Saturday
    assert sweep_deadlines(service, at(date(2029, 11, 16))).automatic == 0
    r = sweep_deadlines(service, at(due))
    assert r.automatic == 1, r.details
    with service.uow(read_only=True) as uow:
        case = uow.session.get(Case, cid)
        assert case.state == "closed"
        last = (
            uow.session.execute(
                select(AuditEvent).where(AuditEvent.case_id == cid).order_by(AuditEvent.seq.desc())
            )
            .scalars()
            .first()
        )
    assert (last.actor, last.action) == ("system", "transition:end_supervision")
    assert sweep_deadlines(service, at(due)).automatic == 0
    assert service.verify_audit().ok
