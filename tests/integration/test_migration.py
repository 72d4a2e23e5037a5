"""Migration of running cases between definition versions: plans, dry run, audited real run."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from workflow.actors import SYSTEM
from workflow.errors import DefinitionError, NotPermitted, UnknownDefinition
from workflow.migration import Migrator, parse_where
from workflow.model import AuditEvent, Case, Deadline, MigrationRun, OutboxMessage
from workflow.registry import Registry
from workflow.service import CaseService
from workflow.simulate import path_to
from workflow.storage import MemoryBlobStore

from ..conftest import DEFINITIONS
from .helpers import Driver, at

V1_STATES = [
    "detected",
    "illegal_use_management",
    "addiction_determination",
    "addicted",
    "voluntary_home_pending",
    "voluntary_home",
    "voluntary_facility",
    "substitution_treatment",
    "compulsory_dossier",
    "dossier_reading",
    "legal_check",
    "court_filing",
    "court_review",
    "court_decided",
    "postponed",
    "compulsory_rehab",
    "rehab_completed",
    "post_rehab_supervision",
    "closed",
]
KEPT = [s for s in V1_STATES if s not in ("voluntary_home_pending", "court_review")]

# A test-only version 9: a longer illegal-use term (so that deadline is recounted), a new step
# out of illegal-use management that needs a written statement (a newly required document),
# and a plan from v1 that maps one state elsewhere and leaves one unmapped.
V9 = f"""
key: drug_rehab
version: 9
extends: drug_rehab@3
title: {{vi: "Phiên bản thử nghiệm chuyển đổi", en: "Migration test version"}}
effective_from: 2030-01-01
legal_basis: ["test only"]
parameters:
  illegal_use_months: {{value: 18, verified: false, note: "test: a longer term"}}
transitions:
  - key: test_close_with_statement
    label: {{vi: "Kết thúc (thử nghiệm)", en: "Close (test)"}}
    from: [illegal_use_management]
    to: closed
    allowed:
      - {{agency: commune_police, roles: [head]}}
    documents: [written_statement]
    cite: "test"
migrations:
  - from: drug_rehab@1
    keep: [{", ".join(KEPT)}]
    map: {{voluntary_home_pending: addicted}}
    unmapped:
      - state: court_review
        reason: {{vi: "Đang xét xử (thử nghiệm)", en: "Before the court (test)"}}
    deadlines: {{voluntary_home_decision: cancel}}
