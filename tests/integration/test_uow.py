"""The unit of work (``workflow.uow``): one transaction, or on PostgreSQL one connection in
autocommit whose session is made only when something needs it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from workflow import rollup
from workflow.model import AccessLog
from workflow.uow import UnitOfWork

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def checkins(engine: Engine) -> Iterator[list[bool]]:
    """Whether each connection given back to the pool is still in psycopg's autocommit."""
    seen: list[bool] = []

    def checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and isinstance(dbapi_connection, psycopg.Connection):
            seen.append(dbapi_connection.autocommit)

    event.listen(engine, "checkin", checkin)
    yield seen
    event.remove(engine, "checkin", checkin)


def _log_row(session: Session) -> None:
    session.add(AccessLog(at=NOW, user_id=1, case_id=1, action="test.uow"))
    session.flush()


def _logged(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(AccessLog).where(AccessLog.action == "test.uow")
        ).scalar_one()


def test_an_autocommit_unit_makes_its_session_on_its_own_connection(
    engine: Engine, session_factory: sessionmaker[Session], checkins: list[bool]
) -> None:
    """PostgreSQL: an autocommit unit holds one connection from its start; a statement sent
    straight to the driver makes no session, and the session made later runs on that same
    connection (one backend, one connection back to the pool, out of autocommit again),
    each of its statements committed as it runs."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no autocommit units")
    with UnitOfWork(session_factory, autocommit=True) as uow:
        pid = uow.driver().raw.info.backend_pid
        assert not uow.has_session
        assert uow.session.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
        _log_row(uow.session)
        assert _logged(engine) == 1  # seen from another connection: committed already
        assert checkins == [False]  # that connection's
    assert checkins == [False, False]  # and the unit's one, out of autocommit


def test_a_unit_that_does_not_commit_writes_nothing(
    engine: Engine, session_factory: sessionmaker[Session], checkins: list[bool]
) -> None:
    """A transactional unit left without ``commit`` rolls its writes back, on both databases
    (and on PostgreSQL its connection goes back as it came)."""
    with UnitOfWork(session_factory) as uow:
        _log_row(uow.session)
    assert _logged(engine) == 0
    with UnitOfWork(session_factory) as uow:
        _log_row(uow.session)
        uow.commit()
    assert _logged(engine) == 1
    assert not any(checkins)


def test_counters_collected_before_the_session_are_its_own(
    session_factory: sessionmaker[Session],
) -> None:
    """The report counters a command collects before its unit makes a session (an optimistic
    command never makes one) are the ones the session writes if it is made later."""
    with UnitOfWork(session_factory, optimistic=True) as uow:
        rollup.pending(uow).deadline(NOW.date(), "k", "open", False, ("00001", "01"))
        before = rollup.pending(uow)
        assert rollup.pending(uow.session) is before
        assert rollup.pending(uow) is before


def test_an_autocommit_unit_whose_connection_broke_gives_it_up(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """PostgreSQL: a unit whose connection the server ended drops it: the next unit gets a
    working connection from the pool, in transactional mode."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's connections")
    with UnitOfWork(session_factory, autocommit=True) as uow:
        pid = uow.driver().raw.info.backend_pid
        with engine.connect() as other:
            other.execute(text(f"SELECT pg_terminate_backend({pid})"))
        with pytest.raises(psycopg.OperationalError):
            uow.driver().raw.execute("SELECT 1")
    with UnitOfWork(session_factory) as uow:
        raw = uow.session.connection().connection.driver_connection
        assert raw.info.backend_pid != pid and not raw.autocommit
        assert uow.session.execute(text("SELECT 1")).scalar_one() == 1


