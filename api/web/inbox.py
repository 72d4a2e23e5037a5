"""The agency's inbox: notifications with the unread count; mark one or all read."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from api import context as ctx
from api.web.auth import worklist
from api.web.blueprint import bp

PAGE_SIZE = 50


@bp.route("/inbox")
def inbox() -> Any:
    unread_only = request.args.get("unread") == "1"
    raw = request.args.get("before", "")
    before = int(raw) if raw.isdigit() and len(raw) < 19 else None
    items, more = worklist().inbox(
        ctx.actor(), unread_only=unread_only, before=before, limit=PAGE_SIZE
    )
    query = {"unread": "1"} if unread_only else {}
    return render_template(
        "web/inbox.html",
        items=items,
        unread_only=unread_only,
        next_url=url_for("web.inbox", before=more, **query) if more else None,
        first_url=url_for("web.inbox", **query) if before else None,
    )


@bp.route("/inbox/<int:item_id>/read", methods=["POST"])
def inbox_read(item_id: int) -> Any:
    worklist().mark_read(ctx.actor(), item_id, ctx.now())
    return redirect(url_for("web.inbox") + f"#item-{item_id}", code=303)


@bp.route("/inbox/read-all", methods=["POST"])
def inbox_read_all() -> Any:
    n = worklist().mark_read(ctx.actor(), None, ctx.now())
    flash(_("%(n)s messages marked as read.", n=n), "success")
    return redirect(url_for("web.inbox"), code=303)
