"""Statements through libpq's prepared-statement calls (``workflow.prepared``): the same
values as a psycopg cursor gives, the same errors, on a connection in autocommit."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import JSON, DateTime

from workflow import prepared
from workflow.uow import UnitOfWork, _fetch_one

from ..conftest import PG_AVAILABLE, PG_URL


def test_placeholders_become_numbered_and_a_name_used_twice_is_one_number() -> None:
    n = prepared.numbered("SELECT %(a)s, %(b)s::int, %(a)s || '%%' FROM t WHERE x LIKE 'y%%'")
    assert n.sql == b"SELECT $1, $2::int, $1 || '%' FROM t WHERE x LIKE 'y%'"
    assert n.names == ("a", "b")
    assert prepared.numbered("SELECT 1").names == ()


@pytest.fixture
def raw() -> Iterator[psycopg.Connection]:
    """A connection in autocommit, with the JSON adaptation the dialect sets up (orjson)."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    from workflow.db import make_engine

    engine = make_engine(PG_URL)
    pooled = engine.raw_connection()
    connection = pooled.driver_connection
    connection.autocommit = True
    yield connection
    connection.autocommit = False
    pooled.close()
    engine.dispose()


def _ours(raw: psycopg.Connection) -> list[str]:
    with raw.cursor() as cur:
        cur.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE '\\_rf\\_%%'")
        return sorted(r[0] for r in cur.fetchall())


def test_values_go_and_come_as_through_a_cursor(raw: psycopg.Connection) -> None:
    """Every kind of value a command sends (text, integers small and large, None, arrays,
    JSON, timestamps) is read back as a cursor reads it, row by row."""
    sql = (
        "SELECT %(t)s::text, %(i)s::bigint, %(big)s::bigint, %(none)s::timestamptz,"
        " %(ids)s::bigint[], %(doc)s::jsonb, %(at)s::timestamptz, %(on)s::date,"
        " %(t)s || '%%', %(big)s::bigint - %(i)s::bigint"
    )
    at = datetime(2026, 7, 1, 1, 2, 3, 456789, tzinfo=UTC)
    values = {
        "t": "Nguyễn Văn A",
        "i": 7,
        "big": 2**40,
        "none": None,
        "ids": [3, 1, 2],
        "doc": Jsonb({"a": [1, "ư"], "b": None}),
        "at": at,
        "on": date(2026, 7, 1),
    }
    expected = raw.cursor().execute(sql, values).fetchone()
    assert prepared.fetch(raw, sql, values, first=True) == expected
    assert expected == (
        *("Nguyễn Văn A", 7, 2**40, None, [3, 1, 2], {"a": [1, "ư"], "b": None}),
        *(at, date(2026, 7, 1), "Nguyễn Văn A%", 2**40 - 7),
    )
    rows = "SELECT g, g * %(k)s::int FROM generate_series(1, %(n)s::int) g"
    assert prepared.fetch(raw, rows, {"k": 10, "n": 3}, first=False) == [(1, 10), (2, 20), (3, 30)]
    assert prepared.fetch(raw, rows, {"k": 10, "n": 0}, first=True) is None
    assert prepared.fetch(raw, rows, {"k": 10, "n": 0}, first=False) == []
    # prepared once per connection and parameter types; used again after that
    assert len(_ours(raw)) == 2
    prepared.fetch(raw, rows, {"k": 1, "n": 1}, first=True)
    assert len(_ours(raw)) == 2


def test_a_failed_statement_raises_the_cursors_error_and_leaves_the_connection_usable(
    raw: psycopg.Connection,
) -> None:
    raw.execute("CREATE TEMPORARY TABLE rf_once (k int PRIMARY KEY)")
    insert = "INSERT INTO rf_once VALUES (%(k)s::int) RETURNING k"
    assert prepared.fetch(raw, insert, {"k": 1}, first=True) == (1,)
    with pytest.raises(psycopg.errors.UniqueViolation) as raised:
        prepared.fetch(raw, insert, {"k": 1}, first=True)
    assert raised.value.sqlstate == "23505" and raised.value.diag.table_name == "rf_once"
    with pytest.raises(psycopg.errors.DivisionByZero):
        prepared.fetch(raw, "SELECT 1 / %(x)s::int", {"x": 0}, first=True)
    with pytest.raises(psycopg.errors.SyntaxError):  # a statement that cannot be prepared
        prepared.fetch(raw, "SELEC %(x)s", {"x": 0}, first=True)
    # each failure ended its own transaction: the connection goes on
    assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert prepared.fetch(raw, insert, {"k": 2}, first=True) == (2,)
    assert raw.execute("SELECT count(*) FROM rf_once").fetchone() == (2,)


