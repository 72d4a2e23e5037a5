"""Transfer of a case to another commune (change of residence), under every version."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from workflow import units
from workflow.errors import GuardFailed, OutOfJurisdiction, ValidationFailed
from workflow.model import AccessLog, AuditEvent, Case, CaseCustody, Deadline, OutboxMessage

from ..conftest import COMMUNE, OTHER_COMMUNE, PROVINCE
from .helpers import Driver, at


def to_illegal_use(drive: Driver, day: date, version: int | None = 1) -> int:
    cid = drive.open(day, version=version).case_id
    drive.fire(cid, "start_illegal_use_management", day)
    return cid


def open_deadlines(drive: Driver, cid: int) -> dict[str, date]:
    with drive.service.uow(read_only=True) as uow:
        rows = uow.session.execute(
            select(Deadline).where(Deadline.case_id == cid, Deadline.status == "open")
        ).scalars()
        return {r.key: r.due_on for r in rows}


def outbox_places(drive: Driver, cid: int, seq: int) -> list[tuple[str, str]]:
    with drive.service.uow(read_only=True) as uow:
        rows = uow.session.execute(
            select(OutboxMessage).where(
                OutboxMessage.case_id == cid, OutboxMessage.audit_seq == seq
            )
        ).scalars()
        return sorted(
            (agency, r.recipients["unit_code"])
            for r in rows
            for agency in r.recipients["agency_types"]
        )


def test_v1_change_of_residence_hands_the_case_over(drive: Driver, actors) -> None:  # noqa: ANN001
    day = date(2025, 1, 6)
    cid = to_illegal_use(drive, day)
    deadlines_before = open_deadlines(drive, cid)
    assert deadlines_before  # the one-year management term runs
    old_police = actors.get("commune_police", "officer", COMMUNE)
    new_police = actors.get("commune_police", "officer", OTHER_COMMUNE)

    r = drive.service.record_activity(
        cid,
        "change_residence",
        {"moved_date": "2025-01-08", "new_unit": OTHER_COMMUNE, "reason": "chuyển nhà"},
        old_police,
        at(date(2025, 1, 8)),
    )

    with drive.service.uow(read_only=True) as uow:
        case = uow.get_case(cid)
        assert (case.unit_code, case.province_code) == (OTHER_COMMUNE, PROVINCE)
        assert case.subject.unit_code == OTHER_COMMUNE
        assert case.state == "illegal_use_management"  # the state does not change
        custody = uow.session.execute(select(CaseCustody)).scalars().all()
        assert [(c.case_id, c.unit_code, c.until_seq) for c in custody] == [
            (cid, COMMUNE, r.audit_seq)
        ]
        event = uow.session.get(AuditEvent, r.audit_seq)
        assert event.action == "activity:change_residence"
        assert event.extra["transfer"] == {
            "from_unit": COMMUNE,
            "from_province": PROVINCE,
            "to_unit": OTHER_COMMUNE,
            "to_province": PROVINCE,
        }
    # deadlines continue: same rows, same due dates
    assert open_deadlines(drive, cid) == deadlines_before
    # both communes' police and people's committee are told
    assert outbox_places(drive, cid, r.audit_seq) == sorted(
        [
            ("commune_pc", COMMUNE),
            ("commune_pc", OTHER_COMMUNE),
            ("commune_police", COMMUNE),
            ("commune_police", OTHER_COMMUNE),
        ]
    )
    # the receiving commune works the case
    assert drive.service.get_case(cid, new_police, at(date(2025, 1, 9)))["unit_code"] == (
        OTHER_COMMUNE
    )
    drive.service.record_activity(
        cid,
        "check_in",
        {"check_in_date": "2025-01-09", "result": "present"},
        new_police,
        at(date(2025, 1, 9)),
    )
    assert drive.service.verify_audit().ok


def test_the_sending_commune_keeps_read_only_history(drive: Driver, actors) -> None:  # noqa: ANN001
    day = date(2025, 1, 6)
    cid = to_illegal_use(drive, day)
    old_police = actors.get("commune_police", "officer", COMMUNE)
    new_police = actors.get("commune_police", "officer", OTHER_COMMUNE)
    r = drive.service.record_activity(
        cid,
        "change_residence",
        {"moved_date": "2025-01-08", "new_unit": OTHER_COMMUNE},
        old_police,
        at(date(2025, 1, 8)),
    )
    drive.service.record_activity(
        cid,
        "check_in",
        {"check_in_date": "2025-01-09", "result": "present"},
        new_police,
        at(date(2025, 1, 9)),
    )
    now = at(date(2025, 1, 10))
    # no new actions, no case page, not in the list
    with pytest.raises(OutOfJurisdiction):
        drive.service.get_case(cid, old_police, now)
    with pytest.raises(OutOfJurisdiction):
        drive.service.record_activity(
            cid, "check_in", {"check_in_date": "2025-01-10", "result": "present"}, old_police, now
        )
    with pytest.raises(OutOfJurisdiction):
        drive.service.advance(cid, "end_illegal_use_management", {}, old_police, now)
    from workflow.queries import CaseFilter

    rows, _ = drive.service.list_cases(old_police, CaseFilter(), now)
    assert cid not in [c.id for c in rows]
    # the history up to the hand-over, and only that; the read is attributable
    old_view = drive.service.events(cid, old_police, now)
    new_view = drive.service.events(cid, new_police, now)
    assert [e.seq for e in old_view] == [e.seq for e in new_view if e.seq <= r.audit_seq]
    assert len(new_view) == len(old_view) + 1
    assert old_view[-1].action == "activity:change_residence"
    with drive.service.uow(read_only=True) as uow:
        logged = uow.session.execute(
            select(AccessLog.action).where(
                AccessLog.case_id == cid, AccessLog.user_id == old_police.user_id
            )
        ).scalars()
        assert list(logged) == ["case.history"]
    # a commune that never held the case sees nothing
    stranger = actors.get("commune_police", "officer", "17680")
    with pytest.raises(OutOfJurisdiction):
        drive.service.events(cid, stranger, now)


def test_transfer_to_another_province_moves_the_province_too(drive: Driver, actors) -> None:  # noqa: ANN001
    far = units.communes_of("01")[0].code
    cid = to_illegal_use(drive, date(2025, 1, 6))
    drive.service.record_activity(
        cid,
        "change_residence",
        {"moved_date": "2025-01-08", "new_unit": far},
        actors.get("commune_police", "head", COMMUNE),
        at(date(2025, 1, 8)),
    )
    with drive.service.uow(read_only=True) as uow:
        case = uow.get_case(cid)
        assert (case.unit_code, case.province_code) == (far, "01")


@pytest.mark.parametrize(
    ("new_unit", "message"),
    [
        (COMMUNE, "đang do chính xã, phường này quản lý"),
        (PROVINCE, "không phải mã xã"),
    ],
)
def test_a_bad_destination_is_refused_and_changes_nothing(
    drive: Driver,
    actors,  # noqa: ANN001
    new_unit: str,
    message: str,
) -> None:
    cid = to_illegal_use(drive, date(2025, 1, 6))
    with drive.service.uow(read_only=True) as uow:
        version = uow.get_case(cid).version
        events = uow.session.execute(select(func.count()).select_from(AuditEvent)).scalar()
    with pytest.raises(ValidationFailed) as err:
        drive.service.record_activity(
            cid,
            "change_residence",
            {"moved_date": "2025-01-08", "new_unit": new_unit},
            actors.get("commune_police", "officer", COMMUNE),
            at(date(2025, 1, 8)),
        )
    assert message in err.value.details["errors"]["new_unit"][0]
    with drive.service.uow(read_only=True) as uow:
        case = uow.get_case(cid)
        assert (case.unit_code, case.version) == (COMMUNE, version)
        assert uow.session.execute(select(func.count()).select_from(AuditEvent)).scalar() == events
        assert uow.session.execute(select(func.count()).select_from(CaseCustody)).scalar() == 0


def test_v3_forwarding_hands_over_and_meets_the_24_hour_deadline(drive: Driver, actors) -> None:  # noqa: ANN001
    day = date(2026, 7, 6)
    cid = to_illegal_use(drive, day, version=None)
    assert drive.definition(cid).version == 3
    police = actors.get("commune_police", "officer", COMMUNE)
    # the one-step change of residence of v1/v2 is not part of v3
    assert "change_residence" not in drive.definition(cid).activities
    # forwarding before any report is refused, saying why
    with pytest.raises(GuardFailed) as err:
        drive.service.record_activity(
            cid, "forward_file", {"forwarded_date": "2026-07-07"}, police, at(date(2026, 7, 7))
        )
    assert "Chưa có khai báo thay đổi nơi cư trú" in str(err.value.details)
    drive.activity(
        cid,
        "report_residence_change",
        date(2026, 7, 7),
        new_unit=OTHER_COMMUNE,
        moved_date="2026-07-06",
    )
    assert open_deadlines(drive, cid)["forward_file"] == date(2026, 7, 8)
    with drive.service.uow(read_only=True) as uow:
        assert uow.get_case(cid).unit_code == COMMUNE  # reported, not yet forwarded
    r = drive.service.record_activity(
        cid, "forward_file", {"forwarded_date": "2026-07-08"}, police, at(date(2026, 7, 8))
    )
    with drive.service.uow(read_only=True) as uow:
        case = uow.get_case(cid)
        assert case.unit_code == OTHER_COMMUNE
        assert case.fields.get("reported_new_unit") is None
        dl = uow.session.execute(
            select(Deadline).where(Deadline.case_id == cid, Deadline.key == "forward_file")
        ).scalar_one()
        assert (dl.status, dl.closed_by) == ("met", "forward_file")
        assert uow.session.get(AuditEvent, r.audit_seq).extra["transfer"]["to_unit"] == (
            OTHER_COMMUNE
        )
    assert ("commune_police", COMMUNE) in outbox_places(drive, cid, r.audit_seq)
    assert ("commune_police", OTHER_COMMUNE) in outbox_places(drive, cid, r.audit_seq)
    with drive.service.uow(read_only=True) as uow:
        assert uow.session.get(Case, cid).state == "illegal_use_management"
