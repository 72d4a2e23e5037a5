"""The report pages: the plans' indicators of a unit for a period (every table, the SVG charts,
XLSX and CSV downloads), the cases behind each figure, and the plan targets (administrators).

* Which unit a user may report on is the API's rule (:func:`api.reports.allowed_unit`); the
  unit select offers exactly the units it accepts.
* The cases behind a figure are for the agencies that may list them
  (:func:`workflow.reports.may_drill`, as ``GET /api/v1/reports/cases``); a case is opened from
  there through its case page, which reads it through ``CaseService.get_case`` (access log).
* The form is a GET form (it works with JavaScript off); its URL is the report's.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

from babel.numbers import format_decimal
from flask import Response, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from werkzeug.datastructures import MultiDict

from api import context as ctx
from api.reports import allowed_unit, is_central
from api.web.auth import current_user
from api.web.blueprint import bp
from api.web.errors import error_page
from api.web.formspec import commune_choices, parse_date
from api.web.i18n import current_lang, labels
from workflow import units
from workflow.actors import Actor
from workflow.calendar import business_date
from workflow.charts import report_charts
from workflow.errors import NotPermitted, ValidationFailed
from workflow.report_export import export
from workflow.reports import drill, indicators, may_drill, period, reporting_year
from workflow.targets import MAX_YEAR, MIN_YEAR, Targets, canonical, catalogue

PAGE_SIZE = 50
MAX_DAYS = 5 * 366  # a date range of at most five years
PERIOD_YEARS = 3  # reporting years offered in the period select

# the figures of the report, by their path in ``report["drill"]`` (also the drill page's title)
FIGURES = {
    "compulsory.dossiers_made": _l("Compulsory-rehab dossiers made"),
    "compulsory.sent_to_court": _l("Dossiers sent to court"),
    "compulsory.decided": _l("Court decisions to send to compulsory rehab"),
    "compulsory.rejected": _l("Not sent, or proceedings ended"),
    "compulsory.decisions_timed": _l("Decisions with a dossier before them"),
    "compulsory.avg_working_days": _l("Average working days from dossier to decision"),
    "compulsory.max_working_days": _l("Longest, in working days"),
    "management_dossier.cases": _l("Open cases"),
    "management_dossier.complete": _l("With a complete management dossier"),
    "management_dossier.incomplete": _l("With a document missing"),
    "management_dossier.share": _l("Share with a complete management dossier"),
    "support.finished": _l("Finished rehab in the period"),
    "support.supported": _l("Received support (vocational training, loan, job)"),
    "support.unsupported": _l("Received no support"),
    "support.share": _l("Share who received support"),
    "family_commitment.cases": _l(
        "In home rehab, substitution treatment or post-rehab management at the end"
    ),
    "family_commitment.signed": _l("Family commitment signed"),
    "family_commitment.unsigned": _l("No family commitment"),
    "family_commitment.share": _l("Share with a signed family commitment"),
    "relapses.events": _l("Relapses"),
    "relapses.cases": _l("People who relapsed"),
    "check_ins.done": _l("Check-ins done"),
    "check_ins.due": _l("Check-ins due"),
    "check_ins.met_on_time": _l("Check-ins on time"),
    "check_ins.missed": _l("Check-ins missed"),
}
GROUP_COLUMNS = {
    "at_start": _l("At the start"),
    "new": _l("New in the period"),
    "ended": _l("Ended in the period"),
    "at_end": _l("At the end"),
}
DEADLINE_COLUMNS = {
    "due": _l("Due in the period"),
    "met_on_time": _l("Met on time"),
    "met_late": _l("Met late"),
    "overdue_open": _l("Overdue, still open"),
    "pending": _l("Not yet due"),
    "overdue": _l("Overdue in all"),
}
SOURCES = {
    "unit": _l("The unit's own"),
    "communes": _l("Sum of the communes' targets"),
    "provinces": _l("Sum of the provinces' targets"),
    "default": _l("The plans' level"),
}
KINDS = {"people": _l("people"), "count": _l("cases"), "percent": "%"}


# --------------------------------------------------------------------------- numbers
@bp.app_template_filter("num")
def format_number(value: float | None) -> str:
    """1.234 and 12,5 in Vietnamese (1,234 and 12.5 in English); None is a dash."""
    if value is None:
        return "—"
    return format_decimal(value, format="#,##0.##", locale=current_lang())


@bp.app_template_filter("pct")
def format_share(value: float | None, scale: float = 100) -> str:
    """A share as a percentage: 0.855 → '85,5 %' (English '85.5%'); ``scale=1`` for a figure
    that is already a percentage (a target of 80)."""
    if value is None:
        return "—"
    n = format_decimal(value * scale, format="#,##0.#", locale=current_lang())
    return f"{n}\u00a0%" if current_lang() == "vi" else f"{n}%"


def _day(d: date) -> str:
    return d.strftime("%d/%m/%Y")


# --------------------------------------------------------------------------- units, periods
COUNTRY = "VN"  # the form's value for the whole country (the system and central agencies)


def _unit(code: str) -> str | None:
    """The report's unit for a form value (None: the whole country)."""
    return None if code == COUNTRY else code


