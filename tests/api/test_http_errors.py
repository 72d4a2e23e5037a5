"""HTTP plumbing: every error is RFC 9457 problem+json (never an HTML page), tokens, rate
limiting of failed authentications, security headers, health checks, OpenAPI and the docs page."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from flask import Flask
from flask.testing import FlaskClient

from .conftest import PROBLEM, SUBJECT, ApiUsers, assert_problem, error_fields, open_case

SECURITY_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy")
SECURITY_HEADERS += ("Referrer-Policy",)


def assert_security_headers(resp: object) -> None:
    headers = resp.headers  # type: ignore[attr-defined]
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("X-Frame-Options") in ("DENY", "SAMEORIGIN")
    assert "default-src" in headers.get("Content-Security-Policy", "")
    assert headers.get("Referrer-Policy")


# ----------------------------------------------------------------------------- malformed requests
def test_malformed_json_is_400(users: ApiUsers) -> None:
    officer = users.officer()
    r = officer.request(
        "POST", "/api/v1/cases", data=b'{"subject": {', content_type="application/json"
    )
    assert_problem(r, 400)
    case_id = open_case(officer)
    r = officer.request(
        "POST",
        f"/api/v1/cases/{case_id}/transitions/request_determination",
        data=b"\xff\xfe not json",
        content_type="application/json",
    )
    assert_problem(r, 400)


def test_wrong_content_type_is_415(users: ApiUsers) -> None:
    officer = users.officer()
    r = officer.request("POST", "/api/v1/cases", data={"subject": "x"})  # form-encoded
    body = assert_problem(r, 415)
    assert body["expected"] == "application/json"
    r = officer.request("POST", "/api/v1/cases", data="{}", content_type="text/plain")
    assert_problem(r, 415)
    case_id = open_case(officer)
    # documents want multipart, and JSON is refused there
    r = officer.post(f"/api/v1/cases/{case_id}/documents", {"type": "citizen_id_copy"})
    body = assert_problem(r, 415)
    assert body["expected"] == "multipart/form-data"


def test_unknown_json_fields_are_422_with_errors(users: ApiUsers) -> None:
    officer = users.officer()
    body = assert_problem(officer.post("/api/v1/cases", {"subject": SUBJECT, "colour": 1}), 422)
    assert "colour" in error_fields(body["errors"])
    r = officer.post("/api/v1/cases", {"subject": SUBJECT | {"nickname": "Bình"}})
    body = assert_problem(r, 422)
    assert any(f.endswith("nickname") for f in error_fields(body["errors"])), body
    case_id = open_case(officer)
    url = f"/api/v1/cases/{case_id}/transitions/request_determination"
    body = assert_problem(officer.post(url, {"data": {}, "extra": True}), 422)
    assert "extra" in error_fields(body["errors"])
    # unknown fields inside the form are named too (the engine's own form validation)
    form = {"request_date": "2025-06-02", "reason": "own_request", "shoe_size": 42}
    body = assert_problem(officer.post(url, {"data": form}), 422)
    assert "shoe_size" in error_fields(body["errors"])


def test_unknown_route_is_404_problem(client: FlaskClient, users: ApiUsers) -> None:
    officer = users.officer()
    for r in (officer.get("/api/v1/nothing-here"), client.get("/nothing-here")):
        assert_problem(r, 404)
        assert b"<html" not in r.data.lower()
    assert_problem(officer.get("/api/v1/cases/not-a-number"), 404)


def test_wrong_method_is_405_problem(users: ApiUsers) -> None:
    officer = users.officer()
    case_id = open_case(officer)
    r = officer.request("DELETE", f"/api/v1/cases/{case_id}")
    assert_problem(r, 405)
    assert "GET" in r.headers["Allow"]
    assert_problem(officer.request("PUT", "/api/v1/cases"), 405)
    assert_problem(officer.get(f"/api/v1/cases/{case_id}/transitions/close_case"), 405)


def test_body_over_max_content_length_is_413(make_app: Callable[..., Flask]) -> None:
    app = make_app(MAX_CONTENT_LENGTH=4096)
    officer = ApiUsers(app).officer()
    big = {"subject": SUBJECT | {"address": "Số 1, đường Lê Lợi " * 400}}
    r = officer.post("/api/v1/cases", big)
    assert_problem(r, 413)
    assert b"<html" not in r.data.lower()
    assert officer.get("/api/v1/cases").get_json()["items"] == []
    assert officer.post("/api/v1/cases", {"subject": SUBJECT}).status_code == 201


# ----------------------------------------------------------------------------- authentication
def test_401_without_a_valid_token(make_app: Callable[..., Flask]) -> None:
    app = make_app(AUTH_FAILURE_LIMIT=1000)  # 21 failures below; the limiter is tested apart
    client = app.test_client()
    officer = ApiUsers(app).officer()
    accounts = app.extensions["rehabflow.accounts"]
    now = datetime.now(UTC)
    accounts.create_user("expired.user", "commune_police", "officer", "17662", now)
    expired = accounts.create_token("expired.user", now - timedelta(days=3), expires_days=1)
    revoked = accounts.create_token(officer.username, now).token
    assert accounts.revoke_token(revoked, now) == 1

    attempts = {
        "no header": {},
        "not bearer": {"Authorization": f"Basic {officer.token}"},
        "empty bearer": {"Authorization": "Bearer "},
        "unknown token": {"Authorization": "Bearer rf_" + "x" * 43},
        "garbage": {"Authorization": "Bearer <script>"},
        "expired": {"Authorization": f"Bearer {expired.token}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }
    for name, headers in attempts.items():
        for path in ("/api/v1/cases", "/api/v1/definitions", "/api/v1/audit/verify"):
            r = client.get(path, headers=headers)
            body = assert_problem(r, 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), name
            assert body["type"].endswith("/unauthorized"), name
    # the officer's own token still works
    assert officer.get("/api/v1/cases").status_code == 200


def test_failed_tokens_are_rate_limited(make_app: Callable[..., Flask]) -> None:
    app = make_app(AUTH_FAILURE_LIMIT=3)
    officer = ApiUsers(app).officer()
    client = app.test_client()
    bad = {"Authorization": "Bearer rf_wrong"}
    for _ in range(3):
        assert_problem(client.get("/api/v1/cases", headers=bad), 401)
    r = client.get("/api/v1/cases", headers=bad)
    assert_problem(r, 429)
    assert int(r.headers["Retry-After"]) > 0
    # the client address is blocked, whatever it sends now
    assert_problem(officer.get("/api/v1/cases"), 429)
    # public endpoints stay reachable
    assert client.get("/healthz").status_code == 200


def test_successful_requests_do_not_count_as_failures(make_app: Callable[..., Flask]) -> None:
    app = make_app(AUTH_FAILURE_LIMIT=3)
    officer = ApiUsers(app).officer()
    for _ in range(10):
        assert officer.get("/api/v1/cases").status_code == 200


# ----------------------------------------------------------------------------- 500 and headers
def test_unexpected_error_is_a_500_problem_without_traceback(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()

    def boom() -> None:
        raise RuntimeError("secret internals: /etc/rehabflow password=hunter2")

    app.add_url_rule("/api/v1/boom", "boom", boom)
    app.add_url_rule("/boom", "boom_outside", boom)
    officer = ApiUsers(app).officer()
    for r in (officer.get("/api/v1/boom"), app.test_client().get("/boom")):
        body = assert_problem(r, 500)
        text = r.get_data(as_text=True)
        assert "Traceback" not in text and "hunter2" not in text and "RuntimeError" not in text
        assert "<html" not in text.lower()
        assert set(body) <= {"type", "title", "status", "detail", "instance"}
        assert_security_headers(r)


def test_security_headers_on_every_response(client: FlaskClient, users: ApiUsers) -> None:
    officer = users.officer()
    case_id = open_case(officer)
    doc = officer.upload(case_id, "citizen_id_copy", b"%PDF-1.4\n%%EOF\n")
    responses = [
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/api/v1/openapi.json"),
        client.get("/api/docs"),
        client.get("/api/v1/cases"),  # 401
        officer.get("/api/v1/cases"),
        officer.get(f"/api/v1/cases/{case_id}"),
        officer.get("/api/v1/nothing"),  # 404
        doc,
        officer.get(f"/api/v1/cases/{case_id}/documents/{doc.get_json()['id']}/content"),
    ]
    for r in responses:
        assert_security_headers(r)
        for name in ("Cache-Control", "Cross-Origin-Opener-Policy", "Permissions-Policy"):
            assert len(r.headers.getlist(name)) == 1, (r.request.path, name)
    assert "frame-ancestors 'none'" in responses[5].headers["Content-Security-Policy"]


def test_a_header_the_view_sets_is_kept(make_app: Callable[..., Flask]) -> None:
    """The security headers are defaults: a view's own value of one stays, once."""
    app = make_app()

    @app.get("/own-headers")
    def own() -> tuple[str, int, dict[str, str]]:
        return "x", 200, {"Cache-Control": "private, max-age=60", "x-frame-options": "SAMEORIGIN"}

    r = app.test_client().get("/own-headers")
    assert r.headers.getlist("Cache-Control") == ["private, max-age=60"]
    assert r.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]  # case-insensitive names
    assert_security_headers(r)


