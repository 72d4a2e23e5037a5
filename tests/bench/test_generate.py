"""``bench.generate``'s loads: when a load rebuilds the indexes, and what it leaves behind."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from bench import generate as gen
from bench.run import pg_database
from workflow import rollup
from workflow.audit import verify
from workflow.db import make_session_factory
from workflow.model import Case
from workflow.registry import Registry

from ..conftest import PG_AVAILABLE


def _counter_indexes(engine: Engine) -> list[tuple[str, str, bool]]:
    """(name, definition, primary?) of the report counters' indexes in the engine's schema."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisprimary FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid::regclass::text IN ('report_moves', 'report_deadlines')"
                " ORDER BY 1"
            )
        )
        return [tuple(r) for r in rows]


@pytest.mark.postgres
def test_a_pool_smaller_than_the_database_keeps_its_indexes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A big load drops the secondary indexes and rebuilds them afterwards; that pays only
    when the load is at least what the database holds. A pool of fresh cases (what
    ``bench.run`` appends before its sections) smaller than the database goes in with the
    indexes in place, and its report counters are added, not recounted. A big load recounts
    the counters with their tables' keys and indexes dropped, and makes them again."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    monkeypatch.setattr(gen, "BIG_LOAD", 40)  # instead of 50,000
    dropped: list[bool] = []
    real = gen.PgSink.drop_indexes

    def drop_indexes(self: gen.PgSink) -> None:
        dropped.append(True)
        real(self)

    monkeypatch.setattr(gen.PgSink, "drop_indexes", drop_indexes)
    recounted: list[bool] = []
    real_rebuild = rollup.rebuild
    monkeypatch.setattr(
        rollup, "rebuild", lambda session: recounted.append(True) or real_rebuild(session)
    )
    registry = Registry.from_directory(gen.DEFINITIONS)
    now = datetime.now(UTC)
    with pg_database(None, f"rfbench_pool_{os.getpid()}") as db:
        gen.ensure_schema(db.engine)
        counter_indexes = _counter_indexes(db.engine)
        assert len(counter_indexes) == 4  # two primary keys, two indexes
        report = gen.generate(db.engine, 100, now=now, registry=registry, variants=1)
        assert dropped == [True] and recounted == [True]  # into an empty database: big
        # the counters were recounted without their indexes, which came back as they were
        assert _counter_indexes(db.engine) == counter_indexes
        assert {"rows", "indexes", "vacuum", "counters"} <= set(report.phases)
        with make_session_factory(db.engine)() as s:
            assert rollup.check(s) == (0, [])
        ids = gen.make_pool(db.engine, registry, 60, now)  # >= BIG_LOAD, < 100 held
        assert dropped == [True] and recounted == [True], "the pool rebuilt the indexes"
        assert len(ids) == 60
        with make_session_factory(db.engine)() as s:
            assert s.scalar(select(func.count()).select_from(Case)) == 160
            assert rollup.check(s) == (0, [])  # the pool's counters were added
            assert verify(s).ok
        bigger = gen.make_pool(db.engine, registry, 200, now)  # more than the 160 held
        assert len(bigger) == 200 and dropped == [True, True]


@pytest.mark.postgres
def test_a_generation_is_recorded_and_pools_are_not() -> None:
    """``python -m bench.generate`` notes how many cases it added; the pools that
    ``bench.run`` adds later are not counted, so a run can say the database grew, and by
    how much (``bench.run.grown_row``)."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    from bench.run import grown_row

    with pg_database(None, f"rfbench_gen_{os.getpid()}") as db:
        assert gen.generated_cases(db.engine) is None  # nothing recorded yet
        assert gen.main(["--cases", "30", "--database-url", db.url, "--variants", "1"]) == 0
        assert gen.generated_cases(db.engine) == 30
        registry = Registry.from_directory(gen.DEFINITIONS)
        gen.make_pool(db.engine, registry, 12, datetime.now(UTC))
        assert gen.generated_cases(db.engine) == 30
        with make_session_factory(db.engine)() as s:
            held = s.scalar(select(func.count()).select_from(Case))
        assert held == 42
        assert grown_row({"cases_before": 30, "generated_cases": 30}) is None
        row = grown_row({"cases_before": held, "generated_cases": 30})
        assert row is not None and row[1] == "+12 cases"
        assert grown_row({"cases_before": held, "generated_cases": None}) is None


@pytest.mark.postgres
def test_a_load_sent_from_a_process_of_its_own_writes_the_same_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A load of ``PARALLEL_LOAD`` cases or more sends its rows from a process of its own
    (``SinkProcess``): the cases, their audit chain and their counters are what the load
    in this process writes; an error over there is raised here, and the load, one
    transaction, leaves nothing behind."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    monkeypatch.setattr(gen, "PARALLEL_LOAD", 20)  # instead of 20,000
    started: list[gen.SinkProcess] = []
    real_init = gen.SinkProcess.__init__

    def init(self: gen.SinkProcess, *args: object) -> None:
        real_init(self, *args)
        started.append(self)

    monkeypatch.setattr(gen.SinkProcess, "__init__", init)
    registry = Registry.from_directory(gen.DEFINITIONS)
    now = datetime.now(UTC)
    with pg_database(None, f"rfbench_proc_{os.getpid()}") as db:
        report = gen.generate(db.engine, 30, now=now, registry=registry, variants=1)
        assert len(started) == 1 and not started[0].proc.is_alive()
        assert report.rows["cases"] == 30 and report.rows["audit_events"] > 100
        gen.make_pool(db.engine, registry, 10, now)  # below the threshold: this process
        assert len(started) == 1

        def check(cases: int) -> None:
            with make_session_factory(db.engine)() as s:
                assert s.scalar(select(func.count()).select_from(Case)) == cases
                assert verify(s).ok
                assert rollup.check(s) == (0, [])

        check(40)
        # the next load's ids collide with the first cases': its COPY fails over there
        monkeypatch.setattr(
            gen.SinkProcess, "next_ids", lambda self: {m.__tablename__: 1 for m in gen.SERIAL}
        )
        with pytest.raises(RuntimeError, match="sink's process failed: .*UniqueViolation"):
            gen.make_pool(db.engine, registry, 25, now)
        assert len(started) == 2 and not started[1].proc.is_alive()
        check(40)
        # a process that is gone is found gone, not waited for
        real_head = gen.SinkProcess.head

        def head(self: gen.SinkProcess) -> tuple[int, str]:
            self.proc.kill()
            self.proc.join()
            return real_head(self)

        monkeypatch.setattr(gen.SinkProcess, "head", head)
        with pytest.raises(RuntimeError, match="sink's process ended"):
            gen.make_pool(db.engine, registry, 25, now)
        check(40)