def report_units(who: Actor) -> list[tuple[str, str]]:
    """The units ``who`` may report on, with their names (provinces first): the candidates
    from the agency's units, kept only when the API's rule accepts them."""
    cached = g.get("web_report_units")
    if cached is not None and cached[0] == who:
        return cached[1]
    candidates: dict[str, str] = {}
    if who.is_system or is_central(who):
        candidates[COUNTRY] = _("Whole country")
    for code in sorted(who.units):
        found = units.get(code)
        if found is not None and found.level == "province":
            candidates[code] = _("%(province)s (whole province)", province=found.name)
    for code, label in commune_choices(who.units):
        candidates.setdefault(code, label)
    out = []
    for code, label in candidates.items():
        try:
            allowed_unit(who, _unit(code))
        except (NotPermitted, ValidationFailed):
            continue
        out.append((code, label))
    g.web_report_units = (who, out)
    return out


@bp.app_template_global()
def may_report() -> bool:
    """Whether the signed-in user may see a report (the header's menu)."""
    user = current_user()
    return user is not None and bool(report_units(user.actor))


def current_period(today: date) -> str:
    """The 6-month period ``today`` falls in ("2026H2")."""
    year = reporting_year(today)
    return f"{year}H1" if today <= period(f"{year}H1")[1] else f"{year}H2"


def period_label(spec: str) -> str:
    start, end = period(spec)
    days = {"start": _day(start), "end": _day(end)}
    if spec.endswith("H1"):
        return _("First half of %(year)s (%(start)s – %(end)s)", year=spec[:4], **days)
    if spec.endswith("H2"):
        return _("Second half of %(year)s (%(start)s – %(end)s)", year=spec[:4], **days)
    return _("Year %(year)s (%(start)s – %(end)s)", year=spec, **days)


def period_choices(today: date, chosen: str) -> list[tuple[str, str]]:
    """The reporting periods of the last few years that have started, newest first (and the
    one chosen, when it is older)."""
    specs = []
    for year in range(reporting_year(today), reporting_year(today) - PERIOD_YEARS, -1):
        specs += [s for s in (f"{year}H2", f"{year}H1", f"{year}") if period(s)[0] <= today]
    if chosen and chosen not in specs:
        try:
            period(chosen)
            specs.append(chosen)
        except ValidationFailed:  # reported on the form; the select cannot show it
            pass
    return [(s, period_label(s)) for s in specs]


@dataclass(frozen=True)
class Query:
    """A report asked for: the unit and the period (by name, or from/to dates)."""

    unit: str
    start: date
    end: date
    period: str = ""

    def args(self) -> dict[str, str]:
        """The query string of this report (for links and downloads)."""
        if self.period:
            return {"unit": self.unit, "period": self.period}
        return {"unit": self.unit, "from": _day(self.start), "to": _day(self.end)}


def read_query(
    args: MultiDict[str, str], who: Actor, today: date
) -> tuple[dict[str, str], dict[str, list[str]], Query | None]:
    """(the form's values, errors per field, the query when there is none). ``kind`` says
    whether the period select or the dates count; without it (links), the period if given.
    A unit outside the user's jurisdiction is refused (NotPermitted: 403)."""
    values = {k: (args.get(k) or "").strip()[:20] for k in ("unit", "period", "from", "to", "kind")}
    values["period"] = values["period"].upper()
    kind = values["kind"]
    if kind not in ("period", "dates"):
        kind = "dates" if not values["period"] and (values["from"] or values["to"]) else "period"
    values["kind"] = kind
    errors: dict[str, list[str]] = {}
    choices = report_units(who)
    if not values["unit"]:
        if not choices:
            raise NotPermitted("the user's agency covers no unit to report on")
        values["unit"] = choices[0][0]
    if values["unit"] == COUNTRY and not (who.is_system or is_central(who)):
        raise NotPermitted("only the system and central agencies report on the whole country")
    try:
        allowed_unit(who, _unit(values["unit"]))
    except ValidationFailed:
        errors["unit"] = [_("Unknown commune, ward or province code.")]
    start = end = None
    if kind == "dates":
        start, end = _date(values, "from", errors), _date(values, "to", errors)
        if start and end and end < start:
            errors["to"] = [_("The end date is before the start date.")]
        elif start and end and (end - start).days > MAX_DAYS:
            errors["to"] = [_("At most five years.")]
        values["period"] = ""
    else:
        values["period"] = values["period"] or current_period(today)
        values["from"] = values["to"] = ""
        try:
            start, end = period(values["period"])
        except ValidationFailed:
            errors["period"] = [_("Choose a reporting period.")]
    if errors or start is None or end is None:
        return values, errors, None
    return values, {}, Query(values["unit"], start, end, values["period"])


