"""Administration pages (administrators only): users (new, deactivate/reactivate, a new
password), agencies (e-mail and webhook), API tokens, dead-lettered notifications and the
access log. Changes go through :class:`~workflow.accounts.Accounts`, which audits them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from api import context as ctx
from api.web.auth import worklist
from api.web.blueprint import bp
from api.web.i18n import labels
from workflow.accounts import MAX_SECRET_LENGTH, MIN_PASSWORD_LENGTH, MIN_SECRET_LENGTH
from workflow.errors import NotFound, NotPermitted, ValidationFailed
from workflow.model import Agency, User


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


def _user(user_id: int) -> User:
    found = next((u for u in worklist().users(ctx.actor()) if u.id == user_id), None)
    if found is None:
        raise NotFound(f"no user {user_id}", user_id=user_id)
    return found


def _user_page(user_id: int, errors: dict[str, list[str]], status: int) -> Any:
    page = render_template(
        "web/admin/user.html",
        u=_user(user_id),
        errors=errors,
        myself=ctx.actor().user_id == user_id,
        min_password=MIN_PASSWORD_LENGTH,
    )
    return page, status


@bp.route("/admin/users/<int:user_id>")
def admin_user(user_id: int) -> Any:
    _admin()
    return _user_page(user_id, {}, 200)


@bp.route("/admin/users/<int:user_id>/active", methods=["POST"])
def admin_user_active(user_id: int) -> Any:
    _admin()
    active = request.form.get("active") == "1"
    try:
        user = ctx.accounts().set_active(ctx.actor(), user_id, active, ctx.now())
    except ValidationFailed:
        errors = {"active": [_("You cannot deactivate your own account.")]}
        return _user_page(user_id, errors, 422)
    if active:
        flash(_("User %(name)s reactivated.", name=user.username), "success")
    else:
        flash(_("User %(name)s deactivated.", name=user.username), "success")
    return _see_other("web.admin_user", user_id=user_id)


@bp.route("/admin/users/<int:user_id>/password", methods=["POST"])
def admin_user_password(user_id: int) -> Any:
    _admin()
    password = request.form.get("password", "")
    errors: dict[str, list[str]] = {}
    if len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = [_("At least %(n)s characters.", n=MIN_PASSWORD_LENGTH)]
    elif password != request.form.get("password2", ""):
        errors["password2"] = [_("The two passwords are not the same.")]
    if errors:
        return _user_page(user_id, errors, 422)
    user = ctx.accounts().set_password(ctx.actor(), user_id, password, ctx.now())
    flash(_("New password set for %(name)s.", name=user.username), "success")
    return _see_other("web.admin_user", user_id=user_id)


# --------------------------------------------------------------------------- agencies
@bp.route("/admin/agencies")
def admin_agencies() -> Any:
    _admin()
    return render_template("web/admin/agencies.html", agencies=worklist().agencies(ctx.actor()))


def _agency(agency_id: int) -> Agency:
    found = next((a for a, _n in worklist().agencies(ctx.actor()) if a.id == agency_id), None)
    if found is None:
        raise NotFound(f"no agency {agency_id}", agency_id=agency_id)
    return found


def _agency_errors(raw: dict[str, list[str]]) -> dict[str, list[str]]:
    """Accounts' messages (English, for the CLI) as the page's messages."""
    out: dict[str, list[str]] = {}
    for name in raw:
        if name == "email":
            out[name] = [_("Enter an e-mail address, e.g. congan.xa@nghean.gov.vn.")]
        elif name == "webhook_url":
            out[name] = [_("Enter an https:// or http:// address, without spaces or a password.")]
        elif name == "webhook_secret" and any("needs" in m for m in raw[name]):
            out[name] = [_("A webhook needs a secret key: enter one.")]
        elif name == "webhook_secret":
            out[name] = [
                _(
                    "From %(min)s to %(max)s characters, without spaces at the ends.",
                    min=MIN_SECRET_LENGTH,
                    max=MAX_SECRET_LENGTH,
                )
            ]
        else:
            out[name] = raw[name]
    return out


@bp.route("/admin/agencies/<int:agency_id>", methods=["GET", "POST"])
def admin_agency(agency_id: int) -> Any:
    _admin()
    agency = _agency(agency_id)
    if request.method == "GET":
        values = {"email": agency.email or "", "webhook_url": agency.webhook_url or ""}
        return render_template("web/admin/agency.html", a=agency, values=values, errors={})
    values = {k: request.form.get(k, "").strip() for k in ("email", "webhook_url")}
    try:
        ctx.accounts().update_agency(
            ctx.actor(),
            agency_id,
            ctx.now(),
            email=values["email"],
            webhook_url=values["webhook_url"],
            webhook_secret=request.form.get("webhook_secret") or None,
            clear_secret=request.form.get("clear_secret") == "1",
        )
    except ValidationFailed as exc:
        errors = _agency_errors(exc.details.get("errors") or {})
        page = render_template("web/admin/agency.html", a=agency, values=values, errors=errors)
        return page, 422
    flash(_("Agency %(name)s saved.", name=agency.name), "success")
    return _see_other("web.admin_agencies")


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
