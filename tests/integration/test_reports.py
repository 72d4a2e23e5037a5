"""Indicators of the local plans (workflow.reports) on a hand-built set of cases.

The period is 2026H1 (15/12/2025-14/06/2026); the report is made on 20/06/2026. Cases:

* A (commune 17662): illegal-use management from 04/11/2025, then (mid-period) addiction,
  voluntary home rehab decided 09/01/2026 (term 12 months): changed group illegal_use ->
  voluntary_home. Family commitment signed 08/01. Check-in 05/02 (due 09/02, met on time); the
  next one, due 05/03, is missed.
* B (17662): substitution treatment from 04/12/2025; its first check-in (due 04/01/2026) is
  missed; relapse 02/03/2026 (the check-in schedule is cancelled after it fell due), addicted
  03/03, compulsory dossier 04/03, legal check 10/03, to court 12/03, accepted 13/03, decided
  20/03 (12 working days after the dossier).
* C (17662): opened 20/12/2025, illegal-use management 22/12/2025, closed on 14/06/2026, the
  last day of the period.
* D (17677): illegal-use management from 06/01/2026, reported absent 02/02/2026, one check-in
  on 02/03 (illegal-use management has no check-in schedule).
* E (17677): voluntary rehab at a facility from 04/12/2025 (term 12 months), completed
  01/04/2026, support given 02/04, post-rehab management decided 06/04 (check-in due 06/05
  missed).
"""

from __future__ import annotations

from datetime import date

import pytest

from workflow.calendar import WorkingCalendar
from workflow.reports import indicators, period

from ..conftest import COMMUNE, PROVINCE
from .helpers import Driver

OTHER = "17677"
START, END = period("2026H1")
TODAY = date(2026, 6, 20)


class OtherDriver(Driver):
    """Acts as the agencies of the other commune."""

    def actor_for(self, action):  # noqa: ANN001, ANN201
        p = action.allowed[0]
        return self.actors.get(p.agency, p.roles[0], OTHER)

    def attach(self, case_id, codes, day, actor=None) -> None:  # noqa: ANN001
        super().attach(
            case_id, codes, day, actor or self.actors.get("commune_police", "officer", OTHER)
        )


def to_addicted(drive: Driver, cid: int, day: date) -> None:
    drive.fire(cid, "request_determination", day, reason="own_request")
    drive.fire(cid, "record_addiction_result", day)


@pytest.fixture
def world(service, actors, registry):  # noqa: ANN001, ANN201
    drive = Driver(service, actors)
    ids: dict[str, int] = {}

    a = drive.open(date(2025, 11, 3)).case_id
    drive.fire(a, "start_illegal_use_management", date(2025, 11, 4))
    drive.fire(a, "request_determination", date(2026, 1, 5), reason="own_request")
    drive.fire(a, "record_addiction_result", date(2026, 1, 6))
    drive.fire(a, "register_voluntary_home", date(2026, 1, 7), registered_by="self")
    drive.activity(a, "family_commitment_signed", date(2026, 1, 8))
    drive.fire(a, "decide_voluntary_home", date(2026, 1, 9), term_months=12)
    drive.activity(a, "check_in", date(2026, 2, 5), result="present")
    ids["A"] = a

    b = drive.open(date(2025, 12, 1)).case_id
    to_addicted(drive, b, date(2025, 12, 3))
    drive.fire(b, "register_substitution", date(2025, 12, 4))
    drive.fire(b, "report_relapse", date(2026, 3, 2))
    drive.fire(b, "record_addiction_result", date(2026, 3, 3))
    drive.fire(b, "open_compulsory_dossier", date(2026, 3, 4), violation="not_registered")
    drive.fire(b, "notify_dossier_reading", date(2026, 3, 5))
    drive.fire(b, "send_for_legal_check", date(2026, 3, 10))
    drive.fire(b, "transfer_to_court", date(2026, 3, 12))
    drive.fire(b, "accept_case", date(2026, 3, 13), complex=False, review_days=15)
    drive.fire(b, "decide_compulsory", date(2026, 3, 20), term_months=18)
    ids["B"] = b

    c = drive.open(date(2025, 12, 20)).case_id
    drive.fire(c, "start_illegal_use_management", date(2025, 12, 22))
    drive.fire(c, "close_case", date(2026, 6, 14), reason="moved_away")
    ids["C"] = c

    drive = OtherDriver(service, actors)
    d = drive.open(date(2026, 1, 5), unit=OTHER).case_id
    drive.fire(d, "start_illegal_use_management", date(2026, 1, 6))
    drive.activity(d, "report_absence", date(2026, 2, 2))
    drive.activity(d, "check_in", date(2026, 3, 2), result="absent")
    ids["D"] = d

    e = drive.open(date(2025, 12, 1), unit=OTHER).case_id
    to_addicted(drive, e, date(2025, 12, 3))
    drive.fire(e, "register_voluntary_facility", date(2025, 12, 4), term_months=12)
    drive.fire(e, "complete_voluntary_rehab", date(2026, 4, 1))
    drive.activity(e, "support_given", date(2026, 4, 2), support_type="loan")
    drive.fire(e, "decide_post_rehab", date(2026, 4, 6))
    ids["E"] = e
    return ids


def report(service, registry, unit):  # noqa: ANN001, ANN201
    with service.uow(read_only=True) as uow:
        return indicators(
            uow.session, registry, unit, START, END, today=TODAY, calendar=WorkingCalendar()
        )


def groups(r: dict) -> dict[str, tuple[int, int, int, int]]:
    return {g["group"]: (g["at_start"], g["new"], g["ended"], g["at_end"]) for g in r["groups"]}


