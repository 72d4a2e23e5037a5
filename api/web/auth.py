"""Signing in and out of the staff pages: password login with lockout, session, CSRF tokens.

* The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure; see
  :func:`api.web.register`); its key is derived from the service's secret key.
* Every POST of the pages carries the session's CSRF token (``csrf_token`` form field).
* Failed logins are rows of ``login_attempts``: 5 failures for a username within 15 minutes
  lock that username for 15 minutes; 20 failures from one address within 15 minutes refuse
  that address for as long. The page says the same whether or not the username exists.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Response, abort, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import context as ctx
from api.web.blueprint import bp
from api.web.i18n import LANGUAGES
from workflow.db import read_only
from workflow.model import LoginAttempt
from workflow.worklist import WebUser, Worklist

USER_LIMIT = 5
ADDRESS_LIMIT = 20
WINDOW = timedelta(minutes=15)
SESSION_MAX_AGE = timedelta(hours=12)
PUBLIC_ENDPOINTS = {"web.login", "web.set_language", "web.static"}


def worklist() -> Worklist:
    return Worklist(ctx.services().cases)


def fold_username(username: str) -> str:
    return username.strip().lower()[:64]


@dataclass
class LoginGuard:
    """Lockout and rate limit from the ``login_attempts`` rows (failures only)."""

    session_factory: sessionmaker[Session]
    user_limit: int = USER_LIMIT
    address_limit: int = ADDRESS_LIMIT
    window: timedelta = WINDOW

    def locked_until(self, username: str, address: str | None, now: datetime) -> datetime | None:
        """When the lock on this username or address ends, or None if there is none."""
        with read_only(), self.session_factory() as s:
            times = sorted(
                s.execute(
                    select(LoginAttempt.at).where(
                        LoginAttempt.username == fold_username(username),
                        LoginAttempt.at > now - 2 * self.window,
                    )
                ).scalars()
            )
            by_address = 0
            if address:
                by_address = s.scalar(
                    select(func.count())
                    .select_from(LoginAttempt)
                    .where(LoginAttempt.remote_addr == address, LoginAttempt.at > now - self.window)
                )
        until = None
        # locked for `window` after any `user_limit` failures within `window`
        for i in range(self.user_limit - 1, len(times)):
            if times[i] - times[i - self.user_limit + 1] <= self.window:
                until = times[i] + self.window
        if by_address and by_address >= self.address_limit:
            until = max(until or now, now + self.window)
        return until if until is not None and until > now else None

    def failed(self, username: str, address: str | None, now: datetime) -> None:
        with self.session_factory() as s:
            s.add(LoginAttempt(username=fold_username(username), remote_addr=address, at=now))
            s.commit()

    def succeeded(self, username: str) -> None:
        with self.session_factory() as s:
            s.execute(delete(LoginAttempt).where(LoginAttempt.username == fold_username(username)))
            s.commit()


def guard() -> LoginGuard:
    return LoginGuard(ctx.services().session_factory)


# --------------------------------------------------------------------------- CSRF
def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_valid() -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


class CsrfFailure(Exception):
    """A POST without the session's CSRF token (expired page, or a forged request)."""


# --------------------------------------------------------------------------- the user
def current_user() -> WebUser | None:
    return g.get("web_user")


def _session_user() -> WebUser | None:
    uid = session.get("uid")
    if not isinstance(uid, int):
        return None
    started = session.get("auth_at", 0)
    if ctx.now().timestamp() - started > SESSION_MAX_AGE.total_seconds():
        return None
    user = worklist().web_user(uid)
    if user is None or not hmac.compare_digest(user.fingerprint, session.get("fp", "")):
        return None
    return user


@bp.before_request
def _before() -> Response | None:
    g.web_user = None
    if request.endpoint == "web.static":
        return None
    user = _session_user()
    if user is None and "uid" in session:
        for key in ("uid", "fp", "auth_at"):
            session.pop(key, None)
    if user is not None:
        g.web_user = user
        g.actor = user.actor  # what api.context.actor() returns
    if request.method == "POST" and not csrf_valid():
        raise CsrfFailure()
    if user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        return redirect(url_for("web.login", next=_local_path(request.full_path)))
    return None


def _local_path(target: str | None) -> str | None:
    """A path on this site (never another host: no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target:
        return None
    return target.rstrip("?") or "/"


# --------------------------------------------------------------------------- views
@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int, dict[str, str]]:
    nxt = _local_path(request.values.get("next")) or url_for("web.worklist")
    if request.method == "GET":
        if current_user() is not None:
            return redirect(nxt)
        return render_template("web/login.html", next=nxt, username="")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    now = ctx.now()
    address = request.remote_addr
    if not username or not password:
        error = _("Enter your username and password.")
        return render_template("web/login.html", next=nxt, username=username, error=error), 422
    locks = guard()
    until = locks.locked_until(username, address, now)
    if until is not None:
        minutes = max(1, int((until - now).total_seconds() + 59) // 60)
        error = _(
            "Too many failed sign-in attempts. Signing in is locked for %(minutes)s minutes.",
            minutes=minutes,
        )
        page = render_template("web/login.html", next=nxt, username=username, error=error)
        return page, 429, {"Retry-After": str(minutes * 60)}
    actor = ctx.accounts().authenticate_password(username, password)
    if actor is None or actor.user_id is None:
        locks.failed(username, address, now)
        error = _("Wrong username or password.")
        return render_template("web/login.html", next=nxt, username=username, error=error), 422
    locks.succeeded(username)
    user = worklist().web_user(actor.user_id)
    if user is None:
        abort(403)
    lang = session.get("lang")
    session.clear()  # a new session (and CSRF token) at every sign-in
    session.permanent = True
    session.update(uid=actor.user_id, fp=user.fingerprint, auth_at=int(now.timestamp()))
    if lang:
        session["lang"] = lang
    csrf_token()
    return redirect(nxt, code=303)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    csrf_token()
    return redirect(url_for("web.login"), code=303)


@bp.route("/lang", methods=["POST"])
def set_language() -> Response:
    lang = request.form.get("lang", "")
    if lang in LANGUAGES:
        session["lang"] = lang
    return redirect(_local_path(request.form.get("next")) or url_for("web.worklist"), code=303)
