"""/api/v1/inbox: the in-app notifications of the caller's agency."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

from api import context as ctx
from api.blueprint import Blueprint
from api.schemas import StrictSchema
from workflow.errors import NotFound
from workflow.model import InboxItem

blp = Blueprint("inbox", __name__, url_prefix="/api/v1/inbox", description="Agency inbox")


class InboxArgs(StrictSchema):
    unread = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    before = fields.Integer(metadata={"description": "id of the last item of the previous page"})


class InboxItemOut(Schema):
    id = fields.Integer()
    message_id = fields.String()
    case_id = fields.Integer(allow_none=True)
    topic = fields.String()
    subject = fields.String()
    body = fields.String()
    created_at = fields.DateTime()
    read_at = fields.DateTime(allow_none=True)


class InboxPageOut(Schema):
    unread = fields.Integer()
    items = fields.List(fields.Nested(InboxItemOut))


def _agency_id() -> int:
    actor = ctx.actor()
    if actor.agency_id is None:
        raise NotFound("no inbox")
    return actor.agency_id


@blp.route("")
@blp.arguments(InboxArgs, location="query")
@blp.response(200, InboxPageOut)
def list_inbox(args: dict[str, Any]) -> dict[str, Any]:
    """Newest first; ``unread=true`` for unread items only."""
    agency_id = _agency_id()
    with ctx.services().session_factory() as s:
        stmt = select(InboxItem).where(InboxItem.agency_id == agency_id)
        if args["unread"]:
            stmt = stmt.where(InboxItem.read_at.is_(None))
        if args.get("before"):
            stmt = stmt.where(InboxItem.id < args["before"])
        items = s.execute(stmt.order_by(InboxItem.id.desc()).limit(args["limit"])).scalars().all()
        unread = s.scalar(
            select(func.count())
            .select_from(InboxItem)
            .where(InboxItem.agency_id == agency_id, InboxItem.read_at.is_(None))
        )
    return {"unread": unread, "items": items}


@blp.route("/<int:item_id>/read", methods=["POST"])
@blp.response(200, InboxItemOut)
def mark_read(item_id: int) -> InboxItem:
    """Mark one item read (by the caller)."""
    agency_id = _agency_id()
    with ctx.services().session_factory() as s:
        item = s.get(InboxItem, item_id)
        if item is None or item.agency_id != agency_id:
            raise NotFound(f"inbox item {item_id} not found")
        if item.read_at is None:
            item.read_at, item.read_by = ctx.now(), ctx.actor().user_id
            s.commit()
            s.refresh(item)
        return item