def _date(values: dict[str, str], name: str, errors: dict[str, list[str]]) -> date | None:
    raw = values[name]
    if not raw:
        errors[name] = [_("Enter a date as dd/mm/yyyy, e.g. 25/11/2026.")]
        return None
    day = parse_date(raw)
    if day is None:
        errors[name] = [_("Enter a date as dd/mm/yyyy, e.g. 25/11/2026.")]
    return day


def make_report(q: Query, lang: str) -> dict[str, Any]:
    services = ctx.services()
    with services.session_factory() as session:
        return indicators(
            session,
            services.registry,
            _unit(q.unit),
            q.start,
            q.end,
            today=business_date(ctx.now()),
            calendar=services.cases.calendar,
            lang=lang,
        )


def report_title(report: dict[str, Any]) -> str:
    return _(
        "Report on drug rehabilitation and post-rehabilitation management — %(unit)s — "
        "from %(start)s to %(end)s",
        unit=report["unit_label"],
        start=_day(date.fromisoformat(report["from"])),
        end=_day(date.fromisoformat(report["to"])),
    )


# --------------------------------------------------------------------------- the report page
def _form_page(
    who: Actor, today: date, values: dict[str, str], errors: dict[str, list[str]], **kw: Any
) -> str:
    return render_template(
        "web/reports.html",
        values=values,
        errors=errors,
        unit_choices=report_units(who),
        period_choices=period_choices(today, values.get("period", "")),
        F=FIGURES,
        GROUP_COLUMNS=GROUP_COLUMNS,
        DEADLINE_COLUMNS=DEADLINE_COLUMNS,
        SOURCES=SOURCES,
        KINDS=KINDS,
        **kw,
    )


@bp.route("/reports")
def reports() -> Any:
    who, today = ctx.actor(), business_date(ctx.now())
    values, errors, q = read_query(request.args, who, today)
    if q is None:
        return _form_page(who, today, values, errors, report=None), 422
    lang = current_lang()
    report = make_report(q, lang)
    links: dict[str, str] = {}
    if may_drill(who, ctx.services().registry):
        base = q.args()
        links = {
            path: url_for("web.report_cases", **base, figure=key)
            for path, key in report["drill"].items()
            if key
        }
    charts = {
        k: Markup(svg)  # noqa: S704 - workflow.charts escapes every text it writes
        for k, svg in report_charts(report, lang=lang).items()
    }
    return _form_page(
        who,
        today,
        values,
        errors,
        report=report,
        title=report_title(report),
        start=q.start,
        end=q.end,
        made=today,
        links=links,
        charts=charts,
        downloads={f: url_for("web.report_download", fmt=f, **q.args()) for f in ("xlsx", "csv")},
    )


def ascii_name(name: str) -> str:
    """A file name safe in any header: Vietnamese letters without their marks (đ → d), every
    other run of characters outside [a-z0-9.] a single '-'."""
    name = name.replace("đ", "d").replace("Đ", "D")
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9.]+", "-", plain.lower()).strip("-.") or "bao-cao"


@bp.route("/reports/download/<any(xlsx, csv):fmt>")
def report_download(fmt: str) -> Any:
    who, today = ctx.actor(), business_date(ctx.now())
    values, errors, q = read_query(request.args, who, today)
    if q is None:
        return _form_page(who, today, values, errors, report=None), 422
    report = make_report(q, "vi")  # the export's tables are in Vietnamese
    content, media = export(report, fmt)
    name = f"Báo cáo {report['unit_label']} {_day(q.start)} đến {_day(q.end)}".replace("/", "-")
    resp = Response(content, mimetype=media.split(";")[0])
    if media.startswith("text/"):
        resp.charset = "utf-8"
    resp.headers["Content-Disposition"] = (
        f'attachment; filename="{ascii_name(name)}.{fmt}"; '
        f"filename*=UTF-8''{quote(name + '.' + fmt, safe='')}"
    )
    return resp


