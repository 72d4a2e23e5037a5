"""Shared fixtures: databases (SQLite always, PostgreSQL when it answers), registry, actors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from workflow import audit, schema
from workflow.actors import Actor, actor_from_user
from workflow.db import make_engine, make_session_factory
from workflow.model import Agency, AgencyUnit, Base, User
from workflow.registry import Registry
from workflow.service import CaseService
from workflow.storage import MemoryBlobStore

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "definitions"
PG_URL = os.environ.get(
    "REHABFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
COMMUNE = "17662"  # Xã Đô Lương, Nghệ An
PROVINCE = "40"
OTHER_COMMUNE = "17677"  # another commune of Nghệ An
# the audit lanes of the PostgreSQL test databases (migration 0010 makes 8 by default)
PG_LANES = int(os.environ.get("REHABFLOW_TEST_AUDIT_LANES", "4"))


def _pg_available() -> bool:
    if os.environ.get("REHABFLOW_TEST_SKIP_PG") == "1":
        return False
    try:
        engine = make_engine(PG_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


PG_AVAILABLE = _pg_available()
if os.environ.get("REHABFLOW_REQUIRE_PG") == "1" and not PG_AVAILABLE:
    raise RuntimeError("REHABFLOW_REQUIRE_PG=1 but PostgreSQL does not answer at " + PG_URL)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.from_directory(DEFINITIONS)


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    """A private schema per test run, so concurrent runs on one database do not collide."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    name = f"rftest_{os.getpid()}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {name}"))
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={name}"})
    schema.upgrade(engine)
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    admin.dispose()


def _truncate_pg(engine: Engine) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text(f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{'0' * 64}')"))
    if PG_LANES > 1:  # as migration 0010 leaves a new PostgreSQL database
        with make_session_factory(engine)() as session:
            audit.set_lanes(session, PG_LANES)
            session.commit()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: SQLite file, then PostgreSQL when it answers."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        schema.upgrade(eng)
        yield eng
        eng.dispose()
    else:
        eng = request.getfixturevalue("pg_engine")
        _truncate_pg(eng)
        yield eng


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    schema.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine):  # noqa: ANN201
    return make_session_factory(engine)


@pytest.fixture
def service(session_factory, registry: Registry) -> CaseService:  # noqa: ANN001
    return CaseService(session_factory, registry, secret_key="test-secret", blobs=MemoryBlobStore())


_ids = count(1)


class Actors:
    """Creates agencies and users on demand: ``actors.get('commune_police', 'head')``."""

    def __init__(self, session_factory) -> None:  # noqa: ANN001
        self.session_factory = session_factory
        self._cache: dict[tuple[str, str, str], Actor] = {}

    def get(self, agency_type: str, role: str, unit: str = COMMUNE) -> Actor:
        key = (agency_type, role, unit)
        if key not in self._cache:
            n = next(_ids)
            with self.session_factory() as s:
                agency = Agency(
                    code=f"{agency_type}-{unit}-{n}", type=agency_type, name=f"{agency_type} {unit}"
                )
                agency.units.append(AgencyUnit(unit_code=unit))
                s.add(agency)
                s.flush()
                user = User(
                    username=f"{agency_type}.{role}.{unit}.{n}",
                    full_name="Cán bộ",
                    agency_id=agency.id,
                    role=role,
                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
                s.add(user)
                s.commit()
                s.refresh(user)
                self._cache[key] = actor_from_user(user)
        return self._cache[key]


@pytest.fixture
def actors(session_factory) -> Actors:  # noqa: ANN001
    return Actors(session_factory)
