"""The report counters (workflow.rollup) always equal a recount of the audit log and the
deadlines, whatever wrote them: commands, refused commands, hand-overs (also to another
province), the migration of running cases; and ``check`` finds a counter that does not."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select, text

from workflow import rollup, units
from workflow.errors import RehabflowError
from workflow.model import AuditEvent, ReportDeadline, ReportMove
from workflow.rollup import state_change

from ..conftest import COMMUNE, PROVINCE
from .helpers import Driver, at

ELSEWHERE_PROVINCE = "01"  # Hà Nội


def stored(service) -> dict[tuple, int]:  # noqa: ANN001
    """Every stored counter (both families) by key, zeros left out."""
    out: dict[tuple, int] = {}
    with service.uow(read_only=True) as uow:
        for table in (ReportMove.__table__, ReportDeadline.__table__):
            for row in uow.session.execute(select(table)).mappings():
                if row["n"]:
                    key = tuple(v for k, v in row.items() if k != "n")
                    out[(table.name, *key)] = row["n"]
    return out


def assert_exact(service) -> None:  # noqa: ANN001
    with service.uow(read_only=True) as uow:
        n, differences = rollup.check(uow.session)
    assert (n, differences) == (0, [])


def walk(drive: Driver, unit: str = COMMUNE) -> int:
    """A case through several states, an activity that meets a deadline, a return."""
    cid = drive.open(date(2026, 1, 5), unit=unit).case_id
    drive.fire(cid, "start_illegal_use_management", date(2026, 1, 6))
    drive.fire(cid, "request_determination", date(2026, 2, 2), reason="own_request")
    drive.fire(cid, "record_addiction_result", date(2026, 2, 3))
    drive.fire(cid, "register_voluntary_home", date(2026, 2, 4), registered_by="self")
    drive.fire(cid, "decide_voluntary_home", date(2026, 2, 5), term_months=12)
    drive.activity(cid, "check_in", date(2026, 3, 2), result="present")
    return cid


def test_commands_keep_every_counter_exact(drive: Driver, service) -> None:  # noqa: ANN001
    walk(drive)
    walk(drive)
    assert_exact(service)
    counters = stored(service)
    with service.uow(read_only=True) as uow:
        moves = uow.session.execute(
            select(func.count()).select_from(AuditEvent).where(state_change())
        ).scalar_one()
    per_level = {
        level: sum(n for k, n in counters.items() if k[0] == "report_moves" and k[1] == level)
        for level in rollup.LEVELS
    }
    assert moves == 12 and per_level == {"commune": moves, "province": moves}
    # the counters are on the business day (Vietnam) of each event, at the case's place
    assert (
        counters[
            (
                "report_moves",
                "commune",
                date(2026, 1, 5),
                COMMUNE,
                "case.opened",
                "drug_rehab@1",
                rollup.OPENING,
                "detected",
            )
        ]
        == 2
    )
    assert any(k[0] == "report_deadlines" and k[5] == "met" for k in counters)


def test_a_refused_command_changes_no_counter(drive: Driver, service, actors) -> None:  # noqa: ANN001
    cid = walk(drive)
    before = stored(service)
    police = actors.get("commune_police", "officer")
    with pytest.raises(RehabflowError):  # no document attached: refused, nothing written
        service.advance(cid, "report_relapse", {}, police, at(date(2026, 4, 1)))
    assert stored(service) == before
    assert_exact(service)


def test_a_hand_over_to_another_province_moves_the_counters(drive: Driver, service) -> None:  # noqa: ANN001
    cid = drive.open(date(2025, 1, 6)).case_id
    drive.fire(cid, "start_illegal_use_management", date(2025, 1, 6))
    target = units.communes_of(ELSEWHERE_PROVINCE)[0].code
    drive.activity(
        cid,
        "change_residence",
        date(2025, 1, 8),
        moved_date="2025-01-08",
        new_unit=target,
        reason="chuyển nhà",
    )
    assert_exact(service)
    places = {(k[1], k[3]) for k in stored(service)}
    # nothing is left at the old commune and province (zeros are dropped)
    assert ("commune", COMMUNE) not in places and ("province", PROVINCE) not in places
    assert ("commune", target) in places and ("province", ELSEWHERE_PROVINCE) in places


def test_rebuild_gives_the_counters_the_commands_kept(drive: Driver, service) -> None:  # noqa: ANN001
    walk(drive)
    cid = drive.open(date(2026, 1, 5)).case_id
    drive.fire(cid, "start_illegal_use_management", date(2026, 1, 6))
    kept = stored(service)
    with service.uow() as uow:
        sizes = rollup.rebuild(uow.session)
        uow.commit()
    assert stored(service) == kept
    assert sizes["report_moves"] == sum(1 for k in kept if k[0] == "report_moves")


@pytest.mark.tampers
def test_check_names_a_counter_that_does_not_match(drive: Driver, service) -> None:  # noqa: ANN001
    walk(drive)
    with service.uow() as uow:
        uow.session.execute(
            text(
                "UPDATE report_moves SET n = n + 1 WHERE level = 'province' "
                "AND action = 'case.opened'"
            )
        )
        uow.commit()
    with service.uow(read_only=True) as uow:
        n, differences = rollup.check(uow.session)
    assert n == 1
    (diff,) = differences
    assert (diff.table, diff.key[0], diff.key[3], diff.stored, diff.expected) == (
        "report_moves",
        "province",
        "case.opened",
        2,
        1,
    )
