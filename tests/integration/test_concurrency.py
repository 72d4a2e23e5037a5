"""Concurrent commands, on SQLite and PostgreSQL (scenario 4: two officers at once).

Threads are released together by a :class:`threading.Barrier`, so both requests really are in
flight at the same time. SQLite serialises writers with ``BEGIN IMMEDIATE``. On PostgreSQL a
command runs optimistically first (its write checks the version it read, and writes nothing
if the case changed), then locked (``SELECT ... FOR UPDATE``); the audit-chain head is locked
by every write. Either way: one winner, one audit event, one set of
notifications, a version bumped by exactly one, and an audit chain that verifies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select

from workflow.errors import (
    DomainError,
    MissingDocuments,
    PreconditionFailed,
    StaleCase,
    TransitionNotAvailable,
)
from workflow.model import ActivityRecord, AuditEvent, Case, Document, OutboxMessage
from workflow.service import CaseService, CommandResult
from workflow.simulate import fake_pdf

from .helpers import Driver, at

ROUNDS = 5
DAY = date(2026, 11, 13)  # a Friday
JOIN_TIMEOUT = 120.0


# --------------------------------------------------------------------------------- helpers
@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def race(*calls: Callable[[], Any]) -> list[Outcome]:
    """Run every call in its own thread, all released at once; collect results and errors."""
    barrier = threading.Barrier(len(calls))
    outcomes = [Outcome() for _ in calls]

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[i].result = call()
        except BaseException as exc:
            outcomes[i].error = exc

    threads = [
        threading.Thread(target=run, args=(i, c), daemon=True, name=f"racer-{i}")
        for i, c in enumerate(calls)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a racing thread hangs (deadlock?)"
    return outcomes


def only_domain_errors(outcomes: list[Outcome]) -> None:
    """Anything but a success or a DomainError is a bug: show it with its traceback."""
    for o in outcomes:
        if o.error is not None and not isinstance(o.error, DomainError):
            raise AssertionError(f"unexpected {type(o.error).__name__}") from o.error


@dataclass(frozen=True)
class CaseSnapshot:
    state: str
    version: int
    audit_total: int
    case_events: tuple[tuple[int, str], ...]
    outbox: tuple[tuple[int | None, str], ...]


def snapshot(service: CaseService, case_id: int) -> CaseSnapshot:
    with service.uow(read_only=True) as uow:
        s = uow.session
        case = s.get(Case, case_id)
        events = s.execute(
            select(AuditEvent.seq, AuditEvent.action)
            .where(AuditEvent.case_id == case_id)
            .order_by(AuditEvent.seq)
        ).all()
        outbox = s.execute(
            select(OutboxMessage.audit_seq, OutboxMessage.topic)
            .where(OutboxMessage.case_id == case_id)
            .order_by(OutboxMessage.audit_seq, OutboxMessage.topic)
        ).all()
        return CaseSnapshot(
            case.state,
            case.version,
            s.scalar(select(func.count()).select_from(AuditEvent)),
            tuple((seq, action) for seq, action in events),
            tuple((seq, topic) for seq, topic in outbox),
        )


def to_addicted(drive: Driver, day: date) -> int:
    cid = drive.open(day).case_id
    drive.fire(cid, "request_determination", day)
    drive.fire(cid, "record_addiction_result", day)
    return cid


def at_detected(drive: Driver, day: date) -> int:
    return drive.open(day).case_id


def at_dossier_reading(drive: Driver, day: date) -> int:
    cid = to_addicted(drive, day)
    drive.fire(cid, "open_compulsory_dossier", day, violation="not_registered")
    drive.fire(cid, "notify_dossier_reading", day)
    return cid


@dataclass(frozen=True)
class Scenario:
    transition: str
    prepare: Callable[[Driver, date], int]
    officers: tuple[tuple[str, str], tuple[str, str]]


SCENARIOS = {
    # the first step of every case: two commune police officers ask for the determination
    "request_determination": Scenario(
        "request_determination",
        at_detected,
        (("commune_police", "officer"), ("commune_police", "head")),
    ),
    # scenario 4 itself: "send the dossier to the labour office", by police and commune chairman
    "send_for_legal_check": Scenario(
        "send_for_legal_check",
        at_dossier_reading,
        (("commune_police", "head"), ("commune_pc", "head")),
    ),
}


def prepare_race(drive: Driver, sc: Scenario, day: date) -> tuple[int, list[Any], list[dict]]:
    """A case ready for ``sc.transition``: documents attached, a form per officer."""
    cid = sc.prepare(drive, day)
    t = drive.definition(cid).transitions[sc.transition]
    drive.attach(cid, [req.any_of[0] for req in t.documents], day)
    officers = [drive.actors.get(agency, role) for agency, role in sc.officers]
    forms = [drive.form(cid, sc.transition, day) for _ in officers]
    return cid, officers, forms


def assert_one_transition(
    drive: Driver,
    service: CaseService,
    cid: int,
    key: str,
    before: CaseSnapshot,
    winner: CommandResult,
    *,
    audit_delta: int = 1,
) -> None:
    """Exactly one audit event and one set of notifications for ``key``; version + 1.

    ``audit_delta``: events written to the whole (global) chain meanwhile, other cases included.
    """
    t = drive.definition(cid).transitions[key]
    after = snapshot(service, cid)
    assert after.state == t.dest == winner.state
    assert after.version == before.version + 1 == winner.version
    assert after.audit_total == before.audit_total + audit_delta
    fired = [(seq, action) for seq, action in after.case_events if action == f"transition:{key}"]
    assert fired == [(winner.audit_seq, f"transition:{key}")]
    new_messages = sorted(set(after.outbox) - set(before.outbox))
    assert len(after.outbox) == len(before.outbox) + len(t.notify)
    assert new_messages == sorted((winner.audit_seq, n.template) for n in t.notify)


# ----------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_transition_same_version_exactly_one_wins(
    drive: Driver, service: CaseService, name: str
) -> None:
    sc = SCENARIOS[name]
    for n in range(ROUNDS):
        day = DAY + timedelta(days=7 * n)
        cid, officers, forms = prepare_race(drive, sc, day)
        before = snapshot(service, cid)
        outcomes = race(
            *(
                partial(
                    service.advance,
                    cid,
                    sc.transition,
                    form,
                    officer,
                    at(day, 10),
                    expected_version=before.version,
                )
                for officer, form in zip(officers, forms)
            )
        )
        only_domain_errors(outcomes)
        winners = [o.result for o in outcomes if o.ok]
        losers = [o.error for o in outcomes if not o.ok]
        assert len(winners) == 1, f"round {n}: {len(winners)} winners, errors {losers!r}"
        (loser,) = losers
        # told the case changed (412 If-Match, or 409 if the lost race shows at commit)
        assert isinstance(loser, StaleCase), f"round {n}: loser got {loser!r}"
        if isinstance(loser, PreconditionFailed):
            assert loser.details["current_version"] == before.version + 1
        assert_one_transition(drive, service, cid, sc.transition, before, winners[0])
    verdict = service.verify_audit()
    assert verdict.ok, verdict


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_transition_without_expected_version_fires_once(
    drive: Driver, service: CaseService, name: str
) -> None:
    sc = SCENARIOS[name]
    for n in range(ROUNDS):
        day = DAY + timedelta(days=7 * n)
        cid, officers, forms = prepare_race(drive, sc, day)
        before = snapshot(service, cid)
        outcomes = race(
            *(
                partial(service.advance, cid, sc.transition, form, officer, at(day, 10))
                for officer, form in zip(officers, forms)
            )
        )
        only_domain_errors(outcomes)
        winners = [o.result for o in outcomes if o.ok]
        losers = [o.error for o in outcomes if not o.ok]
        assert len(winners) == 1, f"round {n}: {len(winners)} winners, errors {losers!r}"
        (loser,) = losers
        # the second request finds the state already moved on (or loses at commit)
        assert isinstance(loser, TransitionNotAvailable | StaleCase), f"round {n}: {loser!r}"
        if isinstance(loser, TransitionNotAvailable):
            assert loser.details["state"] == winners[0].state
        assert_one_transition(drive, service, cid, sc.transition, before, winners[0])
    verdict = service.verify_audit()
    assert verdict.ok, verdict


def test_different_cases_advance_concurrently(drive: Driver, service: CaseService) -> None:
    """Writers on different cases do not block each other out; the one audit chain stays whole."""
    sc = SCENARIOS["request_determination"]
    width = 4
    for n in range(ROUNDS):
        day = DAY + timedelta(days=7 * n)
        prepared = [prepare_race(drive, sc, day) for _ in range(width)]
        befores = {cid: snapshot(service, cid) for cid, _, _ in prepared}
        total_before = max(b.audit_total for b in befores.values())
        outcomes = race(
            *(
                partial(
                    service.advance,
                    cid,
                    sc.transition,
                    forms[0],
                    officers[0],
                    at(day, 10),
                    expected_version=befores[cid].version,
                )
                for cid, officers, forms in prepared
            )
        )
        only_domain_errors(outcomes)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        results: list[CommandResult] = [o.result for o in outcomes]
        seqs = sorted(r.audit_seq for r in results)
        assert seqs == list(range(total_before + 1, total_before + width + 1))
        for r in results:
            before = befores[r.case_id]
            assert_one_transition(
                drive, service, r.case_id, sc.transition, before, r, audit_delta=width
            )
        verdict = service.verify_audit()
        assert verdict.ok and verdict.checked == total_before + width, verdict


def test_many_writers_on_different_cases_keep_one_chain(
    drive: Driver, service: CaseService
) -> None:
    """Each thread walks its own case (attach, advance, activity): the chain is one line."""
    width = 4
    cases = [drive.open(DAY).case_id for _ in range(width)]
    officer = drive.actors.get("commune_police", "officer")
    doctor = drive.actors.get("health_facility", "doctor")
    forms = {
        key: drive.form(cases[0], key, DAY)
        for key in ("request_determination", "record_addiction_result", "movement_report")
    }
    total_before = snapshot(service, cases[0]).audit_total
    steps_per_case = 5

    def walk(cid: int) -> list[str]:
        done = []
        for i, (code, actor) in enumerate(
            (("determination_request", officer), ("addiction_result", doctor))
        ):
            service.attach_document(
                cid,
                code,
                fake_pdf(f"{cid}-{code}"),
                actor,
                at(DAY, 10 + i),
                filename=f"{code}.pdf",
                media_type="application/pdf",
            )
            key = ("request_determination", "record_addiction_result")[i]
            done.append(service.advance(cid, key, forms[key], actor, at(DAY, 10 + i)).state)
        r = service.record_activity(
            cid, "movement_report", forms["movement_report"], officer, at(DAY, 12)
        )
        done.append(r.state)
        return done

    outcomes = race(*(partial(walk, cid) for cid in cases))
    only_domain_errors(outcomes)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert all(o.result == ["addiction_determination", "addicted", "addicted"] for o in outcomes)
    verdict = service.verify_audit()
    assert verdict.ok, verdict
    assert verdict.checked == total_before + width * steps_per_case
    for cid in cases:
        snap = snapshot(service, cid)
        assert [a for _, a in snap.case_events] == [
            "case.opened",
            "document.attached",
            "transition:request_determination",
            "document.attached",
            "transition:record_addiction_result",
            "activity:movement_report",
        ]
        assert snap.state == "addicted"


def test_revocation_racing_a_transition_is_serialised(
    drive: Driver, service: CaseService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document revoked while a transition that needs it is in flight.

    Either the revocation comes first and the transition is refused (MissingDocuments), or the
    transition comes first and is audited before the revocation. What must never happen is a
    transition committed *after* the revocation of a document it relies on.

    The interleaving is forced: the advancing thread reads the case's active documents, then
    lets another officer revoke the required one before it goes on. On PostgreSQL the advance
    runs optimistically first (no lock): the revocation commits, and since it bumps the case's
    version the advance's write writes nothing; run again with the case locked, the advance
    finds the document revoked. (A locked advance makes the revoker wait for its commit: the
    case-row lock taken by ``revoke_document``.) Without either, the transition commits after
    the revocation, using the revoked document (regression test).
    """
    cid = drive.open(DAY).case_id
    drive.attach(cid, ["determination_request"], DAY)
    officer = drive.actors.get("commune_police", "officer")
    chief = drive.actors.get("commune_police", "head")
    with service.uow(read_only=True) as uow:
        doc_id = uow.session.execute(
            select(Document.id).where(Document.case_id == cid)
        ).scalar_one()
    form = drive.form(cid, "request_determination", DAY)
    revoker_outcome = Outcome()
    original = CaseService._command_case
    revoker: list[threading.Thread] = []

    def revoke() -> None:
        try:
            revoker_outcome.result = service.revoke_document(
                cid, doc_id, "giả mạo", chief, at(DAY, 10)
            )
        except BaseException as exc:
            revoker_outcome.error = exc

    def active_documents_then_revoke(self: CaseService, uow: Any, request: Any) -> Any:
        docs = original(self, uow, request)  # the locked case, documents, deadlines
        if not revoker:
            t = threading.Thread(target=revoke, daemon=True, name="revoker")
            revoker.append(t)
            t.start()
            # PostgreSQL: nothing stops the revoker, it commits now. SQLite: it waits for
            # our write lock (BEGIN IMMEDIATE), so give up waiting after a moment.
            t.join(1.0)
        return docs

    monkeypatch.setattr(CaseService, "_command_case", active_documents_then_revoke)
    try:
        result: CommandResult | None = service.advance(
            cid, "request_determination", form, officer, at(DAY, 11)
        )
    except MissingDocuments:
        result = None
    finally:
        monkeypatch.setattr(CaseService, "_command_case", original)
        for t in revoker:
            t.join(JOIN_TIMEOUT)
    assert revoker and not revoker[0].is_alive()
    if revoker_outcome.error is not None:
        raise AssertionError("the revocation failed") from revoker_outcome.error
    events = service.events(cid, officer)
    seq_of = {e.action: e.seq for e in events}
    assert "document.revoked" in seq_of
    assert service.verify_audit().ok
    if result is not None:
        assert seq_of["transition:request_determination"] < seq_of["document.revoked"], (
            "the transition was committed after the revocation of the document it used: "
            + ", ".join(f"{e.seq}:{e.action}" for e in events)
        )