# --------------------------------------------------------------------------- the drill-down
def figure_label(figure: str) -> str:
    """What a drill key counts, in the page's language."""
    parts = figure.split(".")
    L = labels()
    if figure in FIGURES:
        return str(FIGURES[figure])
    if len(parts) == 3 and parts[0] == "groups" and parts[2] in GROUP_COLUMNS:
        return f"{L.group(parts[1])} — {GROUP_COLUMNS[parts[2]]}"
    if len(parts) == 3 and parts[0] == "deadlines" and parts[2] in DEADLINE_COLUMNS:
        agency = L.agency_type(parts[1]) if parts[1] != "unknown" else _("Agency not known")
        deadlines = _("Deadlines")
        return f"{deadlines} — {agency} — {DEADLINE_COLUMNS[parts[2]]}"
    if len(parts) == 3 and parts[0] == "trend":
        what = {"total": _("People under management"), "new_cases": _("New cases")}
        year, _sep, month = parts[1].partition("-")
        return _(
            "%(what)s — month %(month)s",
            what=what.get(parts[2]) or L.group(parts[2]),
            month=f"{month}/{year}",
        )
    if len(parts) == 3 and parts[0] == "targets":
        known = catalogue(ctx.services().registry)
        ind = known.get(parts[1])
        name = ind.label(current_lang()) if ind else parts[1]
        return _("%(indicator)s — actual", indicator=name)
    return figure


def detail_label(detail: str | None, definition: Any) -> str:
    """The event (``transition:<key>``, ``case.opened``), activity (``activity:<key>``) or
    deadline (its key) behind a row, by its label."""
    if not detail:
        return ""
    if detail == "case.opened":
        return _("Case opened")
    kind, _sep, key = detail.partition(":")
    L = labels()
    if kind == "transition" and key:
        return L.transition(key, definition)
    if kind == "activity" and key:
        return L.activity(key, definition)
    return L.deadline(detail, definition)


@bp.route("/reports/cases")
def report_cases() -> Any:
    who, today = ctx.actor(), business_date(ctx.now())
    services = ctx.services()
    if not may_drill(who, services.registry):
        raise NotPermitted("your agency may not list the cases behind the figures")
    values, errors, q = read_query(request.args, who, today)
    figure = (request.args.get("figure") or "").strip()[:120]
    if q is None or not figure:
        return error_page(422, _("Not accepted"), _("The data sent was not accepted."))
    cursor = request.args.get("cursor") or None
    notice = None
    try:
        page = _drill(q, figure, who, today, cursor)
    except ValidationFailed as exc:
        if "cursor" not in (exc.details.get("errors") or {}):
            return error_page(
                422,
                _("Unknown figure"),
                _("This figure is not part of the report of this unit and period."),
            )
        notice = _("The page link is no longer valid; showing the first page.")
        page, cursor = _drill(q, figure, who, today, None), None
    query = {**q.args(), "figure": figure}
    nxt = page["next"]
    return render_template(
        "web/report_cases.html",
        page=page,
        figure=figure,
        label=figure_label(figure),
        unit_label=_("Whole country") if q.unit == COUNTRY else units.label(q.unit),
        start=q.start,
        end=q.end,
        notice=notice,
        back_url=url_for("web.reports", **q.args()),
        next_url=url_for("web.report_cases", **query, cursor=nxt) if nxt else None,
        first_url=url_for("web.report_cases", **query) if cursor else None,
        detail_label=detail_label,
    )


def _drill(q: Query, figure: str, who: Actor, today: date, cursor: str | None) -> dict[str, Any]:
    services = ctx.services()
    with services.session_factory() as session:
        return drill(
            session,
            services.registry,
            _unit(q.unit),
            q.start,
            q.end,
            figure,
            today=today,
            actor=who,
            routed_states=services.cases.routed_states(who.agency_type),
            limit=PAGE_SIZE,
            cursor=cursor,
        )


# --------------------------------------------------------------------------- targets
def _admin() -> None:
    if not ctx.actor().is_admin:
        raise NotPermitted("only administrators may open the administration pages")


def _targets() -> Targets:
    services = ctx.services()
    return Targets(services.session_factory, services.registry)