"""


@pytest.fixture(scope="module")
def registry9(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    folder = tmp_path_factory.mktemp("defs")
    for f in DEFINITIONS.glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    (folder / "drug_rehab.v9.yaml").write_text(V9, encoding="utf-8")
    return Registry.from_directory(folder)


@pytest.fixture
def service9(session_factory, registry9: Registry) -> CaseService:  # noqa: ANN001
    return CaseService(session_factory, registry9, secret_key="test", blobs=MemoryBlobStore())


@pytest.fixture
def drive(service9: CaseService, actors) -> Driver:  # noqa: ANN001
    return Driver(service9, actors)


def walk(drive: Driver, target: str, day: date, version: int | None = 1) -> int:
    cid = drive.open(day, version=version).case_id
    d = drive.definition(cid)
    for key in path_to(d, target) or []:
        drive.fire(cid, key, day)
    with drive.service.uow(read_only=True) as uow:
        assert uow.get_case(cid).state == target
    return cid


@pytest.fixture
def mixed(drive: Driver) -> dict[str, list[int]]:
    """v1 cases in known states, plus a v2 and a v3 case that must not move."""
    day = date(2025, 2, 3)
    out: dict[str, list[int]] = {}
    for state, n in [
        ("detected", 1),
        ("illegal_use_management", 3),
        ("voluntary_home_pending", 2),
        ("court_review", 1),
    ]:
        out[state] = [walk(drive, state, day) for _ in range(n)]
    out["v2"] = [walk(drive, "illegal_use_management", date(2025, 8, 4), version=2)]
    out["v3"] = [walk(drive, "illegal_use_management", date(2026, 7, 6), version=3)]
    return out


def due(drive: Driver, cid: int, key: str) -> Deadline:
    with drive.service.uow(read_only=True) as uow:
        return uow.session.execute(
            select(Deadline).where(Deadline.case_id == cid, Deadline.key == key)
        ).scalar_one()


NOW = at(date(2030, 1, 6))


def test_the_dry_run_reports_exactly_what_would_happen(
    drive: Driver, mixed: dict[str, list[int]]
) -> None:
    m = Migrator(drive.service)
    with drive.service.uow(read_only=True) as uow:
        before = uow.session.execute(select(func.count()).select_from(AuditEvent)).scalar()
    report = m.dry_run("drug_rehab@1", "drug_rehab@9", {}, NOW)
    assert (report["cases"], report["movable"], report["unmovable_count"]) == (7, 6, 1)
    assert report["states"] == [
        {"from_state": "court_review", "to_state": None, "cases": 1,
         "reason": {"vi": "Đang xét xử (thử nghiệm)", "en": "Before the court (test)"}},
        {"from_state": "detected", "to_state": "detected", "cases": 1, "reason": None},
        {"from_state": "illegal_use_management", "to_state": "illegal_use_management",
         "cases": 3, "reason": None},
        {"from_state": "voluntary_home_pending", "to_state": "addicted", "cases": 2,
         "reason": None},
    ]  # fmt: skip
    assert report["deadlines"] == [
        {"key": "illegal_use_term", "policy": "recompute", "cases": 3, "changed": 3},
        {"key": "voluntary_home_decision", "policy": "cancel", "cases": 2, "changed": 0},
    ]
    docs = {(r["state"], r["document"]): r["cases_missing"] for r in report["new_documents"]}
    assert docs[("illegal_use_management", "written_statement")] == 3
    # documents of addicted that voluntary_home_pending did not need, and the cases lack
    assert docs[("addicted", "service_contract")] == 2
    assert ("addicted", "addiction_result") not in docs  # attached on the way
    assert [u["case_id"] for u in report["unmovable"]] == mixed["court_review"]
    # restricted to one state
    only = m.dry_run("drug_rehab@1", "drug_rehab@9", parse_where(["state=detected"]), NOW)
    assert (only["cases"], only["movable"]) == (1, 1)
    # nothing changed
    with drive.service.uow(read_only=True) as uow:
        assert uow.session.execute(select(func.count()).select_from(AuditEvent)).scalar() == before
        versions = uow.session.execute(select(Case.definition_version, func.count()).group_by(
            Case.definition_version)).all()  # fmt: skip
        assert dict(versions) == {1: 7, 2: 1, 3: 1}


def test_a_real_run_moves_each_case_once_audited_and_recounts_deadlines(
    drive: Driver, mixed: dict[str, list[int]]
) -> None:
    m = Migrator(drive.service)
    iu = mixed["illegal_use_management"][0]
    old_due = due(drive, iu, "illegal_use_term").due_on
    anchor = due(drive, iu, "illegal_use_term").anchor_on
    with drive.service.uow(read_only=True) as uow:
        untouched = {cid: uow.get_case(cid).version for cid in mixed["v2"] + mixed["v3"]}
    run_id = m.start("drug_rehab@1", "drug_rehab@9", {}, SYSTEM, NOW)
    result = m.run(run_id, SYSTEM, lambda: NOW)
    assert (result.moved, result.skipped, result.status) == (6, 1, "finished")
    with drive.service.uow(read_only=True) as uow:
        run = uow.session.get(MigrationRun, run_id)
        assert (run.moved, run.skipped, run.status) == (6, 1, "finished")
        for state, ids in mixed.items():
            for cid in ids:
                case = uow.get_case(cid)
                if state in ("v2", "v3"):
                    assert case.version == untouched[cid]  # not touched at all
                    continue
                want = 1 if state == "court_review" else 9
                assert case.definition_version == want
        pending = uow.get_case(mixed["voluntary_home_pending"][0])
        assert (pending.state, pending.group) == ("addicted", "determination")
        events = (
            uow.session.execute(
                select(AuditEvent).where(AuditEvent.action == "migration").order_by(AuditEvent.seq)
            )
            .scalars()
            .all()
        )
        assert sorted(e.case_id for e in events) == sorted(
            mixed["detected"] + mixed["illegal_use_management"] + mixed["voluntary_home_pending"]
        )
        e = next(e for e in events if e.case_id == iu)
        assert e.definition == "drug_rehab@9"
        assert (e.extra["migration"]["from"], e.extra["migration"]["to"]) == (
            "drug_rehab@1",
            "drug_rehab@9",
        )
        # the responsible agency of the new state is told
        assert uow.session.execute(
            select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.audit_seq == e.seq, OutboxMessage.topic == "case_migrated"
            )
        ).scalar() == 1  # fmt: skip
    # the illegal-use term is recounted under v9's 18 months from the same anchor
    row = due(drive, iu, "illegal_use_term")
    assert row.anchor_on == anchor and row.status == "open"
    assert row.due_on == drive.service.calendar.add(anchor, 18, "months") != old_due
    dec = due(drive, mixed["voluntary_home_pending"][0], "voluntary_home_decision")
    assert (dec.status, dec.closed_by) == ("cancelled", "migration")
    assert drive.service.verify_audit().ok
    # a second run finds nothing more to move; the unmovable case stays, still reported
    again = m.run(m.start("drug_rehab@1", "drug_rehab@9", {}, SYSTEM, NOW), SYSTEM, lambda: NOW)
    assert (again.moved, again.skipped) == (0, 1)
    # the migrated case goes on under v9: its new step is there
    avail = drive.service.available_transitions(iu, drive.actors.get("commune_police", "head"), NOW)
    assert "test_close_with_statement" in [a.key for a in avail]


def test_a_partial_run_resumes_where_it_stopped(drive: Driver, mixed: dict[str, list[int]]) -> None:
    m = Migrator(drive.service)
    run_id = m.start("drug_rehab@1", "drug_rehab@9", {}, SYSTEM, NOW)
    first = m.run(run_id, SYSTEM, lambda: NOW, max_cases=4)
    assert first.status == "partial" and first.moved + first.skipped == 4
    # started again with the same plan and conditions: the same run goes on
    assert m.start("drug_rehab@1", "drug_rehab@9", {}, SYSTEM, NOW) == run_id
    rest = m.run(run_id, SYSTEM, lambda: NOW)
    assert first.moved + rest.moved == 6
    with drive.service.uow(read_only=True) as uow:
        counts = uow.session.execute(
            select(AuditEvent.case_id, func.count())
            .where(AuditEvent.action == "migration")
            .group_by(AuditEvent.case_id)
        ).all()
        assert len(counts) == 6 and {n for _, n in counts} == {1}
        assert uow.session.get(MigrationRun, run_id).moved == 6


def test_only_administrators_start_a_run(drive: Driver, mixed: dict[str, list[int]]) -> None:
    officer = drive.actors.get("commune_police", "officer")
    with pytest.raises(NotPermitted):
        Migrator(drive.service).start("drug_rehab@1", "drug_rehab@9", {}, officer, NOW)


def test_no_plan_no_migration(drive: Driver) -> None:
    with pytest.raises(UnknownDefinition):
        Migrator(drive.service).plan("drug_rehab@3", "drug_rehab@9")


def test_the_real_v3_plan_moves_v1_cases_except_those_before_a_court(
    service: CaseService,
    actors,
    registry: Registry,  # noqa: ANN001
) -> None:
    drive = Driver(service, actors)
    day = date(2025, 2, 3)
    ids = {
        s: walk(drive, s, day) for s in ("illegal_use_management", "court_review", "legal_check")
    }
    report = Migrator(service).dry_run("drug_rehab@1", "drug_rehab@3", {}, NOW)
    assert (report["cases"], report["movable"]) == (3, 2)
    assert report["unmovable"][0]["case_id"] == ids["court_review"]
    assert "120/2025" in report["unmovable"][0]["reason"]["vi"]
    # under the real v3 nothing that the cases already run on changes length
    assert all(r["changed"] == 0 for r in report["deadlines"])


def test_a_plan_that_forgets_a_state_does_not_load(tmp_path: Path) -> None:
    for f in DEFINITIONS.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    bad = V9.replace("keep: [detected, ", "keep: [")
    (tmp_path / "drug_rehab.v9.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        Registry.from_directory(tmp_path)
    assert any(
        "state 'detected' of drug_rehab@1 is neither mapped" in e
        for e in err.value.details["errors"]
    )
