"""The Flask application factory."""

from __future__ import annotations

import http
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, render_template, request
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from sqlalchemy import text
from werkzeug.routing import IntegerConverter

from api import problems, web
from api.schemas import MAX_ID
from workflow.accounts import Accounts
from workflow.bootstrap import bootstrap
from workflow.config import load_settings

log = logging.getLogger(__name__)

PUBLIC = ("/healthz", "/readyz", "/api/v1/openapi.json", "/api/docs")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class ProblemApi(Api):
    """flask-smorest, with its HTTP errors rendered and documented as problem details."""

    ERROR_SCHEMA = problems.ProblemOut

    def handle_http_exception(self, error: Any) -> Response:
        return problems.from_http(error)

    def _register_responses(self) -> None:
        # flask-smorest documents its per-status responses (e.g. the 422 of every
        # @blp.arguments) and the "default" error response of every operation as
        # application/json; ours are application/problem+json (api.problems).
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, problems.PROBLEM)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Problem details (RFC 9457)", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, problems.PROBLEM)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)


class IdConverter(IntegerConverter):
    """``<int:...>`` in our routes: a 64-bit id. A larger number matches no route (404) and
    never reaches the database (SQLite raises OverflowError on it); documented as maximum."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


class FailureLimiter:
    """Counts failed authentications per client address in a sliding window."""

    def __init__(self, limit: int = 20, window: float = 300.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str) -> bool:
        with self._lock:
            q = self._failures.get(key)
            now = time.monotonic()
            while q and now - q[0] > self.window:
                q.popleft()
            return bool(q) and len(q) >= self.limit

    def fail(self, key: str) -> None:
        with self._lock:
            self._failures.setdefault(key, deque()).append(time.monotonic())


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` may carry Flask settings, ``REHABFLOW_ENV`` (a dict of
    environment overrides for :func:`workflow.config.load_settings`), ``REHABFLOW_CLOCK``
    (a callable returning the current aware datetime) and ``INIT_DB`` (default True)."""
    config = dict(config or {})
    app = Flask(__name__)
    settings = load_settings(config.pop("REHABFLOW_ENV", None))
    app.config.update(
        API_TITLE="rehabflow",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=20 * 1024 * 1024 + 64 * 1024,
        JSON_SORT_KEYS=False,
        AUTH_FAILURE_LIMIT=20,
    )
    app.config.update(config)
    app.json.ensure_ascii = False
    app.url_map.converters["int"] = IdConverter
    services = bootstrap(settings)
    if app.config.get("INIT_DB", True):
        services.init_db()
    app.extensions["rehabflow"] = services
    app.extensions["rehabflow.accounts"] = Accounts(services.session_factory, services.registry)
    limiter = FailureLimiter(app.config["AUTH_FAILURE_LIMIT"])

    api = ProblemApi(
        app,
        spec_kwargs={
            "info": {
                "description": "Drug-rehabilitation case workflow (Vietnam). Errors are "
                "RFC 9457 problem details; times are ISO 8601."
            },
        },
    )
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearer": []}]
    from api import admin, cases, definitions, inbox, migrations, reports

    for blp in (cases.blp, definitions.blp, inbox.blp, admin.blp, reports.blp, migrations.blp):
        api.register_blueprint(blp)
    problems.register(app)
    web.register(app)  # the staff pages at / (api/web)

    @app.before_request
    def _authenticate() -> Response | None:
        g.actor = None
        if not request.path.startswith("/api/") or request.path in PUBLIC:
            return None
        client = request.remote_addr or "?"
        if limiter.blocked(client):
            return problems.problem(
                429,
                "too_many_requests",
                "too many failed authentications; try again later",
                headers={"Retry-After": "300"},
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        who = None
        if scheme.lower() == "bearer" and token:
            who = app.extensions["rehabflow.accounts"].authenticate_token(
                token.strip(), datetime.now(UTC)
            )
        if who is None:
            limiter.fail(client)
            return problems.problem(
                401,
                "unauthorized",
                "a valid token is required: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="rehabflow"'},
            )
        g.actor = who
        return None

    @app.before_request
    def _content_type() -> Response | None:
        if request.method != "POST" or not request.path.startswith("/api/"):
            return None
        if request.routing_exception is not None:
            return None  # no such route or method: let routing answer 404/405
        # by endpoint, not by path: a transition or activity key may be "documents"
        wanted = (
            "multipart/form-data"
            if request.endpoint == "cases.upload_document"
            else "application/json"
        )
        if request.mimetype != wanted:
            return problems.problem(
                415, "unsupported_media_type", f"send the body as {wanted}", expected=wanted
            )
        return None

    security = [(k.lower(), (k, v)) for k, v in SECURITY_HEADERS.items()]

    @app.after_request
    def _headers(resp: Response) -> Response:
        # those the response does not set itself, in one pass (seven setdefault calls, each
        # scanning the headers, cost 14 us a request; this, 4)
        present = {k.lower() for k, _ in resp.headers}
        resp.headers.extend([kv for low, kv in security if low not in present])
        if request.path == "/api/docs":
            resp.headers["Content-Security-Policy"] = (
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
            )
        return resp

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> tuple[dict[str, Any], int]:
        checks: dict[str, str] = {}
        try:
            with services.engine.connect() as conn:
                conn.execute(text("select 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
            checks["database"] = f"unavailable: {type(exc).__name__}"
        redis_check = app.config.get("REHABFLOW_REDIS_CHECK")
        if redis_check is not None:
            try:
                redis_check()
                checks["redis"] = "ok"
            except Exception as exc:  # noqa: BLE001
                checks["redis"] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503

    @app.get("/api/docs")
    def docs() -> str:
        return render_template("docs.html", spec=api.spec.to_dict())

    return app