def _target_errors(raw: dict[str, list[str]]) -> dict[str, list[str]]:
    """Targets' messages (English, for the CLI and the API) as the page's messages."""
    out: dict[str, list[str]] = {}
    for name, msgs in raw.items():
        if name == "unit":
            out[name] = [_("Unknown commune, ward or province code.")]
        elif name == "year":
            out[name] = [_("A year from %(min)s to %(max)s.", min=MIN_YEAR, max=MAX_YEAR)]
        elif name == "indicator":
            out[name] = [_("Choose an indicator.")]
        elif name == "target" and any("percentage" in m for m in msgs):
            out[name] = [_("A percentage from 0 to 100.")]
        elif name == "target":
            out[name] = [_("A whole number, 0 or more.")]
        else:
            out[name] = msgs
    return out


def _whole(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) <= 9 else None


def _targets_page(
    unit: str, year: int | None, values: dict[str, str], errors: dict[str, list[str]]
) -> str:
    """The page for ``unit`` and ``year`` (their own targets and plan), with the set form."""
    shown = None
    if units.get(unit) is not None and year is not None and MIN_YEAR <= year <= MAX_YEAR:
        shown = _targets().show(ctx.actor(), unit, year, lang=current_lang())
    known = catalogue(ctx.services().registry)
    return render_template(
        "web/admin/targets.html",
        shown=shown,
        unit=unit,
        year="" if year is None else year,
        values=values,
        errors=errors,
        indicators=[(k, i.label(current_lang()), i.kind) for k, i in known.items()],
        kinds={k: i.kind for k, i in known.items()},
        SOURCES=SOURCES,
        may_see_report=shown is not None and unit in dict(report_units(ctx.actor())),
    )


@bp.route("/admin/targets", methods=["GET", "POST"])
def admin_targets() -> Any:
    _admin()
    who, today = ctx.actor(), business_date(ctx.now())
    if request.method == "GET":
        unit = (request.args.get("unit") or "").strip()[:8] or min(who.units, default="")
        raw_year = (request.args.get("year") or "").strip()[:4]
        year = _whole(raw_year) if raw_year else reporting_year(today)
        errors: dict[str, list[str]] = {}
        if units.get(unit) is None:
            errors["show_unit"] = [_("Unknown commune, ward or province code.")]
        if year is None or not MIN_YEAR <= year <= MAX_YEAR:
            errors["show_year"] = [_("A year from %(min)s to %(max)s.", min=MIN_YEAR, max=MAX_YEAR)]
        page = _targets_page(unit, year, {"unit": unit, "year": str(year or raw_year)}, errors)
        return (page, 422) if errors else page
    values = {k: (request.form.get(k) or "").strip()[:64] for k in ("unit", "year", "indicator")}
    values["target"] = (request.form.get("target") or "").strip()[:12]
    year, target = _whole(values["year"]), _whole(values["target"])
    errors = {}
    if year is None:
        errors["year"] = [_("A year from %(min)s to %(max)s.", min=MIN_YEAR, max=MAX_YEAR)]
    if target is None:
        errors["target"] = [_("A whole number, 0 or more.")]
    if errors:  # the other fields too, to report every error at once (nothing is saved)
        if units.get(values["unit"]) is None:
            errors["unit"] = [_("Unknown commune, ward or province code.")]
        try:
            canonical(ctx.services().registry, values["indicator"])
        except ValidationFailed:
            errors["indicator"] = [_("Choose an indicator.")]
    else:
        try:
            saved = _targets().set(
                who, values["unit"], year, values["indicator"], target, ctx.now()
            )
        except ValidationFailed as exc:
            errors = _target_errors(exc.details.get("errors") or {})
    if errors:
        page = _targets_page(values["unit"], year, values, errors)
        return page, 422
    known = catalogue(ctx.services().registry)
    flash(
        _(
            "Target saved: %(indicator)s, %(unit)s, %(year)s: %(target)s.",
            indicator=known[saved["indicator"]].label(current_lang()),
            unit=units.label(saved["unit"]),
            year=saved["year"],
            target=format_number(saved["target"]),
        ),
        "success",
    )
    return redirect(url_for("web.admin_targets", unit=saved["unit"], year=saved["year"]), code=303)


@bp.route("/admin/targets/delete", methods=["POST"])
def admin_delete_target() -> Any:
    _admin()
    unit = (request.form.get("unit") or "").strip()[:8]
    year = _whole((request.form.get("year") or "").strip())
    indicator = (request.form.get("indicator") or "").strip()[:64]
    if year is not None and _targets().delete(ctx.actor(), unit, year, indicator, ctx.now()):
        flash(_("Target removed."), "success")
    return redirect(url_for("web.admin_targets", unit=unit, year=year), code=303)
