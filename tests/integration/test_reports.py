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
* On 10/06/2026 A's home-rehab decision is revoked: A's management dossier is incomplete.

Targets for 2026: commune 17662 60 home/community rehab, 250 methadone (the plans' names for
the groups), 2 compulsory dossiers, 90 % support; commune 17677 40 home/community rehab and 10
illegal-use management; the province (40) 30 illegal-use management of its own.
"""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import select

from workflow.actors import SYSTEM
from workflow.calendar import WorkingCalendar
from workflow.model import Document
from workflow.reports import drill, figure_value, indicators, period
from workflow.targets import Targets

from ..conftest import COMMUNE, PROVINCE
from .helpers import Driver, at

OTHER = "17677"
START, END = period("2026H1")
TODAY = date(2026, 6, 20)
REVOKED = date(2026, 6, 10)
MONTHS = ["2025-12", "2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06"]


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

    with service.uow(read_only=True) as uow:
        decision = uow.session.execute(
            select(Document.id).where(
                Document.case_id == a, Document.type == "voluntary_home_decision"
            )
        ).scalar_one()
    officer = actors.get("commune_pc", "officer")
    service.revoke_document(a, decision, "signed by the wrong person", officer, at(REVOKED))

    targets = Targets(service.session_factory, registry)
    for unit, indicator, n in (
        (COMMUNE, "home_community", 60),
        (COMMUNE, "methadone", 250),
        (COMMUNE, "dossiers_made", 2),
        (COMMUNE, "support_share", 90),
        (OTHER, "voluntary_home", 40),
        (OTHER, "illegal_use", 10),
        (PROVINCE, "illegal_use", 30),
    ):
        targets.set(SYSTEM, unit, 2026, indicator, n, at(date(2026, 1, 2)))
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
    # A lacks its (revoked) home-rehab decision; B's state requires nothing it lacks
    assert r["management_dossier"] == {"cases": 2, "complete": 1, "incomplete": 1, "share": 0.5}
    assert r["support"] == {
        "finished": 0,
        "supported": 0,
        "unsupported": 0,
        "share": None,
        "target": 0.9,  # the commune's own target
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
    # targets: a province without a target of its own plans the sum of its communes'; the
    # actual of a count is the sum of the communes' actuals
    plans = [{t["indicator"]: t for t in p["targets"]} for p in parts]
    for t in province["targets"]:
        if t["kind"] == "people":  # at the start + entries
            expected = sum(sum(groups(p)[t["indicator"]][:2]) for p in parts)
        elif t["kind"] == "count":
            expected = sum(figure_value(p, t["drill"]) for p in parts)
        else:
            continue
        assert t["actual"] == expected, t
        if t["source"] == "communes":
            assert t["plan"] == sum(p[t["indicator"]]["plan"] for p in plans if t["indicator"] in p)
    for m_p, m_c, m_o in zip(province["trend"], *(p["trend"] for p in parts), strict=True):
        assert m_p["new_cases"] == m_c["new_cases"] + m_o["new_cases"]
    same = ("unit", "unit_level", "unit_label", "targets", "drill")
    assert {k: v for k, v in country.items() if k not in same} == {
        k: v for k, v in province.items() if k not in same
    }


def test_a_period_before_the_changes(world, service, registry) -> None:  # noqa: ANN001
    """A past period is reconstructed from the audit log, not from the current state."""
    with service.uow(read_only=True) as uow:
        r = indicators(
            uow.session, registry, COMMUNE, date(2025, 11, 1), date(2025, 12, 31), today=TODAY
        )
    assert groups(r)["illegal_use"] == (0, 2, 0, 2)  # A (04/11) and C (22/12)
    assert groups(r)["substitution"] == (0, 1, 0, 1)  # B (04/12)


def trend(r: dict) -> dict[str, tuple]:
    """month -> (voluntary_home, substitution, illegal_use, voluntary_facility, post_rehab,
    absent, total, new cases)."""
    return {
        m["month"]: (
            m["groups"]["voluntary_home"],
            m["groups"]["substitution"],
            m["groups"]["illegal_use"],
            m["groups"]["voluntary_facility"],
            m["groups"]["post_rehab"],
            m["groups"]["absent"],
            m["total"],
            m["new_cases"],
        )
        for m in r["trend"]
    }


def test_monthly_trend(world, service, registry) -> None:  # noqa: ANN001
    r = report(service, registry, COMMUNE)
    assert [(m["month"], m["from"], m["to"]) for m in r["trend"]][0] == (
        "2025-12",
        "2025-12-15",
        "2025-12-31",
    )
    assert r["trend"][-1]["to"] == "2026-06-14"
    # vh, sub, iu, vf, pr, absent, total, new
    assert trend(r) == {
        "2025-12": (0, 1, 2, 0, 0, 0, 3, 1),  # A and C in illegal use (C opened 20/12), B
        "2026-01": (1, 1, 1, 0, 0, 0, 3, 0),  # A moved to home rehab
        "2026-02": (1, 1, 1, 0, 0, 0, 3, 0),
        "2026-03": (1, 0, 1, 0, 0, 0, 2, 0),  # B relapsed, in court proceedings
        "2026-04": (1, 0, 1, 0, 0, 0, 2, 0),
        "2026-05": (1, 0, 1, 0, 0, 0, 2, 0),
        "2026-06": (1, 0, 0, 0, 0, 0, 1, 0),  # C closed on the last day
    }
    other = report(service, registry, OTHER)
    assert trend(other) == {
        "2025-12": (0, 0, 0, 1, 0, 0, 1, 0),
        "2026-01": (0, 0, 1, 1, 0, 0, 2, 1),  # D opened 05/01
        "2026-02": (0, 0, 1, 1, 0, 1, 2, 0),  # D absent from 02/02 (still in its group)
        "2026-03": (0, 0, 1, 1, 0, 1, 2, 0),
        "2026-04": (0, 0, 1, 0, 1, 1, 2, 0),  # E completed, then post-rehab management
        "2026-05": (0, 0, 1, 0, 1, 1, 2, 0),
        "2026-06": (0, 0, 1, 0, 1, 1, 2, 0),
    }
    # the last month ends with the period: its figures are the groups' at_end
    for rep_ in (r, other):
        last = rep_["trend"][-1]["groups"]
        assert {g["group"]: g["at_end"] for g in rep_["groups"]} == last
    province = report(service, registry, PROVINCE)
    for month in MONTHS:
        assert trend(province)[month] == tuple(
            x + y for x, y in zip(trend(r)[month], trend(other)[month], strict=True)
        )


def targets(r: dict) -> dict[str, tuple]:
    """indicator -> (plan, actual, % achieved, source, units summed)."""
    return {
        t["indicator"]: (t["plan"], t["actual"], t["achieved"], t["source"], t["units"])
        for t in r["targets"]
    }


def test_plan_vs_actual(world, service, registry) -> None:  # noqa: ANN001
    r = report(service, registry, COMMUNE)
    assert r["year"] == 2026
    # a group's actual: the people in it at the start plus the entries during the period
    assert targets(r) == {
        "voluntary_home": (60, 1, 0.0167, "unit", 1),  # A entered
        "substitution": (250, 1, 0.004, "unit", 1),  # B at the start
        "dossiers_made": (2, 1, 0.5, "unit", 1),
        "support_share": (90, None, None, "unit", 1),  # nobody finished rehab
        "family_commitment_share": (100, 100.0, 1.0, "default", 0),
        "management_dossier_share": (100, 50.0, 0.5, "default", 0),
    }
    other = report(service, registry, OTHER)
    assert targets(other) == {
        "voluntary_home": (40, 0, 0.0, "unit", 1),
        "illegal_use": (10, 1, 0.1, "unit", 1),  # D entered
        "support_share": (80, 100.0, 1.25, "default", 0),
        "family_commitment_share": (100, 0.0, 0.0, "default", 0),
        "management_dossier_share": (100, 100.0, 1.0, "default", 0),
    }
    province = report(service, registry, PROVINCE)
    assert targets(province) == {
        "voluntary_home": (100, 1, 0.01, "communes", 2),  # no target of its own: 60 + 40
        "substitution": (250, 1, 0.004, "communes", 1),
        "illegal_use": (30, 3, 0.1, "unit", 1),  # its own (the commune's 10 not added)
        "dossiers_made": (2, 1, 0.5, "communes", 1),
        "support_share": (80, 100.0, 1.25, "default", 0),  # percentages are never summed
        "family_commitment_share": (100, 50.0, 0.5, "default", 0),
        "management_dossier_share": (100, 75.0, 0.75, "default", 0),
    }
    country = report(service, registry, None)
    assert {k: v[:2] + v[3:4] for k, v in targets(country).items()} == {
        "voluntary_home": (100, 1, "provinces"),
        "substitution": (250, 1, "provinces"),
        "illegal_use": (30, 3, "provinces"),
        "dossiers_made": (2, 1, "provinces"),
        "support_share": (80, 100.0, "default"),
        "family_commitment_share": (100, 50.0, "default"),
        "management_dossier_share": (100, 75.0, "default"),
    }
    # an actual is the figure of the report it names
    assert r["groups"][0]["at_start"] + r["groups"][0]["new"] == 1


def all_rows(service, registry, unit, figure, *, limit=200):  # noqa: ANN001, ANN201
    rows, cursor = [], None
    with service.uow(read_only=True) as uow:
        while True:
            page = drill(
                uow.session,
                registry,
                unit,
                START,
                END,
                figure,
                today=TODAY,
                actor=SYSTEM,
                limit=limit,
                cursor=cursor,
            )
            rows += page["items"]
            cursor = page["next"]
            if cursor is None:
                return page["count"], rows


@pytest.mark.parametrize("unit", [COMMUNE, OTHER, PROVINCE])
def test_every_figure_drills_to_as_many_rows(world, service, registry, unit) -> None:  # noqa: ANN001
    r = report(service, registry, unit)
    checked = 0
    for path, key in r["drill"].items():
        if key is None:
            assert path.endswith(".plan") or path.endswith(".target"), path
            continue
        count, rows = all_rows(service, registry, unit, key)
        assert len(rows) == count, key
        assert len({(x["id"], x["ref"]) for x in rows}) == count, key  # no row twice
        value = figure_value(r, path)
        if key == path:
            assert count == value, (path, count, value)
            checked += 1
        elif path.startswith("targets.") and path.endswith(".actual"):
            kind = next(
                t["kind"] for t in r["targets"] if path == f"targets.{t['indicator']}.actual"
            )
            if kind != "percent":
                assert count == value, (path, count, value)
    assert checked > 100


def test_drill_rows_and_pages(world, service, registry) -> None:  # noqa: ANN001
    count, rows = all_rows(service, registry, COMMUNE, "deadlines.commune_pc.due", limit=2)
    assert count == 6 and len(rows) == 6
    assert [x["id"] for x in rows] == sorted((x["id"] for x in rows), reverse=True)
    assert {x["detail"] for x in rows} == {"check_in_due", "register_voluntary",
                                           "voluntary_home_decision"}  # fmt: skip
    count, rows = all_rows(service, registry, COMMUNE, "groups.illegal_use.ended")
    assert count == 2 and {x["id"] for x in rows} == {world["A"], world["C"]}
    assert all(x["at"] is not None and x["detail"].startswith("transition:") for x in rows)
    count, rows = all_rows(service, registry, COMMUNE, "management_dossier.incomplete")
    assert [x["id"] for x in rows] == [world["A"]]
    assert rows[0]["number"] and rows[0]["state"] == "voluntary_home"
    assert rows[0]["unit_code"] == COMMUNE and rows[0]["full_name"] == "Trần Văn Bình"
    count, rows = all_rows(service, registry, OTHER, "trend.2026-03.absent")
    assert [x["id"] for x in rows] == [world["D"]]
    count, rows = all_rows(service, registry, PROVINCE, "family_commitment.unsigned")
    assert [x["id"] for x in rows] == [world["E"]]


def test_xlsx_and_csv_exports(world, service, registry, tmp_path) -> None:  # noqa: ANN001
    import csv
    import io

    from openpyxl import load_workbook

    from workflow.report_export import export

    r = report(service, registry, COMMUNE)
    wb = load_workbook(io.BytesIO(export(r, "xlsx")[0]))
    assert wb.sheetnames[-2:] == ["Kế hoạch và thực hiện", "Xu hướng theo tháng"]
    for ws in wb.worksheets:  # every sheet opens with the title naming the unit and period
        assert ws["A1"].value.startswith("Báo cáo kết quả công tác cai nghiện")
        assert "Xã Đô Lương" in ws["A1"].value
        assert "từ ngày 15/12/2025 đến ngày 14/06/2026" in ws["A1"].value
    plan = wb["Kế hoạch và thực hiện"]
    assert [c.value for c in plan[2]] == [
        "Chỉ tiêu năm 2026",
        "Mã",
        "Đơn vị tính",
        "Kế hoạch",
        "Thực hiện",
        "Tỷ lệ đạt",
        "Nguồn kế hoạch",
    ]
    rows = {row[1]: row for row in plan.iter_rows(min_row=3, values_only=True)}
    assert rows["voluntary_home"] == (
        "Cai nghiện tự nguyện tại gia đình, cộng đồng",
        "voluntary_home",
        "người",
        60,
        1,
        0.0167,
        "Của đơn vị",
    )
    assert rows["support_share"][3:] == (90, None, None, "Của đơn vị")
    assert rows["management_dossier_share"][2:] == ("%", 100, 50, 0.5, "Mức của kế hoạch")
    assert plan.cell(3, 6).number_format == "0.0%"
    trend_ws = wb["Xu hướng theo tháng"]
    header = [c.value for c in trend_ws[2]]
    assert header[:3] == ["Tháng", "Từ ngày", "Đến ngày"] and header[-2:] == [
        "Tổng số đang quản lý",
        "Hồ sơ mới",
    ]
    first = [c.value for c in trend_ws[3]]
    assert first[0] == "12/2025"
    assert first[1].date() == date(2025, 12, 15) and first[2].date() == date(2025, 12, 31)
    assert trend_ws.cell(3, 2).number_format == "DD/MM/YYYY"
    assert first[3:] == [0, 0, 1, 0, 0, 2, 0, 3, 1]  # the groups in report order, total, new
    last = [c.value for c in trend_ws[trend_ws.max_row]]
    assert last[0] == "06/2026" and last[2].date() == date(2026, 6, 14)
    ratio = wb["Tỷ lệ"]
    assert [c.value for c in ratio[3]][1:] == [2, 1, 0.5, 1.0]
    assert [c.value for c in ratio[4]][4] == 0.9  # the commune's own support target
    path = tmp_path / "report.xlsx"
    path.write_bytes(export(r, "xlsx")[0])
    _libreoffice_reads(path)

    text = export(r, "csv")[0].decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0][0] == wb.worksheets[0]["A1"].value
    at = lines.index(["Xu hướng theo tháng"])
    assert lines[at + 2][:3] == ["12/2025", "15/12/2025", "31/12/2025"]
    at = lines.index(["Kế hoạch và thực hiện"])
    assert lines[at + 2] == [
        "Cai nghiện tự nguyện tại gia đình, cộng đồng",
        "voluntary_home",
        "người",
        "60",
        "1",
        "0.0167",
        "Của đơn vị",
    ]


def _libreoffice_reads(path) -> None:  # noqa: ANN001
    """When LibreOffice is installed, it converts the workbook (not required: often absent)."""
    import shutil
    import subprocess

    office = shutil.which("libreoffice") or shutil.which("soffice")
    if office is None:
        return
    out = subprocess.run(  # noqa: S603
        [office, "--headless", "--convert-to", "csv", "--outdir", str(path.parent), str(path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0 and (path.parent / "report.csv").exists(), out.stderr


def test_report_cli(world, tmp_path, engine) -> None:  # noqa: ANN001
    from click.testing import CliRunner
    from openpyxl import load_workbook

    from workflow.cli import main

    from ..conftest import DEFINITIONS

    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":  # the test's private schema (tests.conftest)
        with engine.connect() as conn:
            schema = conn.exec_driver_sql("select current_schema()").scalar()
        url += f"?options=-csearch_path%3D{schema}"
    env = {
        "DATABASE_URL": url,
        "REHABFLOW_DATA_DIR": str(tmp_path),
        "REHABFLOW_DEFINITIONS_DIR": str(DEFINITIONS),
    }
    out = CliRunner().invoke(
        main,
        [
            "report",
            "--unit",
            COMMUNE,
            "--period",
            "2026H1",
            "--format",
            "xlsx",
            "-o",
            str(tmp_path / "r.xlsx"),
        ],  # fmt: skip
        env=env,
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    wb = load_workbook(tmp_path / "r.xlsx")
    rows = {r[1]: r for r in wb["Nhóm quản lý"].iter_rows(min_row=3, values_only=True)}
    assert rows["illegal_use"][2:] == (1, 1, 2, 0)
    out = CliRunner().invoke(
        main, ["report", "--unit", COMMUNE, "--period", "2026H1"], env=env, catch_exceptions=False
    )
    body = json.loads(out.output)
    assert body["targets"][0]["indicator"] == "voluntary_home" and body["trend"]


def test_migrations_keep_each_state_in_its_reporting_group(registry) -> None:  # noqa: ANN001
    """The reports count a migration event only when it changes the state's key (it is then a
    move, its from_state read in the new version): a version that regroups a state, or maps
    one onto a state of another group, would need the reports to read the source version."""
    checked = 0
    for d in registry.all():
        for source_ref, plan in d.migrations.items():
            key, version = source_ref.split("@")
            source = registry.get(key, int(version))
            for old, new in plan.states.items():
                assert source.states[old].group == d.states[new].group, (source_ref, old, new)
                if old in d.states:
                    assert d.states[old].group == source.states[old].group, (d.ref, old)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("unit", [COMMUNE, PROVINCE, None])
def test_the_queries_on_two_connections_give_the_report_of_one(
    world,
    service,
    registry,
    unit,  # noqa: ANN001
) -> None:
    """PostgreSQL runs a report's queries on two connections sharing one snapshot; the
    figures are those of the same queries one after the other in one session."""
    with service.uow(read_only=True) as uow:
        args = (uow.session, registry, unit, START, END)
        one = indicators(*args, today=TODAY, calendar=WorkingCalendar(), workers=1)
    with service.uow(read_only=True) as uow:
        args = (uow.session, registry, unit, START, END)
        two = indicators(*args, today=TODAY, calendar=WorkingCalendar(), workers=2)
    assert two == one
    assert sum(g["at_end"] for g in one["groups"]) > 0
