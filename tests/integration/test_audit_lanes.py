"""The audit log in lanes (``workflow.audit``, migration 0010), on SQLite and PostgreSQL.

Every case's events go to one lane (``case_id mod lanes``), each lane a chain of its own from
the split; ``audit.verify`` checks the chain up to the split and every lane, and finds a
tampered event in any lane as it does in one chain. The split of a running chain
(``set_lanes``, and migration 0010 on a database with history) keeps it verifiable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from workflow import audit, rollup, schema
from workflow.model import AuditEvent, AuditHead
from workflow.service import CaseService

from .helpers import Driver, at

LANES = 4
EVENTS = AuditEvent.__table__
HEAD = AuditHead.__table__
DAY = date(2026, 3, 2)

# these tests edit audit rows behind the engine's back: no counter check after
pytestmark = pytest.mark.tampers


def set_lanes(service: CaseService, lanes: int) -> tuple[int, str]:
    with service.uow() as uow:
        split = audit.set_lanes(uow.session, lanes)
        uow.commit()
    return split


def history(drive: Driver, cases: int = 5, start: date = DAY) -> list[int]:
    """``cases`` cases opened and moved twice each (ids in order)."""
    ids = [drive.open(start, name=f"Người thứ {i}").case_id for i in range(cases)]
    for cid in ids:
        drive.fire(cid, "request_determination", start + timedelta(days=1))
        drive.fire(cid, "record_addiction_result", start + timedelta(days=2))
    return ids


def events(engine: Engine) -> list[tuple[int, int | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(EVENTS.c.seq, EVENTS.c.case_id))]


@contextmanager
def tampering(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn


@pytest.fixture
def laned(service: CaseService, drive: Driver) -> list[int]:
    """A fresh database in ``LANES`` lanes, and a history of five cases."""
    assert set_lanes(service, LANES) == (0, audit.GENESIS)
    return history(drive)


def test_a_case_s_events_stay_in_its_lane(laned: list[int], engine: Engine, service) -> None:  # noqa: ANN001
    rows = events(engine)
    assert rows and all(cid is not None for _, cid in rows)
    for seq, cid in rows:
        assert (seq - 1) % LANES == cid % LANES, (seq, cid)
    by_lane: dict[int, list[int]] = {}
    for seq, _ in sorted(rows):
        by_lane.setdefault((seq - 1) % LANES, []).append(seq)
    for lane, seqs in by_lane.items():  # gapless within the lane, from its first seq
        assert seqs == list(range(1 + lane, 1 + lane + LANES * len(seqs), LANES))
    with engine.connect() as conn:
        heads = conn.execute(select(HEAD).order_by(HEAD.c.id)).mappings().all()
    for h in heads:
        lane = h["id"] - 1
        assert h["stride"] == LANES and h["base_seq"] == 0
        assert h["seq"] == (by_lane[lane][-1] if lane in by_lane else lane + 1 - LANES)
    assert service.verify_audit() == audit.VerifyResult(True, len(rows))


def test_events_of_no_case_go_to_lane_0(laned: list[int], engine: Engine, service, actors) -> None:  # noqa: ANN001
    admin = actors.get("provincial_police", "admin")
    before = len(events(engine))
    with service.uow() as uow:
        event = audit.append_admin(
            uow.session, admin, datetime(2026, 3, 9, tzinfo=UTC), "agency.updated", {"x": 1}
        )
        uow.commit()
    assert (event.seq - 1) % LANES == 0 and event.case_id is None
    assert len(events(engine)) == before + 1
    assert service.verify_audit() == audit.VerifyResult(True, before + 1)


def test_an_edit_in_a_lane_is_found(laned: list[int], engine: Engine, service) -> None:  # noqa: ANN001
    rows = sorted(events(engine))
    victim = next(seq for seq, _ in rows if (seq - 1) % LANES == 2 and seq > LANES * 2)
    with tampering(engine) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == victim).values(to_state="closed"))
    result = service.verify_audit()
    assert not result.ok and result.first_bad_seq == victim, result
    assert "edited" in result.reason
    assert result.checked == sum(1 for seq, _ in rows if seq < victim)


def test_a_deletion_in_the_middle_of_a_lane_is_found(
    laned: list[int], engine: Engine, service
) -> None:  # noqa: ANN001
    lane_seqs = sorted(seq for seq, _ in events(engine) if (seq - 1) % LANES == 1)
    assert len(lane_seqs) >= 3
    with tampering(engine) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == lane_seqs[1]))
    result = service.verify_audit()
    assert not result.ok and result.first_bad_seq == lane_seqs[2], result
    assert f"expected event {lane_seqs[1]}" in result.reason


def test_a_deletion_at_the_end_of_a_lane_is_found(
    laned: list[int], engine: Engine, service
) -> None:  # noqa: ANN001
    lane_seqs = sorted(seq for seq, _ in events(engine) if (seq - 1) % LANES == 3)
    with tampering(engine) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == lane_seqs[-1]))
    result = service.verify_audit()
    assert not result.ok and result.first_bad_seq == lane_seqs[-1], result
    assert f"the head says {lane_seqs[-1]}" in result.reason


def test_an_event_added_beyond_a_lane_s_head_is_found(
    laned: list[int], engine: Engine, service
) -> None:  # noqa: ANN001
    with engine.connect() as conn:
        last = (
            conn.execute(
                select(EVENTS).where(
                    EVENTS.c.seq == select(HEAD.c.seq).where(HEAD.c.id == 2).scalar_subquery()
                )
            )
            .mappings()
            .one()
        )
    forged = dict(last, seq=last["seq"] + LANES, prev_hash=last["hash"])
    forged["hash"] = audit.chain_hash(last["hash"], AuditEvent(**forged))
    with tampering(engine) as conn:
        conn.execute(insert(EVENTS).values(**forged))
    result = service.verify_audit()
    assert not result.ok and result.first_bad_seq == forged["seq"], result
    assert "beyond the recorded head" in result.reason


def test_an_event_moved_to_another_lane_is_found(laned: list[int], engine: Engine, service) -> None:  # noqa: ANN001
    rows = sorted(events(engine))
    free = max(seq for seq, _ in rows) + 1  # a seq of lane (free - 1) % LANES, not taken
    victim = rows[-1][0]
    with tampering(engine) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == victim).values(seq=free))
    result = service.verify_audit()
    assert not result.ok, result


def test_heads_that_disagree_on_the_split_are_found(
    laned: list[int], engine: Engine, service
) -> None:  # noqa: ANN001
    with tampering(engine) as conn:
        conn.execute(update(HEAD).where(HEAD.c.id == 3).values(base_seq=1))
    result = service.verify_audit()
    assert not result.ok and "disagree" in result.reason, result


def test_lanes_that_hold_events_are_not_split_again(
    laned: list[int], engine: Engine, service
) -> None:  # noqa: ANN001
    with engine.connect() as conn:
        before = conn.execute(select(HEAD).order_by(HEAD.c.id)).all()
    with pytest.raises(ValueError, match="cannot be split again"):
        set_lanes(service, 2)
    with engine.connect() as conn:
        assert conn.execute(select(HEAD).order_by(HEAD.c.id)).all() == before
    assert service.verify_audit().ok


def test_a_running_chain_is_split_and_still_verifies(
    service, drive: Driver, engine: Engine
) -> None:  # noqa: ANN001
    set_lanes(service, 1)
    history(drive, cases=3)
    old = sorted(events(engine))
    assert [seq for seq, _ in old] == list(range(1, len(old) + 1))  # one chain
    with engine.connect() as conn:
        last_hash = conn.execute(select(EVENTS.c.hash).where(EVENTS.c.seq == len(old))).scalar_one()
    assert set_lanes(service, LANES) == (len(old), last_hash)
    ids = history(drive, cases=3, start=DAY + timedelta(days=10))
    rows = sorted(events(engine))
    new = [(seq, cid) for seq, cid in rows if seq > len(old)]
    assert len(new) == len(rows) - len(old) > 0
    for seq, cid in new:  # after the split, in the case's lane
        assert (seq - len(old) - 1) % LANES == cid % LANES
    assert {cid for _, cid in new} >= set(ids)
    assert service.verify_audit() == audit.VerifyResult(True, len(rows))
    # an edit of the chain before the split is still found
    with tampering(engine) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == 2).values(action="forged"))
    result = service.verify_audit()
    assert not result.ok and result.first_bad_seq == 2 and result.checked == 1, result


def test_migration_0010_splits_a_running_chain(
    service, drive: Driver, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """Down to 0009 with a history in one chain, up again: PostgreSQL's chain is split into
    ``REHABFLOW_AUDIT_LANES`` lanes at its end, SQLite's stays one; both verify, and the
    commands after go on in their lanes."""
    set_lanes(service, 1)
    history(drive, cases=2)
    n = len(events(engine))
    schema.upgrade(engine, "0010")
    from alembic import command

    cfg = schema.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0009")
    monkeypatch.setenv("REHABFLOW_AUDIT_LANES", "3")
    schema.upgrade(engine)
    with engine.connect() as conn:
        heads = conn.execute(select(HEAD).order_by(HEAD.c.id)).mappings().all()
    lanes = 3 if engine.dialect.name == "postgresql" else 1
    assert len(heads) == lanes and {h["stride"] for h in heads} == {lanes}
    assert {h["base_seq"] for h in heads} == ({n} if lanes > 1 else {0})
    assert service.verify_audit() == audit.VerifyResult(True, n)
    history(drive, cases=2, start=DAY + timedelta(days=20))
    total = len(events(engine))
    assert service.verify_audit() == audit.VerifyResult(True, total)
    # the counters' deltas were folded by the downgrade, and are kept again after it
    with service.uow(read_only=True) as uow:
        assert rollup.check(uow.session) == (0, [])


def test_a_command_waiting_for_a_head_that_a_split_replaces_writes_nothing(
    service: CaseService, drive: Driver, engine: Engine
) -> None:
    """PostgreSQL: a command whose one statement waits for its lane's head while the lanes
    are split finds no head once the split commits; its statement then fails as a whole,
    case row included (not a case moved without its event), and the command sent again
    goes through in the new lanes."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing waits for a head")
    import threading
    import time

    set_lanes(service, 1)
    cid = drive.open(DAY).case_id
    transition = drive.definition(cid).transitions["request_determination"]
    drive.attach(cid, [req.any_of[0] for req in transition.documents], DAY)
    form = drive.form(cid, "request_determination", DAY)
    actor = drive.actor_for(transition)
    with engine.connect() as conn:
        version = conn.execute(text(f"SELECT version FROM cases WHERE id = {cid}")).scalar()
    n = len(events(engine))
    outcome: list[BaseException | None] = []

    def command() -> None:
        try:
            service.advance(cid, "request_determination", form, actor, at(DAY))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    with service.uow() as split:  # the split in flight: every head locked
        audit.set_lanes(split.session, LANES)
        splitter = split.session.execute(text("SELECT pg_backend_pid()")).scalar()
        thread = threading.Thread(target=command, daemon=True)
        thread.start()
        deadline, waiting = time.monotonic() + 30, 0
        with engine.connect() as watch:
            while not waiting and time.monotonic() < deadline:
                time.sleep(0.02)
                waiting = watch.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE CAST(:pid AS int) = ANY(pg_blocking_pids(pid))"
                    ),
                    {"pid": splitter},
                ).scalar()
        assert waiting, ("the command never waited for the split", outcome)
        split.commit()
    thread.join(30)
    assert len(outcome) == 1 and outcome[0] is not None, outcome
    assert "audit lane split" in str(outcome[0])
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version FROM cases WHERE id = {cid}")).scalar() == version
    assert len(events(engine)) == n
    assert service.verify_audit() == audit.VerifyResult(True, n)
    result = service.advance(cid, "request_determination", form, actor, at(DAY))
    assert result.state == "addiction_determination"
    assert (result.audit_seq - n - 1) % LANES == cid % LANES
    assert service.verify_audit() == audit.VerifyResult(True, n + 1)