def test_activity_at_the_same_instant_still_bumps_the_version(
    drive: Driver, service: CaseService
) -> None:
    """Two check-ins with the same If-Match version: the second must be refused.

    The version is bumped by the UPDATE the ORM issues for the case row. An activity that sets
    no case field only assigns ``updated_at``; when ``now`` equals the last change nothing has
    changed in the ORM's eyes, no UPDATE is issued and the version stays put, unless the
    service forces it (``flag_modified``). Regression test for that bug.
    """
    cid = to_addicted(drive, DAY)
    officer = drive.actors.get("commune_police", "officer")
    head = drive.actors.get("commune_police", "head")
    before = snapshot(service, cid)
    form = drive.form(cid, "movement_report", DAY)
    # ``to_addicted`` fired its transitions at at(DAY): the activity comes at the same instant
    # (as in a batch import or a simulation that stamps every command of a day alike).
    first = service.record_activity(
        cid, "movement_report", form, officer, at(DAY), expected_version=before.version
    )
    try:
        second = service.record_activity(
            cid, "movement_report", form, head, at(DAY), expected_version=before.version
        )
    except PreconditionFailed:
        second = None
    assert first.version == before.version + 1 and second is None, (
        f"the first activity left the case at version {first.version}; a second one with the "
        f"same expected version {before.version} was "
        + ("refused" if second is None else f"accepted too (audit event {second.audit_seq})")
    )


