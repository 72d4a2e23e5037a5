"""Fixtures of the page tests: an app (tests/api/conftest.py), users with passwords, a
browser-like client that keeps its session cookie and sends the CSRF token."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import workflow.accounts
from workflow.actors import Actor
from workflow.service import CaseService, CommandResult, SubjectData
from workflow.simulate import fake_pdf
from workflow.worklist import Worklist

from ...conftest import COMMUNE, PROVINCE
from ..conftest import OTHER_COMMUNE

PASSWORD = "mật-khẩu-đủ-dài-2026"
PDF = "application/pdf"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with the smallest cost: the hashes still verify, in milliseconds (the real
    parameters cost a good part of a second per hash on a busy CI machine)."""
    monkeypatch.setattr(
        workflow.accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


class Browser:
    """A test client used like a browser: cookies kept, forms posted with the CSRF token."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.client.get(path, **kw)

    def csrf(self) -> str:
        with self.client.session_transaction() as s:
            token = s.get("csrf")
        if token is None:
            page = self.get("/login").get_data(as_text=True)
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        return token

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> TestResponse:
        body = {"csrf_token": self.csrf(), **(data or {})}
        return self.client.post(path, data=body, **kw)

    def upload(
        self, case_id: int, doc_type: str, content: bytes, form: str = "documents", **extra: Any
    ) -> TestResponse:
        data = {"type": doc_type, "form": form, "file": (io.BytesIO(content), "scan.pdf"), **extra}
        return self.post(f"/cases/{case_id}/documents", data, content_type="multipart/form-data")

    def login(self, username: str, password: str = PASSWORD) -> TestResponse:
        resp = self.post("/login", {"username": username, "password": password})
        assert resp.status_code == 303, resp.get_data(as_text=True)[:2000]
        return resp

    def logout(self) -> TestResponse:
        return self.post("/logout")


def text(resp: TestResponse) -> str:
    """The page's text with tags removed and spaces collapsed (what a reader sees)."""
    html = resp.get_data(as_text=True)
    html = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&amp;", "&").split())


@dataclass
class Person:
    username: str
    user_id: int
    actor: Actor
    browser: Browser

    def login(self) -> Browser:
        self.browser.login(self.username)
        return self.browser


class People:
    """``people.get(agency_type, role)``: a user with a password (made once) and a browser."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.accounts = app.extensions["rehabflow.accounts"]
        self.worklist = Worklist(app.extensions["rehabflow"].cases)
        self._made: dict[tuple, Person] = {}

    def get(
        self, agency_type: str, role: str, unit: str = COMMUNE, *, admin: bool = False
    ) -> Person:
        key = (agency_type, role, unit, admin)
        if key not in self._made:
            name = f"{agency_type}.{role}.{unit}{'.admin' if admin else ''}"
            user = self.accounts.create_user(
                name,
                agency_type,
                role,
                unit,
                datetime.now(UTC),
                password=PASSWORD,
                full_name=f"Cán bộ {role}",
                is_admin=admin,
            )
            actor = self.worklist.web_user(user.id).actor
            self._made[key] = Person(name, user.id, actor, Browser(self.app))
        return self._made[key]

    def officer(self, unit: str = COMMUNE) -> Person:
        return self.get("commune_police", "officer", unit)

    def admin(self) -> Person:
        return self.get("commune_pc", "head", COMMUNE, admin=True)


@pytest.fixture
def people(app: Flask) -> People:
    return People(app)


@pytest.fixture
def service(app: Flask) -> CaseService:
    return app.extensions["rehabflow"].cases


@pytest.fixture
def open_case(app: Flask, people: People, clock: Any) -> Callable[..., CommandResult]:
    """Open a case in the demo commune (or ``unit``) as its commune police officer."""

    def make(
        unit: str = COMMUNE, name: str = "Trần Văn Bình", born: date = date(1990, 5, 14), **kw: Any
    ) -> CommandResult:
        svc: CaseService = app.extensions["rehabflow"].cases
        return svc.open_case(
            SubjectData(
                full_name=name,
                unit_code=unit,
                date_of_birth=born,
                sex="male",
                national_id="040094001234",
            ),
            people.officer(unit).actor,
            clock(),
            **kw,
        )

    return make


def attach(app: Flask, case_id: int, code: str, actor: Actor, now: datetime) -> None:
    app.extensions["rehabflow"].cases.attach_document(
        case_id, code, fake_pdf(f"web-{case_id}-{code}"), actor, now,
        filename=f"{code}.pdf", media_type=PDF,
    )  # fmt: skip


__all__ = ["COMMUNE", "OTHER_COMMUNE", "PROVINCE", "Browser", "People", "text"]


def request_determination(app: Flask, case_id: int, actor: Actor, now: datetime) -> None:
    """Attach the request and fire request_determination (detected -> addiction
    determination, which reaches the province's health facility) through the service."""
    attach(app, case_id, "determination_request", actor, now)
    app.extensions["rehabflow"].cases.advance(
        case_id,
        "request_determination",
        {"request_date": now.date().isoformat(), "reason": "own_request"},
        actor,
        now,
    )


def to_addicted(app: Flask, case_id: int, actor: Actor, now: datetime) -> None:
    """detected -> addiction determination -> addicted, as the commune police officer."""
    request_determination(app, case_id, actor, now)
    attach(app, case_id, "addiction_result", actor, now)
    app.extensions["rehabflow"].cases.advance(
        case_id, "record_addiction_result", {"result_date": now.date().isoformat()}, actor, now
    )
