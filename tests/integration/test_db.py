"""``workflow.db``: pooled PostgreSQL connections are pinged only after they sat idle, and a
connection that died while idle is replaced without the caller seeing an error."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from workflow.db import make_engine

from ..conftest import PG_AVAILABLE, PG_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def pinged(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[int]]]:
    """An engine pinging after 0.3 s idle; the list of pings it sent."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    engine = make_engine(PG_URL, ping_after=0.3)
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection):  # noqa: ANN001, ANN202
        pings.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    yield engine, pings
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_used_moments_ago_is_not_pinged(pinged: tuple[Engine, list[int]]) -> None:
    engine, pings = pinged
    first = _backend_pid(engine)  # a new connection: not pinged either
    for _ in range(5):
        assert _backend_pid(engine) == first
    assert pings == []


def test_an_idle_connection_is_pinged_at_checkout(pinged: tuple[Engine, list[int]]) -> None:
    engine, pings = pinged
    first = _backend_pid(engine)
    time.sleep(0.4)
    assert _backend_pid(engine) == first  # the ping found it alive: same connection
    assert pings == [1]
    assert _backend_pid(engine) == first
    assert pings == [1]  # used again at once: no second ping


def test_a_connection_that_died_while_idle_is_replaced(pinged: tuple[Engine, list[int]]) -> None:
    engine, pings = pinged
    first = _backend_pid(engine)
    with make_engine(PG_URL).connect() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
    time.sleep(0.4)
    # the caller gets a working connection, not the error of the dead one
    assert _backend_pid(engine) != first
    assert pings == [1]


def test_pre_ping_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pool_pre_ping=True`` keeps SQLAlchemy's ping at every checkout (no idle rule)."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    engine = make_engine(PG_URL, pool_pre_ping=True)
    try:
        pings: list[int] = []
        real = engine.dialect.do_ping
        monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real(c))
        for _ in range(3):
            _backend_pid(engine)
        assert len(pings) == 2  # every checkout after the first connect
    finally:
        engine.dispose()
