"""Database engines and sessions (SQLite with WAL and foreign keys; PostgreSQL via psycopg 3).

On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` so that two writers are
serialised at the start instead of failing at commit; a read-only unit of work starts a plain
deferred ``BEGIN`` so readers never wait for writers (WAL).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from workflow import jsontext

read_only_transaction: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "read_only_transaction", default=False
)


@contextmanager
def read_only() -> Iterator[None]:
    """Sessions opened inside start a deferred transaction on SQLite (they never write)."""
    token = read_only_transaction.set(True)
    try:
        yield
    finally:
        read_only_transaction.reset(token)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if read_only_transaction.get() else "BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``; creates the SQLite file's folder when needed."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_setup(engine)
        return engine
    ping_after = kwargs.pop("ping_after", PING_AFTER_IDLE)
    # JSON values to and from psycopg through orjson (workflow.jsontext), the driver's own
    # statements included: the dialect sets them on every connection it makes
    kwargs.setdefault("json_serializer", jsontext.dumps_bytes)
    kwargs.setdefault("json_deserializer", jsontext.loads)
    engine = create_engine(url, **kwargs)
    if ping_after is not None and not kwargs.get("pool_pre_ping"):
        ping_idle_connections(engine, ping_after)
    return engine


# seconds a pooled PostgreSQL connection may sit unused and still be handed out without a ping
PING_AFTER_IDLE = 5.0


def ping_idle_connections(engine: Engine, after: float) -> None:
    """Ping a pooled connection at checkout only if it sat unused for ``after`` seconds or more.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one more round trip for every unit
    of work (a case page took two: the token check and the page). A connection used moments
    ago is as alive as a ping would show. One that died in the meantime (the server restarted
    within ``after`` seconds) fails its statement; SQLAlchemy then invalidates the pool, so
    the next checkout connects afresh. A failed ping discards the connection and the pool
    hands out another (SQLAlchemy's ``DisconnectionError`` protocol)."""

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < after:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as err:  # noqa: BLE001 - any failure means a dead connection
            raise exc.DisconnectionError(str(err)) from err
        if alive is False:
            raise exc.DisconnectionError("ping failed")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
