"""/api/v1/cases: cases, documents, transitions, activities and their audit trail.

Views only translate HTTP to service calls; every rule lives in workflow.service.
"""

from __future__ import annotations

from typing import Any

import filetype
from flask import Response, request, url_for
from flask_smorest.fields import Upload
from marshmallow import Schema, fields, validate

from api import context as ctx
from api.blueprint import Blueprint
from api.schemas import (
    AuditEventOut,
    CaseCreate,
    CaseListArgs,
    CaseOut,
    CasePageOut,
    CommandOut,
    DocumentOut,
    FormIn,
    RevokeIn,
)
from workflow.errors import InvalidDocument, ValidationFailed
from workflow.queries import CaseFilter
from workflow.service import SubjectData

blp = Blueprint(
    "cases",
    __name__,
    url_prefix="/api/v1/cases",
    description="Cases, documents, transitions and activities",
)


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _if_match() -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise ValidationFailed(
            'If-Match must be the case version, e.g. "3"', errors={"If-Match": ["not a version"]}
        )
    return int(value)


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 128:
        raise ValidationFailed(
            "Idempotency-Key must be 1-128 characters",
            errors={"Idempotency-Key": ["1-128 characters"]},
        )
    return key


@blp.route("")
@blp.arguments(CaseListArgs, location="query")
@blp.response(200, CasePageOut)
def list_cases(args: dict[str, Any]) -> dict[str, Any]:
    """List the cases of your jurisdiction (keyset pagination, newest first)."""
    f = CaseFilter(
        state=args.get("state"),
        group=args.get("group"),
        unit=args.get("unit"),
        overdue=args.get("overdue", False),
        q=args.get("q"),
    )
    service, who = ctx.services().cases, ctx.actor()
    rows, cursor = service.list_cases(
        who, f, ctx.now(), limit=args["limit"], cursor=args.get("cursor")
    )
    items = [
        {
            "id": c.id,
            "number": c.number,
            "state": c.state,
            "group": c.group,
            "version": c.version,
            "definition": {"key": c.definition_key, "version": c.definition_version},
            "unit_code": c.unit_code,
            "province_code": c.province_code,
            "opened_at": c.opened_at,
            "state_entered_at": c.state_entered_at,
            "closed_at": c.closed_at,
            "full_name": c.subject.full_name if service.shows_person(c, who) else None,
        }
        for c in rows
    ]
    nxt = None
    if cursor:
        query = {k: v for k, v in request.args.items() if k != "cursor"} | {"cursor": cursor}
        nxt = url_for("cases.list_cases", _external=False, **query)
    return {"items": items, "next": nxt}


@blp.route("", methods=["POST"])
@blp.arguments(CaseCreate)
@blp.response(201, CommandOut)
def create_case(body: dict[str, Any]) -> tuple[dict, int, dict]:
    """Open a case (version defaults to the one in force today)."""
    s = body["subject"]
    result = ctx.services().cases.open_case(
        SubjectData(
            full_name=s["full_name"],
            unit_code=s["unit_code"],
            date_of_birth=s.get("date_of_birth"),
            sex=s.get("sex"),
            national_id=s.get("national_id"),
            address=s.get("address"),
        ),
        ctx.actor(),
        ctx.now(),
        definition_key=body["definition"],
        version=body.get("version"),
        data=body["data"],
        idempotency_key=_idempotency_key(),
        lang=ctx.lang(),
    )
    headers = _etag(result.version) | {
        "Location": url_for("cases.get_case", case_id=result.case_id)
    }
    return result.to_dict(), 201, headers


@blp.route("/<int:case_id>")
@blp.response(200, CaseOut)
def get_case(case_id: int) -> tuple[dict, int, dict]:
    """A case with its deadlines, documents and what you may do next (the read is logged)."""
    details = ctx.services().cases.get_case(case_id, ctx.actor(), ctx.now())
    details["fields_"] = details.pop("fields")
    return details, 200, _etag(details["version"])


def _form_command(
    command: Any, case_id: int, key: str, body: dict[str, Any]
) -> tuple[dict, int, dict]:
    """A transition or an activity: the form, If-Match and Idempotency-Key of the request."""
    result = command(
        case_id,
        key,
        body["data"],
        ctx.actor(),
        ctx.now(),
        expected_version=_if_match(),
        idempotency_key=_idempotency_key(),
        lang=ctx.lang(),
    )
    return result.to_dict(), 200, _etag(result.version)


