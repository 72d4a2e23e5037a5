"""Fixtures for the HTTP API tests: an app on SQLite and on PostgreSQL, a fixed clock, users
with tokens, and small helpers to send authenticated requests and to check problem details.

PostgreSQL: one private schema per test session (``rfapi_<pid>``), selected through the
``options=-csearch_path=...`` parameter of ``DATABASE_URL`` (checked, not assumed: the fixture
verifies that the app's own engine lands in that schema), truncated before each test and dropped
at the end. SQLite: a database migrated once by ``create_app`` (``INIT_DB``) and copied per test.
"""

from __future__ import annotations

import io
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from werkzeug.test import TestResponse

import api.app as api_app
from api import create_app
from workflow.actors import Actor
from workflow.bootstrap import bootstrap
from workflow.calendar import business_date
from workflow.db import make_engine
from workflow.definition import Action, Definition
from workflow.model import Base
from workflow.registry import Registry
from workflow.simulate import fake_pdf, fill_form

from ..conftest import COMMUNE, PG_AVAILABLE, PG_URL, PROVINCE

# 09:00 in Vietnam on Monday 2 June 2025 (a working day under drug_rehab v1).
FIXED_NOW = datetime(2025, 6, 2, 2, 0, tzinfo=UTC)
# tests.conftest.OTHER_COMMUNE ("17674") is not a unit of vietnam-provinces, so
# Accounts.create_user refuses it; 17677 is a real commune of the same province (Nghệ An, 40).
OTHER_COMMUNE = "17677"
OTHER_PROVINCE = "01"  # Hà Nội
PROBLEM = "application/problem+json"
PDF = "application/pdf"
DB_PARAMS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