def deadlines(r: dict) -> dict[str, tuple[int, int, int, int]]:
    return {
        d["agency"]: (d["due"], d["met_on_time"], d["overdue_open"], d["overdue"])
        for d in r["deadlines"]
    }


def test_periods() -> None:
    assert period("2026H1") == (date(2025, 12, 15), date(2026, 6, 14))
    assert period("2026H2") == (date(2026, 6, 15), date(2026, 12, 14))
    assert period("2026") == (date(2025, 12, 15), date(2026, 12, 14))


def test_commune_known_answers(world, service, registry) -> None:  # noqa: ANN001
    r = report(service, registry, COMMUNE)
    assert r["unit_level"] == "commune" and r["from"] == "2025-12-15" and r["to"] == "2026-06-14"
    # (at start, new, ended, at end)
    assert groups(r) == {
        "voluntary_home": (0, 1, 0, 1),  # A, from 07/01 (registered, then decided)
        "voluntary_facility": (0, 0, 0, 0),
        "substitution": (1, 0, 1, 0),  # B until its relapse
        "compulsory": (0, 0, 0, 0),
        "post_rehab": (0, 0, 0, 0),
        "illegal_use": (1, 1, 2, 0),  # A left mid-period; C came and was closed on 14/06
        "absent": (0, 0, 0, 0),
    }
    assert r["compulsory"] == {
        "dossiers_made": 1,
        "sent_to_court": 1,
        "decided": 1,
        "rejected": 0,
        "decisions_timed": 1,
        "working_days_total": 12,
        "avg_working_days": 12.0,
        "max_working_days": 12,
    }
    assert r["management_dossier"] == {"cases": 2, "complete": 2, "incomplete": 0, "share": 1.0}
    assert r["support"] == {
        "finished": 0,
        "supported": 0,
        "unsupported": 0,
        "share": None,
        "target": 0.8,
    }
    assert r["family_commitment"] == {
        "cases": 1,
        "signed": 1,
        "unsigned": 0,
        "share": 1.0,
        "target": 1.0,
    }
    assert r["relapses"] == {"events": 1, "cases": 1}
    # A: 09/02 met, 05/03 missed; B: 04/01 missed (cancelled by the relapse after it fell due)
    assert r["check_ins"] == {"done": 1, "due": 3, "met_on_time": 1, "missed": 2}
    # (due, met on time, overdue and open, overdue)
    assert deadlines(r) == {
        "commune_pc": (6, 4, 1, 2),  # 3 check-ins, 2 registrations, 1 home-rehab decision
        "commune_police": (2, 2, 0, 0),  # compile dossier, dossier reading
        "court": (2, 2, 0, 0),  # acceptance, review
        "district_labour_office": (1, 1, 0, 0),  # legal check
        "district_police": (3, 0, 3, 3),  # decision issuance, complaint window, escort
        "health_facility": (2, 2, 0, 0),  # two addiction determinations
    }


def test_other_commune_known_answers(world, service, registry) -> None:  # noqa: ANN001
    r = report(service, registry, OTHER)
    assert groups(r) == {
        "voluntary_home": (0, 0, 0, 0),
        "voluntary_facility": (1, 0, 1, 0),
        "substitution": (0, 0, 0, 0),
        "compulsory": (0, 0, 0, 0),
        "post_rehab": (0, 1, 0, 1),
        "illegal_use": (0, 1, 0, 1),
        "absent": (0, 1, 0, 1),
    }
    assert r["support"] == {
        "finished": 1,
        "supported": 1,
        "unsupported": 0,
        "share": 1.0,
        "target": 0.8,
    }
    assert r["family_commitment"] == {
        "cases": 1,
        "signed": 0,
        "unsigned": 1,
        "share": 0.0,
        "target": 1.0,
    }
    assert r["check_ins"] == {"done": 1, "due": 1, "met_on_time": 0, "missed": 1}
    assert r["compulsory"]["dossiers_made"] == 0 and r["compulsory"]["avg_working_days"] is None
    assert deadlines(r) == {"commune_pc": (2, 1, 1, 1)}


ADDITIVE = ("compulsory", "support", "family_commitment", "relapses", "check_ins")


def test_province_is_the_sum_of_its_communes(world, service, registry) -> None:  # noqa: ANN001
    parts = [report(service, registry, u) for u in (COMMUNE, OTHER)]
    province = report(service, registry, PROVINCE)
    country = report(service, registry, None)
    for g, row in groups(province).items():
        assert row == tuple(sum(x) for x in zip(*(groups(p)[g] for p in parts), strict=True))
    for section in ADDITIVE:
        for k, v in province[section].items():
            if k in ("share", "target", "avg_working_days", "max_working_days"):
                continue
            assert v == sum(p[section][k] for p in parts), (section, k)
    summed: dict[str, list[int]] = {}
    for p in parts:
        for a, row in deadlines(p).items():
            summed[a] = [x + y for x, y in zip(summed.get(a, [0, 0, 0, 0]), row, strict=True)]
    assert deadlines(province) == {a: tuple(v) for a, v in summed.items()}
    assert province["family_commitment"]["share"] == 0.5
    assert {k: v for k, v in country.items() if k not in ("unit", "unit_level", "unit_label")} == {
        k: v for k, v in province.items() if k not in ("unit", "unit_level", "unit_label")
    }


def test_a_period_before_the_changes(world, service, registry) -> None:  # noqa: ANN001
    """A past period is reconstructed from the audit log, not from the current state."""
    with service.uow(read_only=True) as uow:
        r = indicators(
            uow.session, registry, COMMUNE, date(2025, 11, 1), date(2025, 12, 31), today=TODAY
        )
    assert groups(r)["illegal_use"] == (0, 2, 0, 2)  # A (04/11) and C (22/12)
    assert groups(r)["substitution"] == (0, 1, 0, 1)  # B (04/12)
