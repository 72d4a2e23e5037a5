"""The v1 paths walked through CaseService, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from workflow.actors import SYSTEM
from workflow.errors import (
    GuardFailed,
    IdempotencyConflict,
    MissingDocuments,
    NotPermitted,
    OutOfJurisdiction,
    PreconditionFailed,
    TransitionNotAvailable,
    ValidationFailed,
)
from workflow.model import AuditEvent, Case, Deadline, OutboxMessage

from ..conftest import OTHER_COMMUNE
from .helpers import Driver, at


def deadlines(service, case_id: int, status: str | None = None) -> dict[str, Deadline]:  # noqa: ANN001
    with service.uow(read_only=True) as uow:
        stmt = select(Deadline).where(Deadline.case_id == case_id)
        if status:
            stmt = stmt.where(Deadline.status == status)
        return {d.key: d for d in uow.session.execute(stmt.order_by(Deadline.id)).scalars()}


def counts(service, case_id: int) -> tuple:  # noqa: ANN001
    with service.uow(read_only=True) as uow:
        s = uow.session
        case = s.get(Case, case_id)
        return (
            case.state,
            case.version,
            dict(case.fields or {}),
            s.scalar(select(func.count()).select_from(AuditEvent)),
            s.scalar(select(func.count()).select_from(OutboxMessage)),
            s.scalar(select(func.count()).select_from(Deadline).where(Deadline.case_id == case_id)),
        )


def to_addicted(drive: Driver, day: date, **kw) -> int:  # noqa: ANN003
    case = drive.open(day, **kw)
    drive.fire(case.case_id, "request_determination", day)
    drive.fire(case.case_id, "record_addiction_result", day)
    return case.case_id


class TestVoluntaryPath:
    def test_voluntary_home_to_closed(self, drive: Driver, service) -> None:  # noqa: ANN001
        day = date(2026, 3, 2)
        cid = to_addicted(drive, day)
        assert deadlines(service, cid, "open").keys() >= {"register_voluntary"}
        drive.fire(cid, "register_voluntary_home", day, registered_by="self")
        dl = deadlines(service, cid)
        assert dl["register_voluntary"].status == "met"
        assert dl["voluntary_home_decision"].status == "open"
        r = drive.fire(cid, "decide_voluntary_home", day, term_months=6)
        assert r.state == "voluntary_home"
        assert deadlines(service, cid)["voluntary_home_decision"].status == "met"
        drive.activity(cid, "check_in", date(2026, 4, 1))
        drive.fire(cid, "complete_voluntary_rehab", date(2026, 9, 2))
        r = drive.fire(cid, "decide_post_rehab", date(2026, 9, 4))
        assert r.state == "post_rehab_supervision"
        with service.uow(read_only=True) as uow:
            assert uow.get_case(cid).fields["post_rehab_months"] == 12
        term = deadlines(service, cid)["supervision_term"]
        assert term.due_on == date(2027, 9, 6)  # 04/09/2027 is a Saturday -> next working day
        assert term.auto_transition == "end_supervision"
        r = drive.fire(cid, "certify_supervision_completed", date(2027, 9, 6))
        assert r.state == "closed"
        assert deadlines(service, cid, "open") == {}
        assert service.verify_audit().ok

    def test_automatic_end_of_supervision_as_system(self, drive: Driver, service) -> None:  # noqa: ANN001
        day = date(2026, 1, 5)
        cid = to_addicted(drive, day)
        drive.fire(cid, "register_voluntary_home", day, registered_by="self")
        drive.fire(cid, "decide_voluntary_home", day, term_months=6)
        drive.fire(cid, "complete_voluntary_rehab", day)
        drive.fire(cid, "decide_post_rehab", day)
        with pytest.raises(NotPermitted):
            drive.fire(
                cid,
                "end_supervision",
                date(2027, 1, 6),
                actor=drive.actors.get("commune_pc", "head"),
            )
        r = service.advance(cid, "end_supervision", {}, SYSTEM, at(date(2027, 1, 6)))
        assert r.state == "closed"
        events = service.events(cid, SYSTEM)
        assert events[-1].actor == "system" and events[-1].action == "transition:end_supervision"


class TestCompulsoryPath:
    def test_adult_dossier_court_rehab_supervision_closed(self, drive: Driver, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)  # Friday: scenario 2
        cid = to_addicted(drive, day, born=date(1988, 11, 2), name="Lê Thị Cúc")
        drive.fire(cid, "open_compulsory_dossier", day, violation="not_registered")
        assert deadlines(service, cid)["compile_dossier"].due_on == date(2026, 11, 20)
        with service.uow(read_only=True) as uow:
            fields = uow.get_case(cid).fields
        assert fields["is_minor"] is False and fields["post_rehab_months"] == 24
        drive.fire(cid, "notify_dossier_reading", date(2026, 11, 18))
        assert deadlines(service, cid)["compile_dossier"].status == "met"
        drive.fire(cid, "send_for_legal_check", date(2026, 11, 25))
        drive.fire(cid, "transfer_to_court", date(2026, 11, 30))
        drive.fire(cid, "accept_case", date(2026, 12, 1), complex=False, review_days=15)
        assert deadlines(service, cid)["court_review"].due_on == date(2026, 12, 16)
        r = drive.fire(cid, "decide_compulsory", date(2026, 12, 10), term_months=18)
        assert r.state == "court_decided"
        # complaint window: 3 working days for an adult, from the announcement
        assert deadlines(service, cid)["complaint_window"].due_on == date(2026, 12, 15)
        drive.fire(cid, "escort_to_facility", date(2026, 12, 14))
        with service.uow(read_only=True) as uow:
            assert uow.get_case(cid).fields["rehab_term_months"] == 18
        assert deadlines(service, cid)["compulsory_term"].due_on == date(2028, 6, 14)
        drive.fire(cid, "release_from_facility", date(2028, 6, 14))
        drive.fire(cid, "decide_post_rehab", date(2028, 6, 15))
        assert deadlines(service, cid)["supervision_term"].due_on == date(2030, 6, 17)
        r = service.advance(cid, "end_supervision", {}, SYSTEM, at(date(2030, 6, 17)))
        assert r.state == "closed"
        assert service.verify_audit().ok

    def test_minor_takes_the_minors_path(self, drive: Driver, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        cid = to_addicted(drive, day, born=date(2010, 9, 1), name="Phạm Minh Đức")
        with pytest.raises(GuardFailed) as exc:
            drive.fire(cid, "open_compulsory_dossier", day, violation="not_registered")
        assert [g["key"] for g in exc.value.details["unmet_guards"]] == ["adult"]
        drive.fire(cid, "open_minor_dossier", day, attach=False, violation="not_registered")
        with service.uow(read_only=True) as uow:
            fields = uow.get_case(cid).fields
        assert fields["is_minor"] is True
        assert fields["post_rehab_months"] == 12
        assert fields["complaint_working_days"] == 5

    def test_court_decides_not_to_send(self, drive: Driver, service) -> None:  # noqa: ANN001
        day = date(2026, 6, 1)
        cid = to_addicted(drive, day)
        for key in (
            "open_compulsory_dossier",
            "notify_dossier_reading",
            "send_for_legal_check",
            "transfer_to_court",
        ):
            drive.fire(cid, key, day)
        drive.fire(cid, "accept_case", day, complex=False, review_days=15)
        r = drive.fire(cid, "decide_not_send", date(2026, 6, 10))
        assert r.state == "addicted"
        dl = deadlines(service, cid)
        assert dl["court_review"].status == "met"
        assert dl["register_voluntary_after_court"].status == "open"

    def test_relapse_during_supervision(self, drive: Driver, service) -> None:  # noqa: ANN001
        day = date(2026, 2, 2)
        cid = to_addicted(drive, day)
        drive.fire(cid, "register_substitution", day)
        drive.fire(cid, "complete_substitution", day)
        drive.fire(cid, "decide_post_rehab", day)
        r = drive.fire(cid, "report_relapse", date(2026, 5, 4))
        assert r.state == "addiction_determination"
        with service.uow(read_only=True) as uow:
            assert uow.get_case(cid).fields["relapsed"] is True
        assert "supervision_term" not in deadlines(service, cid, "open")
        drive.fire(cid, "record_addiction_result", date(2026, 5, 6))
        r = drive.fire(cid, "open_compulsory_dossier", date(2026, 5, 7))
        assert r.state == "compulsory_dossier"


class TestRefusals:
    def test_missing_document_changes_nothing_and_names_exact_codes(self, drive, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        cid = to_addicted(drive, day)
        drive.fire(cid, "open_compulsory_dossier", day)
        drive.attach(cid, ["summary_cv"], day)
        officer = drive.actors.get("commune_police", "officer")
        result = next(
            d
            for d in service.get_case(cid, officer, at(day))["documents"]
            if d["type"] == "addiction_result"
        )
        service.revoke_document(cid, result["id"], "bản sao không hợp lệ", officer, at(day))
        before = counts(service, cid)
        actor = drive.actors.get("commune_police", "head")
        with pytest.raises(MissingDocuments) as exc:
            service.advance(
                cid,
                "notify_dossier_reading",
                {"notice_date": "2026-11-16"},
                actor,
                at(date(2026, 11, 16)),
            )
        assert exc.value.details["missing_documents"] == ["addiction_result", "written_statement"]
        assert exc.value.details["errors"] == {} and exc.value.details["unmet_guards"] == []
        assert counts(service, cid) == before

    def test_one_of_alternatives_are_reported_together(self, drive, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        cid = to_addicted(drive, day)
        drive.attach(cid, ["voluntary_registration_form"], day)
        actor = drive.actors.get("commune_pc", "officer")
        with pytest.raises(MissingDocuments) as exc:
            service.advance(
                cid,
                "register_voluntary_home",
                drive.form(cid, "register_voluntary_home", day, registered_by="self"),
                actor,
                at(day),
            )
        assert exc.value.details["missing_documents"] == [
            ["citizen_id_copy", "passport_copy", "birth_certificate"]
        ]
        drive.attach(cid, ["passport_copy"], day)
        r = service.advance(
            cid,
            "register_voluntary_home",
            drive.form(cid, "register_voluntary_home", day, registered_by="self"),
            actor,
            at(day),
        )
        assert r.state == "voluntary_home_pending"

    def test_revoked_document_no_longer_counts(self, drive, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        case = drive.open(day)
        actor = drive.actors.get("commune_police", "officer")
        drive.attach(case.case_id, ["determination_request"], day)
        doc_id = service.get_case(case.case_id, actor, at(day))["documents"][0]["id"]
        service.revoke_document(case.case_id, doc_id, "nhầm hồ sơ", actor, at(day))
        before = counts(service, case.case_id)
        with pytest.raises(MissingDocuments) as exc:
            service.advance(
                case.case_id,
                "request_determination",
                drive.form(case.case_id, "request_determination", day),
                actor,
                at(day),
            )
        assert exc.value.details["missing_documents"] == ["determination_request"]
        assert counts(service, case.case_id) == before

    def test_invalid_form_lists_fields(self, drive, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        case = drive.open(day)
        drive.attach(case.case_id, ["determination_request"], day)
        actor = drive.actors.get("commune_police", "officer")
        with pytest.raises(ValidationFailed) as exc:
            service.advance(
                case.case_id,
                "request_determination",
                {"request_date": "13/11/2026", "reason": "bored", "extra": 1},
                actor,
                at(day),
            )
        assert set(exc.value.details["errors"]) == {"request_date", "reason", "extra"}
        assert counts(service, case.case_id)[0] == "detected"

    def test_wrong_role_is_not_permitted(self, drive, service) -> None:  # noqa: ANN001
        case = drive.open(date(2026, 11, 13))
        with pytest.raises(NotPermitted):
            drive.fire(
                case.case_id,
                "start_illegal_use_management",
                date(2026, 11, 13),
                actor=drive.actors.get("commune_pc", "officer"),
            )

    def test_other_commune_cannot_see_the_case(self, drive, service) -> None:  # noqa: ANN001
        case = drive.open(date(2026, 11, 13))
        stranger = drive.actors.get("commune_police", "officer", OTHER_COMMUNE)
        with pytest.raises(OutOfJurisdiction) as exc:
            drive.fire(
                case.case_id,
                "request_determination",
                date(2026, 11, 13),
                attach=False,
                actor=stranger,
            )
        assert exc.value.status == 404
        with pytest.raises(OutOfJurisdiction):
            service.get_case(case.case_id, stranger, at(date(2026, 11, 13)))

    def test_transition_from_wrong_state(self, drive, service) -> None:  # noqa: ANN001
        case = drive.open(date(2026, 11, 13))
        with pytest.raises(TransitionNotAvailable) as exc:
            drive.fire(case.case_id, "decide_compulsory", date(2026, 11, 13))
        assert "request_determination" in exc.value.details["allowed"]

    def test_stale_expected_version(self, drive, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        case = drive.open(day)
        drive.attach(case.case_id, ["determination_request"], day)
        actor = drive.actors.get("commune_police", "officer")
        data = drive.form(case.case_id, "request_determination", day)
        with pytest.raises(PreconditionFailed) as exc:
            service.advance(
                case.case_id,
                "request_determination",
                data,
                actor,
                at(day),
                expected_version=case.version - 1,
            )
        assert exc.value.status == 412
        r = service.advance(
            case.case_id,
            "request_determination",
            data,
            actor,
            at(day),
            expected_version=case.version,
        )
        assert r.version == case.version + 1


class TestIdempotency:
    def test_same_key_same_payload_writes_once(self, drive, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        case = drive.open(day)
        drive.attach(case.case_id, ["determination_request"], day)
        actor = drive.actors.get("commune_police", "officer")
        data = drive.form(case.case_id, "request_determination", day)
        first = service.advance(
            case.case_id, "request_determination", data, actor, at(day), idempotency_key="k-1"
        )
        before = counts(service, case.case_id)
        again = service.advance(
            case.case_id, "request_determination", data, actor, at(day), idempotency_key="k-1"
        )
        assert again == first
        assert counts(service, case.case_id) == before
        with pytest.raises(IdempotencyConflict):
            service.advance(
                case.case_id,
                "request_determination",
                {**data, "reason": "other"},
                actor,
                at(day),
                idempotency_key="k-1",
            )


class TestNotificationsAndAudit:
    def test_transition_writes_outbox_and_audit_in_one_go(self, drive, service) -> None:  # noqa: ANN001
        day = date(2026, 11, 13)
        case = drive.open(day)
        before = counts(service, case.case_id)
        drive.fire(case.case_id, "request_determination", day)
        after = counts(service, case.case_id)
        assert after[3] == before[3] + 2  # document attached + transition
        with service.uow(read_only=True) as uow:
            msgs = uow.session.execute(select(OutboxMessage)).scalars().all()
        assert msgs and all(m.status == "pending" for m in msgs)
        assert msgs[0].recipients["unit_code"] == case.number.split("-")[0]
        assert "Trần" not in str(msgs[0].payload)  # no personal data in notifications
        events = service.events(case.case_id, drive.actors.get("commune_police", "officer"))
        assert [e.action for e in events] == [
            "case.opened",
            "document.attached",
            "transition:request_determination",
        ]
        assert events[-1].documents[0]["type"] == "determination_request"


class TestDeadlinesCountLegally:
    def test_registration_across_tet_scenario_1(self, drive: Driver, service) -> None:  # noqa: ANN001
        """Result dated Wed 03/02/2027, entered late (on 08/02): due 17/02/2027 all the same."""
        cid = drive.open(date(2027, 2, 1)).case_id
        drive.fire(cid, "request_determination", date(2027, 2, 1))
        drive.fire(cid, "record_addiction_result", date(2027, 2, 8), result_date="2027-02-03")
        assert deadlines(service, cid)["register_voluntary"].due_on == date(2027, 2, 17)
        drive.fire(cid, "register_voluntary_home", date(2027, 2, 15), registered_by="self")
        assert deadlines(service, cid)["voluntary_home_decision"].due_on == date(2027, 2, 18)
        details = service.get_case(
            cid, drive.actors.get("commune_pc", "head"), at(date(2027, 2, 16))
        )
        row = next(d for d in details["deadlines"] if d["key"] == "voluntary_home_decision")
        assert row["working_days_left"] == 2 and row["overdue"] is False