# ----------------------------------------------------------------------------- clock
class Clock:
    """The app's injected clock (``REHABFLOW_CLOCK``); tests may move it."""

    def __init__(self, now: datetime = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    @property
    def today(self) -> date:
        return business_date(self.now)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# ----------------------------------------------------------------------------- databases
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Path:
    """A database migrated by create_app itself (INIT_DB default), copied for every test."""
    data = tmp_path_factory.mktemp("rfapi-template")
    with mock.patch.object(api_app, "bootstrap", partial(bootstrap, registry=registry)):
        app = create_app({"REHABFLOW_ENV": {"REHABFLOW_DATA_DIR": str(data)}})
    app.extensions["rehabflow"].engine.dispose()
    path = data / "rehabflow.db"
    assert path.exists()
    return path


def truncate_all(url: str) -> None:
    engine = make_engine(url)
    try:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            conn.execute(
                text(f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{'0' * 64}')")
            )
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def api_pg_url(registry: Registry) -> Iterator[str]:
    """DATABASE_URL of a private, migrated schema ``rfapi_<pid>`` (dropped at the end)."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    name = f"rfapi_{os.getpid()}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {name}"))
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{name}"
    try:
        with mock.patch.object(api_app, "bootstrap", partial(bootstrap, registry=registry)):
            app = create_app({"REHABFLOW_ENV": {"DATABASE_URL": url, "REHABFLOW_DATA_DIR": "."}})
        engine = app.extensions["rehabflow"].engine
        with engine.connect() as conn:
            # the search_path really applies to the app's engine ...
            assert conn.execute(text("select current_schema()")).scalar() == name
        engine.dispose()
        with admin.connect() as conn:
            # ... and the migration created the tables there, not in public
            tables = set(
                conn.execute(
                    text("select table_name from information_schema.tables where table_schema=:s"),
                    {"s": name},
                ).scalars()
            )
        assert {"cases", "audit_events", "documents", "api_tokens"} <= tables, tables
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


def build_app(
    kind: str,
    data_dir: Path,
    registry: Registry,
    clock: Callable[[], datetime],
    *,
    sqlite_template: Path | None = None,
    pg_url: str | None = None,
    **config: Any,
) -> Flask:
    """An app on an empty, migrated database of ``kind``. The parsed definitions are shared
    between apps (parsing the YAML costs ~0.5 s per app); everything else is per app."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {"REHABFLOW_DATA_DIR": str(data_dir), "REHABFLOW_SECRET_KEY": "api-test-secret"}
    if kind == "sqlite":
        assert sqlite_template is not None
        shutil.copyfile(sqlite_template, data_dir / "rehabflow.db")
    else:
        assert pg_url is not None
        env["DATABASE_URL"] = pg_url
    settings = {
        "REHABFLOW_ENV": env,
        "REHABFLOW_CLOCK": clock,
        "INIT_DB": False,
        "TESTING": True,
    }
    with mock.patch.object(api_app, "bootstrap", partial(bootstrap, registry=registry)):
        return create_app(settings | config)


@pytest.fixture(params=DB_PARAMS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_app(
    db_kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    registry: Registry,
    clock: Clock,
) -> Iterator[Callable[..., Flask]]:
    """``make_app(**flask_config)``: an app on an empty database (PostgreSQL: the test's
    schema, emptied once per test and shared by the apps of the test; SQLite: a database of
    its own per app)."""
    kw: dict[str, Any] = {}
    if db_kind == "sqlite":
        kw["sqlite_template"] = request.getfixturevalue("sqlite_template")
    else:
        kw["pg_url"] = request.getfixturevalue("api_pg_url")
        truncate_all(kw["pg_url"])
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = build_app(db_kind, tmp_path / f"data{len(apps)}", registry, clock, **kw, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["rehabflow"].engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def users(app: Flask) -> ApiUsers:
    return ApiUsers(app)


# ----------------------------------------------------------------------------- users and calls
@dataclass
class Caller:
    """A user with a bearer token, and its own test client."""

    app: Flask
    username: str
    token: str
    user_id: int
    agency_type: str
    role: str
    unit: str
    is_admin: bool = False
    client: FlaskClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = self.app.test_client()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> TestResponse:
        return self.client.open(path, method=method, headers=self.auth | (headers or {}), **kw)

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.request("POST", path, json=json, **kw)

    def upload(
        self,
        case_id: int,
        doc_type: str | None,
        content: bytes | None,
        *,
        filename: str = "scan.pdf",
        claimed: str = PDF,
        note: str | None = None,
        **kw: Any,
    ) -> TestResponse:
        data: dict[str, Any] = {}
        if doc_type is not None:
            data["type"] = doc_type
        if note is not None:
            data["note"] = note
        if content is not None:
            data["file"] = (io.BytesIO(content), filename, claimed)
        return self.request(
            "POST",
            f"/api/v1/cases/{case_id}/documents",
            data=data,
            content_type="multipart/form-data",
            **kw,
        )

    def fire(self, case_id: int, key: str, data: dict | None = None, **kw: Any) -> TestResponse:
        return self.post(f"/api/v1/cases/{case_id}/transitions/{key}", {"data": data or {}}, **kw)

    def activity(self, case_id: int, key: str, data: dict | None = None, **kw: Any) -> TestResponse:
        return self.post(f"/api/v1/cases/{case_id}/activities/{key}", {"data": data or {}}, **kw)


class ApiUsers:
    """``users.get(agency_type, role)``: a user (and token) of that agency, made once.

    The unit defaults to the commune (``COMMUNE``) for commune- and district-level agencies
    and to its province for province-level ones (they see the province's cases)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.accounts = app.extensions["rehabflow.accounts"]
        self.registry: Registry = app.extensions["rehabflow"].registry
        self._cache: dict[tuple[str, str, str, bool], Caller] = {}

    def default_unit(self, agency_type: str) -> str:
        for d in self.registry.all():
            agency = d.agency_types.get(agency_type)
            if agency is not None and agency.level == "province":
                return PROVINCE
        return COMMUNE

    def get(
        self, agency_type: str, role: str, unit: str | None = None, *, admin: bool = False
    ) -> Caller:
        unit = unit or self.default_unit(agency_type)
        key = (agency_type, role, unit, admin)
        if key not in self._cache:
            name = f"{agency_type}.{role}.{unit}{'.admin' if admin else ''}"
            now = datetime.now(UTC)  # tokens expire in real time, not on the test clock
            user = self.accounts.create_user(name, agency_type, role, unit, now, is_admin=admin)
            token = self.accounts.create_token(name, now).token
            self._cache[key] = Caller(
                self.app, name, token, user.id, agency_type, role, unit, is_admin=admin
            )
        return self._cache[key]

    def officer(self, unit: str = COMMUNE) -> Caller:
        return self.get("commune_police", "officer", unit)

    def admin(self) -> Caller:
        return self.get("commune_pc", "head", COMMUNE, admin=True)

    def actor(self, caller: Caller) -> Actor:
        who = self.accounts.authenticate_token(caller.token, datetime.now(UTC))
        assert who is not None
        return who


# ----------------------------------------------------------------------------- assertions
def assert_problem(resp: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem of ``status`` (and type ``.../<code>``); returns its body."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:2000])
    assert resp.mimetype == PROBLEM, (resp.mimetype, resp.get_data(as_text=True)[:500])
    body = resp.get_json()
    assert isinstance(body, dict)
    for key in ("type", "title", "status", "detail"):
        assert key in body, (key, body)
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["type"].rsplit("/", 1)[-1] == code, body
    return body


def error_fields(errors: Any, prefix: str = "") -> set[str]:
    """Field names of a problem's ``errors`` (nested schemas give ``subject.full_name``)."""
    out: set[str] = set()
    if isinstance(errors, dict):
        for name, value in errors.items():
            path = f"{prefix}{name}"
            if isinstance(value, dict):
                out |= error_fields(value, path + ".")
            else:
                out.add(path)
    return out


def count_rows(app: Flask, *models: Any) -> dict[str, int]:
    """Row counts through the service's own session factory."""
    factory = app.extensions["rehabflow"].session_factory
    with factory() as s:
        return {
            m.__tablename__: s.execute(select(func.count()).select_from(m)).scalar() for m in models
        }


# ----------------------------------------------------------------------------- data
SUBJECT = {
    "full_name": "Trần Văn Bình",
    "unit_code": COMMUNE,
    "date_of_birth": "1990-05-14",
    "sex": "male",
    "national_id": "040094001234",
}


def definition(app: Flask, key: str = "drug_rehab", version: int = 1) -> Definition:
    return app.extensions["rehabflow"].registry.get(key, version)


def form_for(d: Definition, action: Action, today: date, seed: int = 0) -> dict[str, Any]:
    """Valid form data (workflow.simulate.fill_form) dated ``today``."""
    data = fill_form(d, action, today, random.Random(seed), COMMUNE)
    return {k: v for k, v in data.items() if v is not None}


def doc_bytes(code: str) -> bytes:
    """The same bytes for every document of a type (stored once: content-addressed)."""
    return fake_pdf(f"rfapi-{code}")


def open_case(caller: Caller, **subject: Any) -> int:
    # the API tests describe drug_rehab@1 (FIXED_NOW falls under v2, so the version is named)
    resp = caller.post("/api/v1/cases", {"subject": SUBJECT | subject, "version": 1})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["case_id"]


def attach_required(caller: Caller, case_id: int, action: Action) -> None:
    for req in action.documents:
        r = caller.upload(case_id, req.any_of[0], doc_bytes(req.any_of[0]))
        assert r.status_code == 201, r.get_json()


def fire_valid(
    caller: Caller, case_id: int, action: Action, today: date, *, tries: int = 30, **kw: Any
) -> TestResponse:
    """POST the transition with random valid forms until no guard refuses (or tries run out)."""
    d = definition(caller.app)
    resp = caller.fire(case_id, action.key, form_for(d, action, today, 0), **kw)
    for seed in range(1, tries):
        if resp.status_code != 422 or not (resp.get_json() or {}).get("unmet_guards"):
            break
        resp = caller.fire(case_id, action.key, form_for(d, action, today, seed), **kw)
    return resp
