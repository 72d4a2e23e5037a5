"""/api/v1/reports: the plans' indicators, the cases behind each figure, and the targets.

A user may ask for the units their agency covers: a commune agency for its commune, a province
agency for its province or any commune of it; the whole country (no unit) only the system.
Only the state agencies may list the cases behind a figure (not families or mentors), and the
subject's name is given only for the cases the user may open. Targets are for administrators.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Response, request, url_for
from marshmallow import Schema, fields, validate

from api import context as ctx
from api.blueprint import Blueprint
from api.schemas import DefinitionRef, StrictSchema
from workflow import units
from workflow.actors import Actor
from workflow.calendar import business_date
from workflow.errors import NotFound, NotPermitted, ValidationFailed
from workflow.report_export import export
from workflow.reports import MAX_PAGE, drill, indicators, may_drill, period
from workflow.targets import Targets

blp = Blueprint(
    "reports",
    __name__,
    url_prefix="/api/v1/reports",
    description="Indicators of the local plans, the cases behind them, plan targets",
)


class PeriodArgs(StrictSchema):
    unit = fields.String(metadata={"description": "Commune or province code"})
    period = fields.String(metadata={"description": "YYYY, YYYYH1 or YYYYH2"})
    from_ = fields.Date(data_key="from")
    to = fields.Date()


class IndicatorArgs(PeriodArgs):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "xlsx"]))
    lang = fields.String(validate=validate.OneOf(["vi", "en"]))


class DrillArgs(PeriodArgs):
    figure = fields.String(
        required=True,
        validate=validate.Length(min=1, max=120),
        metadata={"description": "A drill key of the report (its `drill` map)"},
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE))
    cursor = fields.String(validate=validate.Length(max=200))


class DrillItemOut(Schema):
    id = fields.Integer()
    number = fields.String(allow_none=True)
    state = fields.String()
    group = fields.String()
    version = fields.Integer()
    definition = fields.Nested(DefinitionRef)
    unit_code = fields.String()
    province_code = fields.String()
    full_name = fields.String(
        allow_none=True, metadata={"description": "Only for the cases you may open"}
    )
    ref = fields.Integer(
        allow_none=True, metadata={"description": "The audit event, deadline or activity"}
    )
    at = fields.DateTime(allow_none=True)
    detail = fields.String(allow_none=True, metadata={"description": "Action or deadline key"})


class DrillOut(Schema):
    figure = fields.String()
    count = fields.Integer(metadata={"description": "Equals the figure of the report"})
    items = fields.List(fields.Nested(DrillItemOut))
    next = fields.String(allow_none=True)


class TargetArgs(StrictSchema):
    unit = fields.String(required=True)
    year = fields.Integer(required=True)


class TargetIn(StrictSchema):
    unit = fields.String(required=True, metadata={"description": "Commune or province code"})
    year = fields.Integer(required=True, strict=True)
    indicator = fields.String(required=True, validate=validate.Length(min=1, max=64))
    target = fields.Integer(required=True, strict=True)


class TargetDeleteArgs(TargetArgs):
    indicator = fields.String(required=True, validate=validate.Length(min=1, max=64))


class TargetOut(Schema):
    unit = fields.String()
    year = fields.Integer()
    indicator = fields.String()
    target = fields.Integer()
    set_by = fields.Integer(allow_none=True)
    set_at = fields.DateTime()
    label = fields.String()


class PlanOut(Schema):
    indicator = fields.String()
    label = fields.String()
    kind = fields.String(metadata={"description": "people, count or percent"})
    plan = fields.Integer()
    source = fields.String(metadata={"description": "unit, communes, provinces or default"})
    units = fields.Integer(metadata={"description": "How many units' targets were summed"})


class TargetsOut(Schema):
    unit = fields.String()
    unit_label = fields.String()
    year = fields.Integer()
    targets = fields.List(fields.Nested(TargetOut))
    plan = fields.List(fields.Nested(PlanOut))


def is_central(who: Actor) -> bool:
    """The actor's agency type is of the central level (a ministry) in some definition: it
    reports on the whole country."""
    return any(
        (a := d.agency_types.get(who.agency_type)) is not None and a.level == "central"
        for d in ctx.services().registry.all()
    )


def allowed_unit(who: Actor, unit: str | None) -> str | None:
    """The unit ``who`` may report on (the rule of the API and the report pages): a unit their
    agency covers, or a commune of a province it covers; the system and central-level agencies
    may report on any unit, and no unit means the whole country for them, else the user's only
    unit. ValidationFailed for an unknown unit, NotPermitted outside the jurisdiction."""
    national = who.is_system or is_central(who)
    if unit is None:
        if national:
            return None
        if len(who.units) == 1:
            return next(iter(who.units))
        raise ValidationFailed("unit is required", errors={"unit": ["required"]})
    found = units.get(unit)
    if found is None:
        raise ValidationFailed(f"unknown unit {unit!r}", errors={"unit": ["unknown unit"]})
    if national or unit in who.units or found.province_code in who.units:
        return unit
    raise NotPermitted("the unit is outside your jurisdiction", unit=unit)


def _allowed_unit(unit: str | None) -> str | None:
    return allowed_unit(ctx.actor(), unit)


def _period(args: dict[str, Any]) -> tuple[date, date]:
    if args.get("period"):
        return period(args["period"])
    start, end = args.get("from_"), args.get("to")
    if start is None or end is None:
        raise ValidationFailed(
            "give period, or from and to", errors={"from": ["required"], "to": ["required"]}
        )
    return start, end


def _lang(args: dict[str, Any]) -> str:
    return args.get("lang") or ctx.lang()


@blp.route("/indicators")
@blp.arguments(IndicatorArgs, location="query")
@blp.response(200)
def get_indicators(args: dict[str, Any]) -> Any:
    """The indicators for ``unit`` between ``from`` and ``to`` (or for ``period``), with the
    plan targets, the monthly trend and the drill key of every figure."""
    unit = _allowed_unit(args.get("unit"))
    start, end = _period(args)
    services = ctx.services()
    with services.session_factory() as session:
        report = indicators(
            session,
            services.registry,
            unit,
            start,
            end,
            today=business_date(ctx.now()),
            calendar=services.cases.calendar,
            lang=_lang(args),
        )
    if args["format"] == "json":
        return report
    content, media = export(report, args["format"])
    name = f"bao-cao-{unit or 'toan-quoc'}-{start.isoformat()}-{end.isoformat()}.{args['format']}"
    return Response(
        content, mimetype=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@blp.route("/cases")
@blp.arguments(DrillArgs, location="query")
@blp.response(200, DrillOut)
def get_cases(args: dict[str, Any]) -> dict[str, Any]:
    """The cases behind one figure of the report (``figure``: its drill key), newest first,
    one page at a time; ``count`` equals the figure. State agencies only."""
    services = ctx.services()
    who = ctx.actor()
    if not may_drill(who, services.registry):
        raise NotPermitted("your agency may not list the cases behind the figures")
    unit = _allowed_unit(args.get("unit"))
    start, end = _period(args)
    with services.session_factory() as session:
        page = drill(
            session,
            services.registry,
            unit,
            start,
            end,
            args["figure"],
            today=business_date(ctx.now()),
            actor=who,
            routed_states=services.cases.routed_states(who.agency_type),
            limit=args["limit"],
            cursor=args.get("cursor"),
        )
    if page["next"]:
        query = {k: v for k, v in request.args.items() if k != "cursor"} | {"cursor": page["next"]}
        page["next"] = url_for("reports.get_cases", _external=False, **query)
    return page


def _targets() -> Targets:
    services = ctx.services()
    return Targets(services.session_factory, services.registry)


@blp.route("/targets")
@blp.arguments(TargetArgs, location="query")
@blp.response(200, TargetsOut)
def get_targets(args: dict[str, Any]) -> dict[str, Any]:
    """A unit's own targets for a year and its plan per indicator (administrators)."""
    return _targets().show(ctx.actor(), args["unit"], args["year"], lang=ctx.lang())


@blp.route("/targets", methods=["PUT"])
@blp.arguments(TargetIn)
@blp.response(200, TargetOut)
def put_target(body: dict[str, Any]) -> dict[str, Any]:
    """Set (or replace) a target (administrators; audited)."""
    return _targets().set(
        ctx.actor(), body["unit"], body["year"], body["indicator"], body["target"], ctx.now()
    )


@blp.route("/targets", methods=["DELETE"])
@blp.arguments(TargetDeleteArgs, location="query")
@blp.response(204)
def delete_target(args: dict[str, Any]) -> None:
    """Remove a target (administrators; audited)."""
    if not _targets().delete(ctx.actor(), args["unit"], args["year"], args["indicator"], ctx.now()):
        raise NotFound("no such target", unit=args["unit"], year=args["year"])
