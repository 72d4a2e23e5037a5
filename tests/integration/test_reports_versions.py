"""Reports over cases of several definition versions side by side, before and after a
migration and a hand-over between communes: the province still adds up."""

from __future__ import annotations

from datetime import date

from workflow.actors import SYSTEM
from workflow.calendar import WorkingCalendar
from workflow.migration import Migrator
from workflow.reports import indicators
from workflow.service import CaseService

from ..conftest import COMMUNE, OTHER_COMMUNE, PROVINCE
from .helpers import Driver, at

START, END, TODAY = date(2025, 12, 15), date(2026, 12, 14), date(2026, 11, 20)


def report(service: CaseService, unit: str) -> dict:
    with service.uow(read_only=True) as uow:
        return indicators(
            uow.session,
            service.registry,
            unit,
            START,
            END,
            today=TODAY,
            calendar=WorkingCalendar(),
        )


def groups(r: dict) -> dict[str, tuple[int, int, int, int]]:
    return {g["group"]: (g["at_start"], g["new"], g["ended"], g["at_end"]) for g in r["groups"]}


def illegal_use(drive: Driver, day: date, unit: str, version: int | None) -> int:
    cid = drive.open(day, unit=unit, version=version).case_id
    t = drive.definition(cid).transitions["start_illegal_use_management"]
    police = drive.actors.get("commune_police", "officer", unit)
    drive.attach(cid, [req.any_of[0] for req in t.documents], day, actor=police)
    drive.fire(cid, t.key, day, attach=False, actor=drive.actors.get("commune_pc", "head", unit))
    return cid


def summed(*reports: dict) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for r in reports:
        for g, row in groups(r).items():
            out[g] = tuple(a + b for a, b in zip(out.get(g, (0, 0, 0, 0)), row, strict=True))
    return out


def test_a_province_mixing_v1_v2_and_v3_cases_adds_up(service: CaseService, actors) -> None:  # noqa: ANN001
    drive = Driver(service, actors)
    v1 = illegal_use(drive, date(2025, 3, 3), COMMUNE, 1)
    illegal_use(drive, date(2025, 9, 8), OTHER_COMMUNE, 2)
    v3 = illegal_use(drive, date(2026, 7, 6), COMMUNE, None)
    assert drive.definition(v3).version == 3

    def check() -> tuple[dict, dict, dict]:
        parts = report(service, COMMUNE), report(service, OTHER_COMMUNE)
        province = report(service, PROVINCE)
        assert groups(province) == {
            g: row for g, row in summed(*parts).items() if g in groups(province)
        }
        return province, *parts

    province, _, _ = check()
    assert groups(province)["illegal_use"] == (2, 1, 0, 3)

    # the v1 case moves to v3: a migration is not a change of state, the figures stay
    m = Migrator(service)
    m.run(m.start("drug_rehab@1", "drug_rehab@3", {}, SYSTEM, at(date(2026, 8, 3))), SYSTEM,
          lambda: at(date(2026, 8, 3)))  # fmt: skip
    assert drive.definition(v1).version == 3
    after, commune, other = check()
    assert groups(after) == groups(province)

    # the v1-born case is handed to the other commune: the province total does not change
    drive.attach(v1, ["residence_change_report"], date(2026, 9, 1))
    service.record_activity(
        v1,
        "report_residence_change",
        {"moved_date": "2026-09-01", "report_date": "2026-09-01", "new_unit": OTHER_COMMUNE},
        actors.get("commune_police", "officer", COMMUNE),
        at(date(2026, 9, 1)),
    )
    service.record_activity(
        v1,
        "forward_file",
        {"forwarded_date": "2026-09-02"},
        actors.get("commune_police", "officer", COMMUNE),
        at(date(2026, 9, 2)),
    )
    moved, commune2, other2 = check()
    assert groups(moved) == groups(province)
    assert groups(commune2)["illegal_use"][3] == groups(commune)["illegal_use"][3] - 1
    assert groups(other2)["illegal_use"][3] == groups(other)["illegal_use"][3] + 1
