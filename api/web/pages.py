"""The worklist (home page) and the case list."""

from __future__ import annotations

from typing import Any

from flask import g, render_template, request, url_for
from flask_babel import gettext as _

from api import context as ctx
from api.web.auth import csrf_token, current_user, worklist
from api.web.blueprint import bp
from api.web.i18n import LANGUAGES, current_lang, labels
from workflow.errors import ValidationFailed
from workflow.queries import CaseFilter

PAGE_SIZE = 25


@bp.app_context_processor
def _page_context() -> dict[str, Any]:
    if request.path.startswith("/api/"):
        return {}
    user = current_user()
    return {
        "user": user,
        "csrf_token": csrf_token,
        "lang": current_lang(),
        "languages": LANGUAGES,
        "L": labels(),
        "unread": _unread() if user is not None else 0,
    }


def _unread() -> int:
    if "web_unread" not in g:
        g.web_unread = worklist().unread(ctx.actor())
    return g.web_unread


def definition_ref(key: str, version: int) -> str:
    return f"{key} v{version}"


@bp.app_template_global()
def case_definition(key: str, version: int) -> str:
    """'drug_rehab v3': which version of the law a case follows."""
    return definition_ref(key, version)


@bp.app_template_global()
def person_name(case: Any) -> str:
    """The person's name, or a dash for an agency that does not see persons (definition)."""
    if ctx.services().cases.shows_person(case, ctx.actor()):
        return case.subject.full_name
    return "—"


@bp.route("/", endpoint="worklist")
def worklist_page() -> str:
    summary = worklist().summary(ctx.actor(), ctx.now())
    g.web_unread = summary.unread
    return render_template("web/worklist.html", s=summary)


@bp.route("/cases")
def case_list() -> tuple[str, int] | str:
    args = request.args
    q = (args.get("q") or "").strip()[:100]
    f = CaseFilter(
        state=args.get("state") or None,
        group=args.get("group") or None,
        overdue=args.get("overdue") == "1",
        q=q or None,
    )
    cursor = args.get("cursor") or None
    error = None
    try:
        rows, nxt = ctx.services().cases.list_cases(
            ctx.actor(), f, ctx.now(), limit=PAGE_SIZE, cursor=cursor
        )
    except ValidationFailed:
        error = _("The page link is no longer valid; showing the first page.")
        rows, nxt = ctx.services().cases.list_cases(ctx.actor(), f, ctx.now(), limit=PAGE_SIZE)
        cursor = None
    query = {k: v for k, v in args.items() if k != "cursor" and v}
    next_url = url_for("web.case_list", **query, cursor=nxt) if nxt else None
    first_url = url_for("web.case_list", **query) if cursor else None
    page = render_template(
        "web/cases.html",
        rows=rows,
        f=f,
        q=q,
        next_url=next_url,
        first_url=first_url,
        error=error,
        states=labels().states(),
        groups=labels().groups(),
    )
    return (page, 400) if error else page