def test_a_statement_the_server_forgot_is_prepared_again(raw: psycopg.Connection) -> None:
    one, two = "SELECT %(x)s::int + 1", "SELECT %(x)s::int + 2"
    assert prepared.fetch(raw, one, {"x": 1}, first=True) == (2,)
    assert prepared.fetch(raw, two, {"x": 1}, first=True) == (3,)
    first, second = _ours(raw)
    raw.execute(f"DEALLOCATE {first}")
    assert prepared.fetch(raw, one, {"x": 2}, first=True) == (3,)
    assert prepared.fetch(raw, two, {"x": 2}, first=True) == (4,)
    assert len(_ours(raw)) == 2 and second in _ours(raw)  # the other one kept
    raw.execute("DEALLOCATE ALL")
    assert _ours(raw) == []
    assert prepared.fetch(raw, one, {"x": 3}, first=True) == (4,)
    assert prepared.fetch(raw, two, {"x": 3}, first=True) == (5,)
    assert len(_ours(raw)) == 2


def test_the_statements_kept_per_connection_are_bounded(
    raw: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepared, "MAX_PREPARED", 2)
    for n in range(5):
        assert prepared.fetch(raw, f"SELECT %(x)s::int + {n}", {"x": 1}, first=True) == (1 + n,)
        assert len(_ours(raw)) == min(n + 1, 2)
    # the newest two are kept, and still answer
    assert prepared.fetch(raw, "SELECT %(x)s::int + 4", {"x": 0}, first=True) == (4,)
    assert len(_ours(raw)) == 2


def test_the_connection_waits_for_the_server_without_holding_the_gil(
    raw: psycopg.Connection,
) -> None:
    """Another thread runs while a statement waits on the server (gunicorn's threads, the
    test server's): libpq's call releases the GIL."""
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        time.sleep(0.05)
        before = ticks
        prepared.fetch(raw, "SELECT pg_sleep(%(s)s::float8)", {"s": 0.3}, first=True)
        during = ticks - before
    finally:
        stop.set()
        thread.join()
    assert during >= 20, during  # ~300 ticks when it runs freely; none if the GIL were held


def test_a_connection_and_its_prepared_state_go_once_the_connection_is_dropped() -> None:
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    raw = psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True)
    assert prepared.fetch(raw, "SELECT %(x)s::int", {"x": 5}, first=True) == (5,)
    gone = weakref.ref(raw)
    raw.close()
    del raw
    gc.collect()
    assert gone() is None


def test_a_connection_the_server_ended_is_dropped_by_the_unit_of_work(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """The statement fails as a lost connection does (``DBAPIError``, marked invalidated),
    the pool drops the connection, and the next unit gets a working one."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's connections")
    one = text("SELECT CAST(:x AS integer) + 1")
    with UnitOfWork(session_factory, autocommit=True) as uow:
        driver = uow.driver()
        assert _fetch_one(driver, one, {"x": 1}) == (2,)
        pid = driver.raw.info.backend_pid
        with engine.connect() as other:
            other.execute(text(f"SELECT pg_terminate_backend({pid})"))
        with pytest.raises(DBAPIError) as raised:
            _fetch_one(driver, one, {"x": 1})
        assert raised.value.connection_invalidated
        assert isinstance(raised.value.orig, psycopg.OperationalError)
    assert engine.pool.checkedout() == 0
    with UnitOfWork(session_factory, autocommit=True) as uow:
        driver = uow.driver()
        assert driver.raw.info.backend_pid != pid
        assert _fetch_one(driver, one, {"x": 41}) == (42,)


def test_a_unit_of_work_reads_typed_values_as_sqlalchemy_would(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """Through the unit of work (bind processors of the statement's types applied first),
    a JSON value and a timestamp come back as SQLAlchemy's own execution gives them."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's connections")
    stmt = text("SELECT CAST(:doc AS jsonb), CAST(:at AS timestamptz)").bindparams(
        bindparam("doc", type_=JSON), bindparam("at", type_=DateTime(timezone=True))
    )
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    params = {"doc": {"k": ["v", 1]}, "at": at}
    with UnitOfWork(session_factory, autocommit=True) as uow:
        row = _fetch_one(uow.driver(), stmt, params)
    with engine.connect() as conn:
        expected = tuple(conn.execute(stmt, params).one())
    assert row == expected == ({"k": ["v", 1]}, at)
