"""Administration pages (administrators only): users, agencies, API tokens, dead-lettered
notifications and the access log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from api import context as ctx
from api.web.auth import worklist
from api.web.blueprint import bp
from api.web.i18n import labels
from workflow.errors import NotFound, NotPermitted, ValidationFailed


def _admin() -> None:
    if not ctx.actor().is_admin:
        raise NotPermitted("only administrators may open the administration pages")


def _see_other(endpoint: str, **values: Any) -> Any:
    return redirect(url_for(endpoint, **values), code=303)


@bp.route("/admin")
def admin_home() -> Any:
    _admin()
    return _see_other("web.admin_users")


# --------------------------------------------------------------------------- users
def _agency_types() -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    for d in sorted(ctx.services().registry.all(), key=lambda d: -d.version):
        for code in d.agency_types:
            out.setdefault(code, labels().agency_type(code, d))
    return sorted(out.items(), key=lambda kv: kv[1])


def _roles() -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    for d in sorted(ctx.services().registry.all(), key=lambda d: -d.version):
        for code in d.roles:
            out.setdefault(code, labels().role(code, d))
    return list(out.items())


def _user_errors(raw: dict[str, list[str]]) -> dict[str, list[str]]:
    """Accounts' messages (English, for the CLI) as the page's messages."""
    out: dict[str, list[str]] = {}
    for name, msgs in raw.items():
        if name == "username":
            taken = any("already exists" in m for m in msgs)
            out[name] = [
                _("This username is taken.")
                if taken
                else _("1 to 64 letters, digits, '.', '_' or '-'.")
            ]
        elif name == "agency_type":
            out[name] = [_("Choose an agency type.")]
        elif name == "role":
            out[name] = [_("Choose a role.")]
        elif name == "unit":
            out["unit_code"] = [_("Unknown commune, ward or province code.")]
        elif name == "password":
            out[name] = [_("At least 10 characters.")]
        else:
            out[name] = msgs
    return out


def _users_page(values: dict[str, str], errors: dict[str, list[str]], status: int) -> Any:
    page = render_template(
        "web/admin/users.html",
        users=worklist().users(ctx.actor()),
        values=values,
        errors=errors,
        agency_types=_agency_types(),
        roles=_roles(),
    )
    return page, status


@bp.route("/admin/users", methods=["GET", "POST"])
def admin_users() -> Any:
    _admin()
    if request.method == "GET":
        return _users_page({}, {}, 200)
    values = {k: v.strip() for k, v in request.form.items() if k not in ("csrf_token", "password")}
    password = request.form.get("password", "")
    errors: dict[str, list[str]] = {}
    if not password:
        errors["password"] = [_("At least 10 characters.")]
    else:
        try:
            ctx.accounts().create_user(
                values.get("username", ""),
                values.get("agency_type", ""),
                values.get("role", ""),
                values.get("unit_code", ""),
                ctx.now(),
                password=password,
                full_name=values.get("full_name", ""),
                is_admin=values.get("is_admin") == "1",
            )
        except ValidationFailed as exc:
            errors = _user_errors(exc.details.get("errors") or {})
    if errors:
        return _users_page(values, errors, 422)
    flash(_("User %(name)s created.", name=values["username"]), "success")
    return _see_other("web.admin_users")


# --------------------------------------------------------------------------- agencies
@bp.route("/admin/agencies")
def admin_agencies() -> Any:
    _admin()
    return render_template("web/admin/agencies.html", agencies=worklist().agencies(ctx.actor()))


# --------------------------------------------------------------------------- tokens
def _tokens_page(values: dict[str, str], errors: dict[str, list[str]], status: int, **kw: Any):
    page = render_template(
        "web/admin/tokens.html",
        tokens=worklist().tokens(ctx.actor()),
        values=values,
        errors=errors,
        **kw,
    )
    return page, status


@bp.route("/admin/tokens", methods=["GET", "POST"])
def admin_tokens() -> Any:
    _admin()
    if request.method == "GET":
        return _tokens_page({}, {}, 200)
    values = {k: v.strip() for k, v in request.form.items() if k != "csrf_token"}
    raw_days = values.get("expires_days") or "90"
    errors: dict[str, list[str]] = {}
    if not raw_days.isdigit() or not 1 <= int(raw_days) <= 3650:
        errors["expires_days"] = [_("A number of days from 1 to 3650.")]
    else:
        try:
            # tokens are checked against the real time (api.app), so they are made on it
            new = ctx.accounts().create_token(
                values.get("username", ""), datetime.now(UTC), expires_days=int(raw_days)
            )
        except NotFound:
            errors["username"] = [_("There is no such user.")]
    if errors:
        return _tokens_page(values, errors, 422)
    # shown once, in this answer only: a redirect would have to carry the secret in the
    # session cookie or the URL
    return _tokens_page({}, {}, 201, new_token=new, new_for=values.get("username"))


@bp.route("/admin/tokens/<int:token_id>/revoke", methods=["POST"])
def admin_revoke_token(token_id: int) -> Any:
    _admin()
    if ctx.accounts().revoke_token(str(token_id), datetime.now(UTC)):
        flash(_("Token %(id)s revoked.", id=token_id), "success")
    return _see_other("web.admin_tokens")


# --------------------------------------------------------------------------- deliveries
@bp.route("/admin/deliveries")
def admin_deliveries() -> Any:
    _admin()
    return render_template(
        "web/admin/deliveries.html", deliveries=worklist().deliveries(ctx.actor(), "dead")
    )


@bp.route("/admin/deliveries/<int:delivery_id>/retry", methods=["POST"])
def admin_retry_delivery(delivery_id: int) -> Any:
    _admin()
    worklist().retry_delivery(ctx.actor(), delivery_id, ctx.now())
    flash(_("Delivery %(id)s will be retried at the next sweep.", id=delivery_id), "success")
    return _see_other("web.admin_deliveries")


# --------------------------------------------------------------------------- access log
@bp.route("/admin/access-log")
def admin_access_log() -> Any:
    _admin()
    raw = request.args.get("case", "").strip()
    case_id = int(raw) if raw.isdigit() and len(raw) < 19 else None
    rows = worklist().access_log(ctx.actor(), case_id, 300)
    return render_template("web/admin/access_log.html", rows=rows, case=raw)