def test_concurrent_activities_on_one_case_all_land(drive: Driver, service: CaseService) -> None:
    """Several officers record an activity on the same case at once, none with an expected
    version: none may be lost. On PostgreSQL every one but the first to write finds the case
    changed after its optimistic read, writes nothing, and lands when run again with the case
    locked. Each lands once: one event and one record each (the record pointing at its
    event), the version up by their number, the chain whole."""
    width = 6
    for n in range(3):
        day = DAY + timedelta(days=7 * n)
        cid = to_addicted(drive, day)
        before = snapshot(service, cid)
        officers = [drive.actors.get("commune_police", "officer")] * 3 + [
            drive.actors.get("commune_police", "head")
        ] * 3
        forms = [
            drive.form(cid, "movement_report", day, movement=f"đi làm ăn xa, lần {i}")
            for i in range(width)
        ]
        outcomes = race(
            *(
                partial(service.record_activity, cid, "movement_report", form, who, at(day, 10))
                for who, form in zip(officers, forms)
            )
        )
        only_domain_errors(outcomes)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        results = [o.result for o in outcomes]
        after = snapshot(service, cid)
        assert after.version == before.version + width
        assert sorted(r.version for r in results) == list(
            range(before.version + 1, before.version + width + 1)
        )
        new_events = [e for e in after.case_events if e not in before.case_events]
        assert [a for _, a in new_events] == ["activity:movement_report"] * width
        with service.uow(read_only=True) as uow:
            records = uow.session.execute(
                select(ActivityRecord.audit_seq, ActivityRecord.data).where(
                    ActivityRecord.case_id == cid
                )
            ).all()
        assert sorted(seq for seq, _ in records) == sorted(seq for seq, _ in new_events)
        assert sorted(data["movement"] for _, data in records) == sorted(
            f["movement"] for f in forms
        )
    verdict = service.verify_audit()
    assert verdict.ok, verdict
