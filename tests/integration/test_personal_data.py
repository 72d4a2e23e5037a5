"""Who sees the person: the definition's ``personal_data`` agencies; families and mentors see
cases by number only, and cannot find a person by name or ID number."""

from __future__ import annotations

from datetime import date

from workflow.queries import CaseFilter
from workflow.registry import Registry

from .helpers import Driver, at


def test_every_version_names_who_sees_the_person(registry: Registry) -> None:
    for d in registry.versions("drug_rehab"):
        assert d.shows_person_to("commune_police")
        assert not d.shows_person_to("mentor") and not d.shows_person_to("family")
        assert set(d.personal_data) <= set(d.agency_types)


def test_a_mentor_sees_the_case_but_not_the_person(drive: Driver, actors) -> None:  # noqa: ANN001
    day = date(2025, 1, 6)
    cid = drive.open(day, name="Lê Thị Hoa").case_id
    number = drive.service.get_case(cid, actors.get("commune_police", "officer"), at(day))["number"]
    police = drive.service.get_case(cid, actors.get("commune_police", "officer"), at(day))
    assert police["subject"]["full_name"] == "Lê Thị Hoa"
    mentor = actors.get("mentor", "member")
    seen = drive.service.get_case(cid, mentor, at(day))
    assert seen["subject"] is None and seen["number"] == number
    # no finding a person by name or ID number; the case number still works
    for q in ("Lê Thị Hoa", "le thi hoa", "040094001234"):
        rows, _ = drive.service.list_cases(mentor, CaseFilter(q=q), at(day))
        assert rows == [], q
    rows, _ = drive.service.list_cases(mentor, CaseFilter(q=number), at(day))
    assert [c.id for c in rows] == [cid]
    rows, _ = drive.service.list_cases(
        actors.get("commune_police", "officer"), CaseFilter(q="le thi hoa"), at(day)
    )
    assert [c.id for c in rows] == [cid]