def test_a_unit_that_made_no_session_commits_without_one_unless_counters_wait(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """``commit`` of a unit that made no session (the case page's: its statements went
    straight to the driver) makes none; report counters collected without a session are
    written by the one ``commit`` makes for them."""
    with UnitOfWork(session_factory, autocommit=True) as uow:
        uow.commit()
        assert not uow.has_session
    with UnitOfWork(session_factory) as uow:
        rollup.pending(uow).deadline(NOW.date(), "k", "open", False, ("00001", "01"))
        uow.commit()
        assert uow.has_session
    with engine.connect() as conn:  # PostgreSQL's commands write deltas (rollup.fold)
        source = rollup.deadlines_source()
        rows = conn.execute(select(source.c.n)).scalars().all()
    assert rows == [1, 1]  # the commune's row and the province's


def test_a_connection_broken_before_the_unit_starts_is_dropped(
    engine: Engine, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a pooled connection that cannot be put in autocommit (here: closed under
    the pool) fails the unit as SQLAlchemy fails a connect (``DBAPIError``), goes back to no
    one, and the next unit works."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's connections")
    real = engine.raw_connection

    def broken() -> Any:
        pooled = real()
        pooled.driver_connection.close()
        return pooled

    monkeypatch.setattr(engine, "raw_connection", broken)
    with pytest.raises(DBAPIError), UnitOfWork(session_factory, autocommit=True):
        pass
    monkeypatch.undo()
    assert engine.pool.checkedout() == 0
    with UnitOfWork(session_factory, autocommit=True) as uow:
        assert uow.driver().raw.execute("SELECT 1").fetchone() == (1,)


def test_a_case_read_outside_the_orm_has_the_loaded_cases_every_value(
    engine: Engine, session_factory: sessionmaker[Session], drive: Any
) -> None:
    """PostgreSQL: ``read_case`` gives a plain row object (no session, no instrumentation)
    with the same values, case and subject, as the ORM loads; writing to it writes nothing."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads its cases through the ORM")
    from sqlalchemy import bindparam

    from workflow.model import Case, Subject
    from workflow.uow import CASE_COLUMNS, CaseRow

    read = (
        select(*CASE_COLUMNS)
        .join_from(Case.__table__, Subject.__table__)
        .where(Case.__table__.c.id == bindparam("case_id"))
    )
    cid = drive.open(NOW.date()).case_id
    with UnitOfWork(session_factory, optimistic=True) as uow:
        row, rest = uow.read_case(read, {"case_id": cid})
        assert isinstance(row, CaseRow) and rest == ()
        row.state = "elsewhere"  # changes nothing
    with session_factory() as s:
        case = s.get(Case, cid)
        for column in Case.__table__.c:
            key = Case.__mapper__.get_property_by_column(column).key
            assert getattr(row, key) == getattr(case, key) or key == "state", key
        for column in Subject.__table__.c:
            key = Subject.__mapper__.get_property_by_column(column).key
            assert getattr(row.subject, key) == getattr(case.subject, key), key
        assert case.state != "elsewhere"
    assert isinstance(row.opened_at, datetime) and row.opened_at.tzinfo is not None


def test_statements_past_sqlalchemy_share_a_cursor_that_survives_a_failed_one(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """PostgreSQL: the statements sent straight to the driver inside a transaction go through
    one cursor per connection; a statement that fails leaves it usable once the transaction
    is rolled back, and each statement gives its own rows. (In autocommit they go through
    libpq's prepared-statement calls: ``test_prepared.py``.)"""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite sends nothing past SQLAlchemy")
    from workflow.uow import Driver, _cursor, _fetch_one, fetch_all

    one = text("SELECT CAST(:x AS integer) + 1")
    with engine.connect() as conn:
        driver = Driver.of(conn)
        assert _fetch_one(driver, one, {"x": 1}) == (2,)
        assert not driver.raw.autocommit
        cursor = _cursor(driver.raw)
        with pytest.raises(DBAPIError):
            _fetch_one(driver, text("SELECT 1 / CAST(:x AS integer)"), {"x": 0})
        driver.raw.rollback()  # (SQLAlchemy began nothing: the statements went past it)
        assert _fetch_one(driver, one, {"x": 41}) == (42,)
        assert _cursor(driver.raw) is cursor
        rows = fetch_all(driver, select(func.generate_series(1, 3)), {})
        assert rows == [(1,), (2,), (3,)]
        assert _fetch_one(driver, one, {"x": 2}) == (3,)
        assert _cursor(driver.raw) is cursor
    with UnitOfWork(session_factory, autocommit=True) as uow:
        assert uow.fetch_all(select(func.generate_series(1, 2)), {}) == [(1,), (2,)]


def test_a_connection_and_its_cursor_go_once_the_connection_is_dropped(
    engine: Engine,
) -> None:
    """PostgreSQL: the cursor kept for a connection's driver statements does not keep the
    connection alive once nothing else holds it (a closed, dropped connection is freed)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite sends nothing past SQLAlchemy")
    import gc
    import weakref

    from workflow.uow import _cursor

    raw = psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    assert _cursor(raw).execute("SELECT 1").fetchone() == (1,)
    assert _cursor(raw) is _cursor(raw)
    gone = weakref.ref(raw)
    raw.close()
    del raw
    gc.collect()
    assert gone() is None
