"""drug_rehab v1, v2 and v3 side by side: the version in force on the opening date applies."""

from __future__ import annotations

from datetime import date

import pytest

from workflow.errors import GuardFailed, ValidationFailed
from workflow.registry import Registry

from ..conftest import DEFINITIONS
from .helpers import Driver


def version_of(drive: Driver, case_id: int) -> int:
    return drive.definition(case_id).version


def to_addicted(drive: Driver, day: date) -> int:
    cid = drive.open(day, version=None).case_id
    drive.fire(cid, "request_determination", day)
    drive.fire(cid, "record_addiction_result", day)
    return cid


def test_all_versions_load(registry: Registry) -> None:
    assert [d.ref for d in registry.versions("drug_rehab")] == [
        "drug_rehab@1",
        "drug_rehab@2",
        "drug_rehab@3",
    ]


@pytest.mark.parametrize(
    ("day", "version"),
    [
        (date(2025, 2, 28), 1),
        (date(2025, 3, 1), 2),
        (date(2026, 6, 30), 2),
        (date(2026, 7, 1), 3),
    ],
)
def test_a_case_takes_the_version_in_force_on_its_opening_date(
    drive: Driver, day: date, version: int
) -> None:
    assert version_of(drive, drive.open(day, version=None).case_id) == version


def test_v1_is_untouched_by_loading_v2_and_v3(registry: Registry, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "drug_rehab.v1.yaml").write_text(
        (DEFINITIONS / "drug_rehab.v1.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    alone = Registry.from_directory(tmp_path).get("drug_rehab", 1)
    v1 = registry.get("drug_rehab", 1)
    for part in ("parameters", "agency_types", "states", "transitions", "activities", "deadlines"):
        assert getattr(v1, part) == getattr(alone, part), part


def test_a_v1_case_stays_v1_and_keeps_v1_transitions(drive: Driver) -> None:
    cid = to_addicted(drive, date(2025, 2, 28))
    day = date(2026, 7, 6)  # acted on under the 2025 law: still v1
    drive.fire(cid, "open_compulsory_dossier", day)
    drive.fire(cid, "notify_dossier_reading", day)
    drive.fire(cid, "send_for_legal_check", day)
    d = drive.definition(cid)
    assert d.version == 1
    transfer = d.transitions["transfer_to_court"]
    assert transfer.allowed[0].agency == "district_labour_office"
    r = drive.fire(cid, "transfer_to_court", day)
    assert r.state == "court_filing"
    assert version_of(drive, cid) == 1


def test_v2_compulsory_dossier_by_commune_police_and_legal_check_office(drive: Driver) -> None:
    cid = to_addicted(drive, date(2025, 7, 1))
    d = drive.definition(cid)
    assert d.version == 2
    assert "district_labour_office" not in d.agency_types
    assert d.agency_types["court"].level == "region"
    assert d.parameters["legal_check_by"].verified is False
    assert [p.agency for p in d.transitions["notify_dossier_reading"].allowed] == ["commune_police"]
    day = date(2025, 7, 2)
    drive.fire(cid, "open_compulsory_dossier", day)
    drive.fire(cid, "notify_dossier_reading", day)
    drive.fire(cid, "send_for_legal_check", day)
    assert drive.fire(cid, "transfer_to_court", day).state == "court_filing"


def test_v3_voluntary_home_term_outside_bounds_is_refused(drive: Driver) -> None:
    day = date(2026, 7, 1)
    cid = to_addicted(drive, day)
    assert version_of(drive, cid) == 3
    drive.fire(cid, "register_voluntary_home", day, registered_by="self")
    with pytest.raises(ValidationFailed):
        drive.fire(cid, "decide_voluntary_home", day, term_months=12)  # v1's maximum
    with pytest.raises(GuardFailed):
        drive.fire(cid, "decide_voluntary_home", day, term_months=36)  # first time: 24
    r = drive.fire(cid, "decide_voluntary_home", day, term_months=24)
    assert r.state == "voluntary_home"
    assert drive.activity(cid, "electronic_monitoring", date(2026, 7, 2)).state == "voluntary_home"


def test_v3_compulsory_decision_is_24_months_the_first_time(drive: Driver, service) -> None:  # noqa: ANN001
    day = date(2026, 7, 1)
    cid = to_addicted(drive, day)
    for key in ("open_compulsory_dossier", "notify_dossier_reading", "send_for_legal_check"):
        drive.fire(cid, key, day)
    drive.fire(cid, "transfer_to_court", day)
    drive.fire(cid, "accept_case", day, complex=False, review_days=15)
    with pytest.raises(ValidationFailed):
        drive.fire(cid, "decide_compulsory", day, term_months=18)  # v1's adult range
    with pytest.raises(GuardFailed):
        drive.fire(cid, "decide_compulsory", day, term_months=36)
    r = drive.fire(cid, "decide_compulsory", day, term_months=24)
    assert r.state == "court_decided"
    with service.uow(read_only=True) as uow:
        assert uow.get_case(cid).fields["rehab_term_months"] == 24


def test_v3_change_of_residence_starts_a_one_day_forwarding_deadline(drive: Driver) -> None:
    day = date(2026, 7, 1)
    cid = to_addicted(drive, day)
    d = drive.definition(cid)
    assert d.deadlines["forward_file"].duration.unit == "days"
    assert d.param("file_forward_days") == 1
    drive.activity(cid, "report_residence_change", date(2026, 7, 2), new_unit="17677")
    with drive.service.uow(read_only=True) as uow:
        from sqlalchemy import select

        from workflow.model import Deadline

        dl = uow.session.execute(
            select(Deadline).where(Deadline.case_id == cid, Deadline.key == "forward_file")
        ).scalar_one()
    assert dl.status == "open"
    assert dl.due_on == date(2026, 7, 3)


@pytest.mark.parametrize(
    ("version", "day"), [(2, date(2025, 8, 4)), (3, date(2026, 7, 6))], ids=["v2", "v3"]
)
def test_every_state_of_v2_and_v3_is_reached_by_a_real_walk(
    drive: Driver, version: int, day: date
) -> None:
    """Each state of the version, reached from a new case by firing the shortest path as the
    agency that may (documents attached, forms filled within the version's own bounds)."""
    from workflow.simulate import path_to

    d = drive.service.registry.get("drug_rehab", version)
    for state in d.states:
        path = path_to(d, state)
        assert path is not None, f"{state} cannot be reached in {d.ref}"
        cid = drive.open(day, version=version).case_id
        for key in path:
            for attempt in range(40):  # random forms until the version's guards accept one
                try:
                    drive.fire(cid, key, day, attach=attempt == 0)
                    break
                except GuardFailed:
                    continue
            else:
                raise AssertionError(f"{d.ref}: no valid form for {key}")
        with drive.service.uow(read_only=True) as uow:
            case = uow.get_case(cid)
            assert (case.state, case.definition_version) == (state, version)
    assert drive.service.verify_audit().ok
