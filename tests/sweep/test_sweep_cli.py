"""``rehabflow sweep --now ... --inline`` end to end on SQLite: the escalation ladder across Tết
2027 and a weekend, the automatic close after 24 months of post-rehab supervision, and a sweep
that does nothing the second time.

Cases are prepared through the service on the database the CLI uses; each sweep is one CLI
invocation, which also relays the outbox and delivers into the agencies' inboxes in-process.
``tests/integration/test_sweep.py`` covers the engine-level arithmetic; here the point is what
the agencies see (inbox items, only in the case's commune) and what the case's audit trail says.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from workflow.model import (
    AuditEvent,
    Case,
    Deadline,
    Delivery,
    InboxItem,
    OutboxMessage,
)

from ..conftest import OTHER_COMMUNE
from ..integration.helpers import at
from .conftest import App

LEVEL_1 = ("commune_pc", "commune_police")  # register_voluntary, at due
LEVEL_2 = ("district_labour_office", "district_police")  # at due + 5 working days
NOTHING = {"rows": 0, "reminders": 0, "escalations": 0, "automatic": 0, "relayed": 0}
QUIET = {"rows": 0, "reminders": 0, "escalations": 0, "automatic": 0}  # may relay transitions


def figures(report: dict[str, int], *keys: str) -> dict[str, int]:
    return {k: report[k] for k in keys or NOTHING}


def deadline(app: App, case_id: int, key: str) -> Deadline:
    with app.services.session_factory() as s:
        return (
            s.execute(
                select(Deadline)
                .where(Deadline.case_id == case_id, Deadline.key == key)
                .order_by(Deadline.id.desc())
            )
            .scalars()
            .first()
        )


def addicted(app: App, result_day: date, *, opened: date | None = None) -> int:
    """A case whose addiction result is dated ``result_day``: register_voluntary is open."""
    cid = app.drive.open(opened or result_day).case_id
    app.drive.fire(cid, "request_determination", opened or result_day)
    app.drive.fire(cid, "record_addiction_result", result_day, result_date=result_day.isoformat())
    return cid


def snapshot(app: App) -> dict[str, list]:
    """Everything a sweep may write, row by row."""
    with app.services.session_factory() as s:
        return {
            "audit": s.execute(select(AuditEvent.seq, AuditEvent.hash)).all(),
            "outbox": s.execute(select(OutboxMessage.id, OutboxMessage.status)).all(),
            "inbox": s.execute(select(InboxItem.id, InboxItem.message_id)).all(),
            "deliveries": s.execute(
                select(Delivery.id, Delivery.status, Delivery.attempts, Delivery.updated_at)
            ).all(),
            "deadlines": s.execute(
                select(
                    Deadline.id,
                    Deadline.status,
                    Deadline.next_action_on,
                    Deadline.escalation_level,
                    Deadline.reminded_on,
                )
            ).all(),
            "cases": s.execute(select(Case.id, Case.state, Case.version)).all(),
        }


# ------------------------------------------------------------------------------ (a) ladder
def test_escalation_ladder_across_tet_and_a_weekend(app: App) -> None:
    """Result 03/02/2027; Tết holidays 04–10/02/2027, so 5 working days end on Wed 17/02:
    reminder Tue 16/02, on time Wed 17/02, level 1 on Thu 18/02, level 2 once 5 more working
    days have passed (18, 19, [weekend], 22, 23, 24/02) -> Thu 25/02. A case that registers
    on Mon 15/02 meets its deadline and never escalates."""
    d = app.services.registry.get("drug_rehab", 1)
    reminded = d.deadline_actors("register_voluntary")
    assert reminded
    app.watch(*LEVEL_1, *LEVEL_2, *reminded)
    late = addicted(app, date(2027, 2, 3), opened=date(2027, 2, 1))
    met = addicted(app, date(2027, 2, 3), opened=date(2027, 2, 1))
    row = deadline(app, late, "register_voluntary")
    assert (row.due_on, row.remind_on) == (date(2027, 2, 17), date(2027, 2, 16))

    # Tết itself: nothing is due yet (the determination deadline was met by the result); the
    # transitions' own notifications go out
    r = app.sweep(at(date(2027, 2, 8)))
    assert figures(r, *QUIET) == QUIET
    assert r["relayed"] > 0
    app.drive.fire(met, "register_substitution", date(2027, 2, 15))
    assert deadline(app, met, "register_voluntary").status == "met"
    assert figures(app.sweep(at(date(2027, 2, 15))), *QUIET) == QUIET

    # Tue 16/02: one reminder (the met case gets none), to the agencies that can meet it
    r = app.sweep(at(date(2027, 2, 16)))
    assert (r["reminders"], r["escalations"], r["relayed"]) == (1, 0, 1)
    for agency_type in reminded:
        items = app.inbox(agency_type, topic="deadline_reminder")
        assert [(i["case_id"], i["deadline"]) for i in items] == [(late, "register_voluntary")]
        assert not app.inbox(agency_type, OTHER_COMMUNE)

    # Wed 17/02: due today, still on time
    assert figures(app.sweep(at(date(2027, 2, 17), 16))) == NOTHING

    # Thu 18/02: level 1 to the commune chairman and police of the case's commune only
    r = app.sweep(at(date(2027, 2, 18)))
    assert (r["rows"], r["reminders"], r["escalations"], r["relayed"]) == (1, 0, 1, 1)
    for agency_type in LEVEL_1:
        items = app.inbox(agency_type, topic="deadline_escalated")
        assert [(i["case_id"], i["level"], i["due_on"]) for i in items] == [(late, 1, "2027-02-17")]
        assert "QUÁ HẠN (cấp 1)" in items[0]["subject"]
        assert "17/02/2027" in items[0]["body"]
        assert not app.inbox(agency_type, OTHER_COMMUNE)
    for agency_type in LEVEL_2:
        assert not app.inbox(agency_type)

    # Fri 19/02, the weekend and Mon-Wed 22-24/02: the 5 working days of grace are running
    for day in (19, 20, 21, 22, 23, 24):
        assert figures(app.sweep(at(date(2027, 2, day)))) == NOTHING, day

    # Thu 25/02: level 2 to the district
    r = app.sweep(at(date(2027, 2, 25)))
    assert (r["escalations"], r["relayed"]) == (1, 1)
    for agency_type in LEVEL_2:
        items = app.inbox(agency_type, topic="deadline_escalated")
        assert [(i["case_id"], i["level"]) for i in items] == [(late, 2)]
        assert not app.inbox(agency_type, OTHER_COMMUNE)
    for agency_type in LEVEL_1:  # level 1 is not sent again
        assert [i["level"] for i in app.inbox(agency_type, topic="deadline_escalated")] == [1]

    # the ladder is over; later sweeps are silent
    assert figures(app.sweep(at(date(2027, 3, 5)))) == NOTHING  # (a roll-call of `met` on 10/03)
    assert deadline(app, late, "register_voluntary").next_action_on is None

    escalated = app.events(late, "deadline.escalated")
    assert [(e.actor, e.extra["deadline"], e.extra["level"], e.at) for e in escalated] == [
        ("system", "register_voluntary", 1, at(date(2027, 2, 18))),
        ("system", "register_voluntary", 2, at(date(2027, 2, 25))),
    ]
    assert [e.extra["deadline"] for e in app.events(late, "deadline.reminder")] == [
        "register_voluntary"
    ]
    # the met deadline: no reminder, no escalation, nothing in any inbox about it
    assert [
        e for e in app.events(met, "deadline.") if e.extra["deadline"] == "register_voluntary"
    ] == []
    for agency_type in {*LEVEL_1, *LEVEL_2, *reminded}:
        assert not app.inbox(agency_type, case_id=met, topic="deadline_escalated")
        assert not app.inbox(agency_type, case_id=met, topic="deadline_reminder")
    assert {d.status for d in app.deliveries()} == {"delivered"}
    assert app.services.cases.verify_audit().ok


# ---------------------------------------------------------------------- (b) automatic close
def supervised_adult(app: App) -> int:
    """An adult through compulsory rehab into 24 months of post-rehab supervision."""
    drive = app.drive
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
    return cid


def test_automatic_close_after_24_months_of_supervision(app: App) -> None:
    """Decision 17/11/2027 + 24 months = Sat 17/11/2029 -> due Mon 19/11/2029: the sweep of
    that day closes the case as the system, and the commune is told."""
    app.watch("commune_pc", "commune_police")
    cid = supervised_adult(app)
    with app.services.session_factory() as s:
        assert s.get(Case, cid).fields["post_rehab_months"] == 24
    assert deadline(app, cid, "supervision_term").due_on == date(2029, 11, 19)

    r = app.sweep(at(date(2029, 11, 16)))  # Friday before: a reminder, no close
    assert r["automatic"] == 0
    with app.services.session_factory() as s:
        assert s.get(Case, cid).state == "post_rehab_supervision"
    assert [e.extra["deadline"] for e in app.events(cid, "deadline.reminder")] == [
        "supervision_term"
    ]

    due = at(date(2029, 11, 19), 7)
    r = app.sweep(due)
    assert (r["automatic"], r["refused"]) == (1, 0)
    with app.services.session_factory() as s:
        case = s.get(Case, cid)
        assert (case.state, case.closed_at) == ("closed", due)
        assert case.fields["closure_reason"] == "supervision_ended"
        open_rows = s.scalar(
            select(func.count())
            .select_from(Deadline)
            .where(Deadline.case_id == cid, Deadline.status == "open")
        )
    assert open_rows == 0  # the term is met, the roll-call schedule cancelled
    assert deadline(app, cid, "supervision_term").status == "met"
    last = app.events(cid)[-1]
    assert (last.actor, last.actor_id, last.action) == (
        "system",
        None,
        "transition:end_supervision",
    )
    assert (last.from_state, last.to_state, last.at) == ("post_rehab_supervision", "closed", due)
    for agency_type in ("commune_pc", "commune_police"):
        items = app.inbox(agency_type, topic="end_supervision")
        assert [(i["case_id"], i["to_state"]) for i in items] == [(cid, "closed")]
        assert not app.inbox(agency_type, OTHER_COMMUNE)

    # later sweeps: the case stays closed, nothing more is said about it
    assert figures(app.sweep(at(date(2029, 11, 20)))) == NOTHING
    assert app.events(cid)[-1].seq == last.seq
    assert app.services.cases.verify_audit().ok


# ---------------------------------------------------------------------------- (c) idempotent
def test_same_sweep_twice_changes_nothing(app: App) -> None:
    """At Tue 02/03/2027 9:00 one sweep has everything to do at once: a late ladder (levels 1
    and 2), a reminder, roll-call escalations and an automatic close. Running the very same
    command again, and once more later that day, writes nothing at all."""
    app.watch(*LEVEL_1, *LEVEL_2)
    late = addicted(app, date(2027, 2, 3), opened=date(2027, 2, 1))
    reminded = addicted(app, date(2027, 2, 24))  # due Wed 03/03, reminder Tue 02/03
    closing = app.drive.open(date(2026, 3, 2)).case_id
    for key in (
        "request_determination",
        "record_addiction_result",
        "register_substitution",
        "complete_substitution",
        "decide_post_rehab",
    ):
        app.drive.fire(closing, key, date(2026, 3, 2))
    assert deadline(app, closing, "supervision_term").due_on == date(2027, 3, 2)
    assert deadline(app, reminded, "register_voluntary").remind_on == date(2027, 3, 2)

    now = "2027-03-02T09:00:00+07:00"
    first = app.sweep(now)
    # late: 2 levels; closing: the missed monthly roll-call's 2 levels
    assert figures(first, "reminders", "escalations", "automatic", "refused") == {
        "reminders": 1,
        "escalations": 4,
        "automatic": 1,
        "refused": 0,
    }
    assert first["relayed"] > 0
    assert [e.extra["level"] for e in app.events(late, "deadline.escalated")] == [1, 2]
    before = snapshot(app)
    assert before["inbox"] and before["deliveries"]
    assert {row.status for row in app.deliveries()} == {"delivered"}

    second = app.sweep(now)
    assert figures(second, *NOTHING, "requeued", "calendar") == {
        **NOTHING,
        "requeued": 0,
        "calendar": 0,
    }
    assert snapshot(app) == before

    assert figures(app.sweep("2027-03-02T23:59:00+07:00")) == NOTHING  # same business day
    assert snapshot(app) == before
    with app.services.session_factory() as s:
        assert s.get(Case, closing).state == "closed"
    assert app.services.cases.verify_audit().ok
