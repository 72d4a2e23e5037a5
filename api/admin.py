"""Administration: audit verification and the access log (administrators only)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import select

from api import context as ctx
from api.blueprint import Blueprint
from api.schemas import AccessLogArgs, AccessLogOut, StrictSchema, VerifyOut
from workflow.errors import NotPermitted
from workflow.model import Delivery

blp = Blueprint("admin", __name__, url_prefix="/api/v1", description="Administration")


@blp.route("/audit/verify")
@blp.response(200, VerifyOut)
def verify_audit() -> dict[str, Any]:
    """Recompute the audit hash chain."""
    if not ctx.actor().is_admin:
        raise NotPermitted("only administrators may verify the audit log")
    r = ctx.services().cases.verify_audit()
    return {
        "ok": r.ok,
        "checked": r.checked,
        "first_bad_event": r.first_bad_seq,
        "reason": r.reason,
    }


@blp.route("/access-log")
@blp.arguments(AccessLogArgs, location="query")
@blp.response(200, AccessLogOut(many=True))
def access_log(args: dict[str, Any]) -> list[Any]:
    """Who read which case or document, and when."""
    return ctx.services().cases.access_log(ctx.actor(), args.get("case"), args["limit"])


class DeliveryArgs(StrictSchema):
    status = fields.String(
        load_default="dead", validate=validate.OneOf(["queued", "retry", "dead", "delivered"])
    )
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class DeliveryOut(Schema):
    id = fields.Integer()
    message_id = fields.String()
    agency_id = fields.Integer()
    channel = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime()


@blp.route("/deliveries")
@blp.arguments(DeliveryArgs, location="query")
@blp.response(200, DeliveryOut(many=True))
def deliveries(args: dict[str, Any]) -> list[Any]:
    """Notification deliveries by status (default: the dead-letter list)."""
    if not ctx.actor().is_admin:
        raise NotPermitted("only administrators may list deliveries")
    with ctx.services().session_factory() as s:
        return list(
            s.execute(
                select(Delivery)
                .where(Delivery.status == args["status"])
                .order_by(Delivery.id.desc())
                .limit(args["limit"])
            ).scalars()
        )
