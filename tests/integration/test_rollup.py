"""The report counters (workflow.rollup) always equal a recount of the audit log and the
deadlines, whatever wrote them: commands, refused commands, hand-overs (also to another
province), the migration of running cases; and ``check`` finds a counter that does not.
On PostgreSQL commands write deltas that ``fold`` adds to the counters: the reports and
``check`` count the deltas not folded yet, and a fold loses none written while it runs."""

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


def fold(service) -> int:  # noqa: ANN001
    with service.uow() as uow:
        changed = rollup.fold(uow.session)
        uow.commit()
    return changed


def deltas(service) -> int:  # noqa: ANN001
    """The deltas not folded yet (both families)."""
    with service.uow(read_only=True) as uow:
        return sum(
            uow.session.execute(select(func.count()).select_from(t)).scalar_one()
            for t in rollup.DELTAS.values()
        )


def stored(service) -> dict[tuple, int]:  # noqa: ANN001
    """Every stored counter (both families) by key, zeros left out, once the deltas are
    folded (as the sweep does every minute)."""
    fold(service)
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
    fold(service)
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


def test_commands_write_deltas_that_the_fold_adds(drive: Driver, service, engine) -> None:  # noqa: ANN001
    """PostgreSQL: a command inserts its counters' deltas and touches no counter row; the
    report reads them before the fold as after it; the fold empties the deltas. SQLite: the
    commands add to the counters themselves and there is nothing to fold."""
    from workflow import reports

    walk(drive)
    walk(drive)
    with service.uow(read_only=True) as uow:
        counters = sum(
            uow.session.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (rollup.MOVES, rollup.DEADLINES)
        )

    def report(unit: str | None) -> dict:
        with service.uow(read_only=True) as uow:
            out = reports.indicators(
                uow.session,
                service.registry,
                unit,
                date(2026, 1, 1),
                date(2026, 12, 31),
                today=date(2026, 6, 1),
                calendar=service.calendar,
            )
        out.pop("generated_at", None)
        return out

    before = {unit: report(unit) for unit in (COMMUNE, PROVINCE, None)}
    assert assert_exact(service) is None  # check counts the deltas
    if engine.dialect.name == "postgresql":
        assert counters == 0 and deltas(service) > 0
        assert fold(service) > 0
    else:
        assert counters > 0 and deltas(service) == 0
        assert fold(service) == 0
    assert deltas(service) == 0
    assert {unit: report(unit) for unit in (COMMUNE, PROVINCE, None)} == before
    # (the figures that come from the counters are there: the new cases of the moves, the
    # deadlines of the deadline counters)
    new = {g["group"]: g["new"] for g in before[COMMUNE]["groups"]}
    assert new["illegal_use"] == new["voluntary_home"] == 2, new
    assert before[None]["deadlines"] == before[COMMUNE]["deadlines"] != {}
    assert fold(service) == 0  # nothing left


@pytest.mark.postgres
@pytest.mark.tampers
def test_a_delta_committed_during_a_fold_is_folded_once(engine, service) -> None:  # noqa: ANN001
    """A command still in flight when the fold runs (its delta not committed) is folded by
    the next fold, exactly once; the fold does not wait for it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's commands add to the counters themselves")
    row = {
        "level": "commune",
        "day": date(2026, 2, 2),
        "unit": COMMUNE,
        "action": "transition:x",
        "definition": "drug_rehab@1",
        "from_state": "a",
        "to_state": "b",
    }
    table = rollup.DELTAS["report_moves"]

    def counter() -> int | None:
        with engine.connect() as conn:
            return conn.execute(
                select(rollup.MOVES.c.n).where(*[rollup.MOVES.c[k] == v for k, v in row.items()])
            ).scalar()

    with engine.begin() as conn:
        conn.execute(table.insert().values(**row, n=2))
    with engine.connect() as in_flight:
        in_flight.begin()
        in_flight.execute(table.insert().values(**row, n=3))
        in_flight.execute(text("SET LOCAL lock_timeout = '5s'"))
        assert fold(service) == 1  # the committed delta only, without waiting
        assert counter() == 2
        in_flight.commit()
    assert fold(service) == 1
    assert counter() == 5
    assert deltas(service) == 0
