"""Per-app services and per-request actor, clock and language."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app, g

from workflow.accounts import Accounts
from workflow.actors import Actor
from workflow.bootstrap import Services
from workflow.errors import RehabflowError


class Unauthenticated(RehabflowError):
    code = "unauthorized"
    status = 401


def services() -> Services:
    return current_app.extensions["rehabflow"]


def accounts() -> Accounts:
    return current_app.extensions["rehabflow.accounts"]


def now() -> datetime:
    """The injected clock (tests set REHABFLOW_CLOCK to a callable)."""
    clock = current_app.config.get("REHABFLOW_CLOCK")
    return clock() if clock else datetime.now(UTC)


def actor() -> Actor:
    who = g.get("actor")
    if who is None:
        raise Unauthenticated("authentication required: Authorization: Bearer <token>")
    return who


def lang() -> str:
    from flask import request

    asked = request.args.get("lang") or request.accept_languages.best_match(["vi", "en"])
    return asked if asked in ("vi", "en") else "vi"
