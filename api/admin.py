"""Administration: audit verification and the access log (administrators only)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from api import context as ctx
from api.schemas import AccessLogArgs, AccessLogOut, VerifyOut
from workflow.errors import NotPermitted

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