@blp.route("/<int:case_id>/transitions/<transition_key>", methods=["POST"])
@blp.arguments(FormIn)
@blp.response(200, CommandOut)
def fire_transition(
    body: dict[str, Any], case_id: int, transition_key: str
) -> tuple[dict, int, dict]:
    """Fire a transition; send If-Match: "<version>" to guard against lost updates."""
    return _form_command(ctx.services().cases.advance, case_id, transition_key, body)


@blp.route("/<int:case_id>/activities/<activity_key>", methods=["POST"])
@blp.arguments(FormIn)
@blp.response(200, CommandOut)
def record_activity(
    body: dict[str, Any], case_id: int, activity_key: str
) -> tuple[dict, int, dict]:
    """Record an activity (check-in, support given, ...)."""
    return _form_command(ctx.services().cases.record_activity, case_id, activity_key, body)


class UploadIn(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    note = fields.String(validate=validate.Length(max=1000))
    file = Upload(required=True)


def sniff(content: bytes) -> str | None:
    """The media type the bytes really are (never the one the client claims)."""
    kind = filetype.guess(content[:8192])
    return kind.mime if kind else None


@blp.route("/<int:case_id>/documents", methods=["POST"])
@blp.arguments(UploadIn, location="multipart")
@blp.response(201, DocumentOut)
def upload_document(form: dict[str, Any], case_id: int) -> tuple[dict, int, dict]:
    """Attach a document (multipart: type, file, optional note); its type is sniffed."""
    upload = form["file"]
    content = upload.read()
    if not content:
        raise InvalidDocument("the file is empty", field="file", document_type=form["type"])
    media_type = sniff(content)
    if media_type is None:
        raise InvalidDocument(
            "the file's content is not a recognised document type",
            field="file",
            document_type=form["type"],
        )
    doc = ctx.services().cases.attach_document(
        case_id,
        form["type"],
        content,
        ctx.actor(),
        ctx.now(),
        filename=(upload.filename or "file")[:255],
        media_type=media_type,
        note=form.get("note"),
    )
    body = {
        "id": doc.id,
        "type": doc.type,
        "filename": doc.filename,
        "media_type": doc.media_type,
        "size": doc.size,
        "sha256": doc.sha256,
        "uploaded_at": doc.uploaded_at,
        "revoked": False,
        "revoke_reason": None,
    }
    location = url_for("cases.download_document", case_id=case_id, doc_id=doc.id)
    return body, 201, {"Location": location}


@blp.route("/<int:case_id>/documents/<int:doc_id>/content")
@blp.response(
    200,
    {"format": "binary", "type": "string"},
    content_type="*/*",  # the type sniffed at upload (application/pdf, image/png, ...)
    description="The document's bytes, with the media type sniffed when it was uploaded",
)
def download_document(case_id: int, doc_id: int) -> Response:
    """Download a document's bytes (the read is logged)."""
    doc, content = ctx.services().cases.read_document(case_id, doc_id, ctx.actor(), ctx.now())
    resp = Response(content, mimetype=doc.media_type)
    resp.headers["Content-Disposition"] = f'attachment; filename="document-{doc.id}"'
    resp.headers["X-Content-SHA256"] = doc.sha256
    return resp


@blp.route("/<int:case_id>/documents/<int:doc_id>/revoke", methods=["POST"])
@blp.arguments(RevokeIn)
@blp.response(200, DocumentOut)
def revoke_document(body: dict[str, Any], case_id: int, doc_id: int) -> dict[str, Any]:
    """Revoke a document (documents are never deleted)."""
    doc = ctx.services().cases.revoke_document(
        case_id, doc_id, body["reason"], ctx.actor(), ctx.now()
    )
    return {
        "id": doc.id,
        "type": doc.type,
        "filename": doc.filename,
        "media_type": doc.media_type,
        "size": doc.size,
        "sha256": doc.sha256,
        "uploaded_at": doc.uploaded_at,
        "revoked": True,
        "revoke_reason": doc.revoke_reason,
    }


@blp.route("/<int:case_id>/audit")
@blp.response(200, AuditEventOut(many=True))
def case_audit(case_id: int) -> list[dict[str, Any]]:
    """The case's audit events, oldest first."""
    return [
        {
            "seq": e.seq,
            "at": e.at,
            "actor": e.actor,
            "agency": e.agency_type,
            "role": e.role,
            "action": e.action,
            "from_state": e.from_state,
            "to_state": e.to_state,
            "definition": e.definition,
            "data_hash": e.data_hash,
            "documents": e.documents,
            "extra": e.extra or {},
            "hash": e.hash,
            "prev_hash": e.prev_hash,
        }
        for e in ctx.services().cases.events(case_id, ctx.actor(), ctx.now())
    ]
