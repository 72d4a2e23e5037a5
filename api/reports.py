"""/api/v1/reports: the plans' indicators for a unit and a period (JSON, CSV or XLSX).

A user may ask for the units their agency covers: a commune agency for its commune, a province
agency for its province or any commune of it; the whole country (no unit) only the system.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import Schema, fields, validate

from api import context as ctx
from api.blueprint import Blueprint
from workflow import units
from workflow.calendar import business_date
from workflow.errors import NotPermitted, ValidationFailed
from workflow.report_export import export
from workflow.reports import indicators, period

blp = Blueprint(
    "reports",
    __name__,
    url_prefix="/api/v1/reports",
    description="Indicators of the local plans",
)


class IndicatorArgs(Schema):
    unit = fields.String(metadata={"description": "Commune or province code"})
    period = fields.String(metadata={"description": "YYYY, YYYYH1 or YYYYH2"})
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "xlsx"]))


def _allowed_unit(unit: str | None) -> str | None:
    who = ctx.actor()
    if unit is None:
        if who.is_system:
            return None
        if len(who.units) == 1:
            return next(iter(who.units))
        raise ValidationFailed("unit is required", errors={"unit": ["required"]})
    found = units.get(unit)
    if found is None:
        raise ValidationFailed(f"unknown unit {unit!r}", errors={"unit": ["unknown unit"]})
    if who.is_system or unit in who.units or found.province_code in who.units:
        return unit
    raise NotPermitted("the unit is outside your jurisdiction", unit=unit)


@blp.route("/indicators")
@blp.arguments(IndicatorArgs, location="query")
@blp.response(200)
def get_indicators(args: dict[str, Any]) -> Any:
    """The indicators for ``unit`` between ``from`` and ``to`` (or for ``period``)."""
    unit = _allowed_unit(args.get("unit"))
    if args.get("period"):
        start, end = period(args["period"])
    else:
        start, end = args.get("from_"), args.get("to")
        if start is None or end is None:
            raise ValidationFailed(
                "give period, or from and to", errors={"from": ["required"], "to": ["required"]}
            )
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
            lang=ctx.lang(),
        )
    if args["format"] == "json":
        return report
    content, media = export(report, args["format"])
    name = f"bao-cao-{unit or 'toan-quoc'}-{start.isoformat()}-{end.isoformat()}.{args['format']}"
    return Response(
        content, mimetype=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
