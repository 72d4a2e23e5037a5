"""The staff pages: server-rendered, Vietnamese first, over the same CaseService as the API.

``register(app)`` mounts the blueprint at ``/`` (login, worklist, cases, inbox, admin) next to
the API under ``/api/``, which keeps its bearer tokens and problem details.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from datetime import timedelta

from flask import Flask, Request
from flask.sessions import SecureCookieSessionInterface, SessionMixin

from api.web import i18n
from api.web.blueprint import bp

SESSION_CONTEXT = b"rehabflow web session cookie v1"


def session_secret(secret_key: str) -> str:
    """The session-signing key: an HMAC of the service's secret with a context label, so the
    same secret is never used as-is for two purposes."""
    return hmac.new(secret_key.encode("utf-8"), SESSION_CONTEXT, hashlib.sha256).hexdigest()


def _loopback(host: str) -> bool:
    """Whether a Host header (``127.0.0.1:8080``, ``[::1]:8080``, ``localhost``) is loopback."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class SessionInterface(SecureCookieSessionInterface):
    """The staff pages' signed cookie session. The API (``/api/``) authenticates each request
    by its bearer token and has no session: none is opened (a cookie sent there is not read)
    and none saved.

    ``REHABFLOW_COOKIE_SECURE``: ``1`` always Secure; ``0`` never; ``auto`` (default)
    Secure except over plain HTTP to a loopback address (the demo of ``scripts/start.sh``)."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith("/api/"):
            return self.null_session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        from flask import request

        mode = str(app.config.get("REHABFLOW_COOKIE_SECURE", "auto")).lower()
        if mode in ("1", "true", "yes", "on"):
            return True
        if mode in ("0", "false", "no", "off"):
            return False
        req: Request = request
        return req.is_secure or not _loopback(req.host)


def register(app: Flask) -> None:
    """Mount the pages on ``app`` (called by :func:`api.app.create_app`)."""
    from api.web import admin, auth, cases, errors, inbox, pages, reports  # noqa: F401 - routes

    services = app.extensions["rehabflow"]
    app.secret_key = session_secret(services.settings.secret_key)
    app.config.setdefault(
        "REHABFLOW_COOKIE_SECURE", os.environ.get("REHABFLOW_COOKIE_SECURE", "auto")
    )
    app.config.update(
        SESSION_COOKIE_NAME="rehabflow_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    app.session_interface = SessionInterface()
    i18n.init_babel(app)
    app.register_blueprint(bp)
    errors.register_http_errors(app, ("/healthz", "/readyz"))
