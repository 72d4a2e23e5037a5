"""Who sees which case: a commune agency sees its commune; a province-wide agency sees the
province's cases routed to it (their state concerns it, or it has acted on them)."""

from __future__ import annotations

from datetime import date

import pytest

from workflow.errors import OutOfJurisdiction
from workflow.queries import CaseFilter

from ..conftest import COMMUNE, OTHER_COMMUNE, PROVINCE
from .helpers import Driver, at

DAY = date(2026, 6, 1)


def listed(service, actor) -> set[int]:  # noqa: ANN001
    rows, _ = service.list_cases(actor, CaseFilter(), at(DAY), limit=200)
    return {c.id for c in rows}


def test_province_court_sees_only_cases_routed_to_it(service, actors) -> None:  # noqa: ANN001
    drive = Driver(service, actors)
    court = actors.get("court", "judge", PROVINCE)  # covers the whole province
    early = drive.open(DAY).case_id
    at_court = drive.open(DAY, name="Lê Văn Nam").case_id
    for key in (
        "request_determination",
        "record_addiction_result",
        "open_compulsory_dossier",
        "notify_dossier_reading",
        "send_for_legal_check",
        "transfer_to_court",
    ):
        drive.fire(at_court, key, DAY)
    with pytest.raises(OutOfJurisdiction):
        service.get_case(early, court, at(DAY))
    assert service.get_case(at_court, court, at(DAY))["state"] == "court_filing"
    assert listed(service, court) == {at_court}
    # the court accepts and decides; the case moves on to the escort and the facility ...
    drive.fire(at_court, "accept_case", DAY, actor=court, complex=False, review_days=15)
    drive.fire(at_court, "decide_compulsory", DAY, actor=court, term_months=12)
    drive.fire(at_court, "escort_to_facility", DAY)
    # ... and the court, having acted on it, still sees it
    assert service.get_case(at_court, court, at(DAY))["state"] == "compulsory_rehab"
    assert listed(service, court) == {at_court}


def test_commune_agency_sees_every_case_of_its_commune(service, actors) -> None:  # noqa: ANN001
    drive = Driver(service, actors)
    ids = {drive.open(DAY).case_id, drive.open(DAY, name="Phạm Thị Hoa").case_id}
    police = actors.get("commune_police", "officer")
    assert listed(service, police) == ids


def test_each_code_matches_its_own_level(service, actors) -> None:  # noqa: ANN001
    """An agency's commune codes select by the case's commune, its province codes by the
    province and routing, whatever mix it holds; one with no unit sees nothing. A commune
    agency's list is one ``unit_code IN (…)`` (served by ``ix_cases_unit_state``), with no
    province clause for the database to test row by row."""
    from dataclasses import replace

    from sqlalchemy import select
    from sqlalchemy.dialects import postgresql

    from workflow.model import Case
    from workflow.queries import visible_to

    drive = Driver(service, actors)
    here = drive.open(DAY).case_id
    there = drive.open(DAY, name="Lê Văn Nam", unit=OTHER_COMMUNE).case_id
    police = actors.get("commune_police", "officer")
    court = actors.get("court", "judge", PROVINCE)
    assert listed(service, police) == {here}
    assert listed(service, court) == set()  # nothing routed to a court yet
    # a court that also held a commune: that commune's cases, and of the province's only
    # those routed to a court (none); the police's states are routed to the police
    mixed = replace(court, units=frozenset({COMMUNE, PROVINCE}))
    assert listed(service, mixed) == {here}
    assert listed(service, replace(police, units=frozenset({COMMUNE, PROVINCE}))) == {here, there}
    assert listed(service, replace(police, units=frozenset({OTHER_COMMUNE}))) == {there}
    assert listed(service, replace(police, units=frozenset())) == set()

    def where(actor) -> str:  # noqa: ANN001
        stmt = select(Case.id).where(visible_to(actor, frozenset({"court_filing"})))
        return str(stmt.compile(dialect=postgresql.dialect())).split("WHERE", 1)[1]

    assert "unit_code IN" in where(police) and "province_code" not in where(police)
    assert "province_code IN" in where(court) and "unit_code" not in where(court)
    assert "unit_code IN" in where(mixed) and "province_code IN" in where(mixed)
    assert where(replace(police, units=frozenset())).strip() == "false"
