"""Errors on the pages: engine errors and HTTP errors become friendly pages in the user's
language (the API keeps its problem details, see :mod:`api.problems`)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from api import problems
from api.web.auth import CsrfFailure
from api.web.blueprint import bp
from workflow.errors import (
    IdempotencyConflict,
    InfrastructureError,
    InvalidDocument,
    NotFound,
    NotPermitted,
    PreconditionFailed,
    RehabflowError,
    StaleCase,
    TransitionNotAvailable,
    UnknownDefinition,
)

log = logging.getLogger(__name__)

# messages of the service's own subject checks (workflow.service), in both languages
SUBJECT_MESSAGES = {
    "Họ tên là bắt buộc.": _l("Full name is required."),
    "Họ tên dài tối đa 255 ký tự.": _l("Full name is at most 255 characters."),
    "Mã xã/phường không tồn tại.": _l("Choose a commune or ward."),
    "Ngày sinh không hợp lệ.": _l("Invalid date of birth."),
    "Số định danh phải có 12 (hoặc 9) chữ số.": _l("The ID number has 12 (or 9) digits."),
    "Giới tính phải là male, female hoặc other.": _l("Choose a sex from the list."),
}


def translate(message: str) -> str:
    """A message of the service in the page's language when the catalogue knows it."""
    known = SUBJECT_MESSAGES.get(message)
    return str(known) if known is not None else message


def friendly(exc: RehabflowError) -> tuple[int, str, str]:
    """(HTTP status, title, explanation) of an engine error, for a page."""
    if isinstance(exc, NotFound | UnknownDefinition):
        return (
            404,
            _("Not found"),
            _("There is no such case, document or item, or it is outside your jurisdiction."),
        )
    if isinstance(exc, NotPermitted):
        return 403, _("Not allowed"), _("Your agency and role may not do this.")
    if isinstance(exc, PreconditionFailed | StaleCase):
        return (
            409,
            _("The case has changed"),
            _(
                "Someone else changed this case while you were working on it. The page now shows "
                "the case as it is; check it and try again."
            ),
        )
    if isinstance(exc, TransitionNotAvailable):
        return (
            409,
            _("No longer possible"),
            _(
                "This step is not possible in the case's current state (it may just have moved "
                "on). Reload the case."
            ),
        )
    if isinstance(exc, IdempotencyConflict):
        return 409, _("Sent twice"), _("This form was already sent with other values.")
    if isinstance(exc, InvalidDocument):
        return 422, _("Document refused"), document_error(exc)
    if isinstance(exc, InfrastructureError):
        return (
            503,
            _("Service unavailable"),
            _("The service is temporarily unavailable. Try again in a few minutes."),
        )
    if exc.status == 422:
        return 422, _("Not accepted"), _("The data sent was not accepted.")
    return 500, _("Error"), _("An unexpected error occurred; it was logged.")


def document_error(exc: InvalidDocument) -> str:
    """Why an uploaded file was refused, in the page's language."""
    from api.web.i18n import labels

    details: dict[str, Any] = exc.details
    if "accepted" in details:
        return _(
            "This kind of file is not accepted for this document. Accepted: %(types)s.",
            types=", ".join(t.split("/")[-1].upper() for t in details["accepted"]),
        )
    if "max_size" in details:
        return _(
            "The file is too large (at most %(mb)s MB).",
            mb=round(details["max_size"] / 1024 / 1024),
        )
    if "known" in details:
        return _("Unknown document type.")
    if exc.message == "the file is empty":
        return _("The file is empty.")
    if details.get("document_type"):
        return _(
            "The file is not a recognised document (PDF, JPEG or PNG) for %(document)s.",
            document=labels().document(details["document_type"]),
        )
    return _("The file was refused.")


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("web/error.html", status=status, title=title, message=message), status


@bp.errorhandler(RehabflowError)
def _engine_error(exc: RehabflowError) -> tuple[str, int]:
    status, title, message = friendly(exc)
    if status == 500:
        log.error("engine error on %s %s: %s", request.method, request.path, exc.code)
    return error_page(status, title, message)


@bp.errorhandler(CsrfFailure)
def _csrf_error(exc: CsrfFailure) -> tuple[str, int]:
    return error_page(
        400,
        _("The form has expired"),
        _(
            "This form is no longer valid (the page was open too long, or you signed out). "
            "Go back, reload the page and send it again."
        ),
    )


def _http_page(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    titles = {
        400: (_("Bad request"), _("The request could not be understood.")),
        403: (_("Not allowed"), _("You may not open this page.")),
        404: (_("Not found"), _("There is no such page.")),
        405: (_("Not allowed"), _("This page cannot be used this way.")),
        413: (_("File too large"), _("The file is too large.")),
    }
    title, message = titles.get(status, (_("Error"), exc.description or exc.name))
    return error_page(status, title, message)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int] | Response:
    if isinstance(exc, HTTPException):
        return _http_page(exc)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_page(500, _("Error"), _("An unexpected error occurred; it was logged."))


def register_http_errors(app: Flask, api_paths: tuple[str, ...]) -> None:
    """HTTP errors outside the blueprint's views (an unknown path, a method not allowed): a
    page for a browser (it asks for text/html) outside the API's paths, problem details for
    everything else, as before the pages existed."""

    api_handler = app.error_handler_spec[None][None].get(HTTPException, problems.from_http)

    def handler(exc: HTTPException) -> Any:
        path = request.path
        browser = "text/html" in request.headers.get("Accept", "")
        if path.startswith("/api/") or path in api_paths or not browser:
            return api_handler(exc)  # flask-smorest's (api.app.ProblemApi): problem details
        return _http_page(exc)

    app.register_error_handler(HTTPException, handler)