# ----------------------------------------------------------------------------- health, spec, docs
def test_health_and_readiness(client: FlaskClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.get_json()["status"] == "ok"
    assert r.get_json()["checks"]["database"] == "ok"


def test_readiness_reports_a_dead_database(app: Flask, client: FlaskClient) -> None:
    engine = app.extensions["rehabflow"].engine

    def refuse(*_args: object, **_kw: object) -> None:
        raise ConnectionError("database is down")

    original = engine.connect
    engine.connect = refuse  # type: ignore[method-assign]
    try:
        r = client.get("/readyz")
    finally:
        engine.connect = original  # type: ignore[method-assign]
    assert r.status_code == 503
    assert r.get_json()["checks"]["database"].startswith("unavailable")


def test_openapi_document(client: FlaskClient) -> None:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    spec = r.get_json()
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    expected = {
        "/api/v1/cases": {"get", "post"},
        "/api/v1/cases/{case_id}": {"get"},
        "/api/v1/cases/{case_id}/transitions/{transition_key}": {"post"},
        "/api/v1/cases/{case_id}/activities/{activity_key}": {"post"},
        "/api/v1/cases/{case_id}/documents": {"post"},
        "/api/v1/cases/{case_id}/documents/{doc_id}/content": {"get"},
        "/api/v1/cases/{case_id}/documents/{doc_id}/revoke": {"post"},
        "/api/v1/cases/{case_id}/audit": {"get"},
        "/api/v1/definitions": {"get"},
        "/api/v1/definitions/{key}/{version}": {"get"},
        "/api/v1/audit/verify": {"get"},
        "/api/v1/access-log": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, (path, sorted(paths))
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    assert "bearer" in spec["components"]["securitySchemes"]
    assert {"CaseCreate", "CaseOut", "CommandOut"} <= set(spec["components"]["schemas"])


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append((tag, a["src"] or ""))
        if tag == "link" and a.get("href"):
            self.urls.append((tag, a["href"] or ""))
        if tag in ("img", "iframe") and a.get("src"):
            self.urls.append((tag, a["src"] or ""))


def test_docs_page_is_self_hosted(client: FlaskClient) -> None:
    r = client.get("/api/docs")
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "/api/v1/cases" in html
    parser = _Assets()
    parser.feed(html)
    for tag, url in parser.urls:
        assert not re.match(r"^(https?:)?//", url, re.I), (tag, url)
        assert client.get(url).status_code == 200, (tag, url)  # served by rehabflow itself
    assert not re.search(r"@import\s+(url\()?['\"]?(https?:)?//", html, re.I)
    assert not re.search(r"url\(['\"]?(https?:)?//", html, re.I)
    # the page's CSP forbids loading from elsewhere anyway
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "http" not in csp


def test_every_error_response_is_problem_json(client: FlaskClient, users: ApiUsers) -> None:
    """A sweep over error situations: none answers with HTML or plain JSON."""
    officer = users.officer()
    case_id = open_case(officer)
    errors = [
        client.get("/api/v1/cases"),
        officer.get("/api/v1/cases/987654321"),
        officer.get("/api/v1/definitions/drug_rehab/99"),
        officer.get("/api/v1/definitions/nope/1"),
        officer.post("/api/v1/cases", {"subject": {}}),
        officer.fire(case_id, "close_case", {}),
        officer.get("/api/v1/cases?limit=1000"),
        officer.get("/api/v1/access-log"),
        officer.request("PATCH", f"/api/v1/cases/{case_id}"),
    ]
    for r in errors:
        assert r.status_code >= 400
        assert r.mimetype == PROBLEM, (r.status_code, r.get_data(as_text=True)[:200])
        assert_problem(r, r.status_code)
