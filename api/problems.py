"""Every error under /api/ becomes RFC 9457 problem details, mapped in this one place."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from marshmallow import INCLUDE, Schema, fields
from werkzeug.exceptions import HTTPException

from workflow.errors import RehabflowError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
TYPE_BASE = "https://rehabflow.invalid/problems/"

TITLES = {
    400: "Yêu cầu không hợp lệ / Bad request",
    401: "Chưa xác thực / Unauthorized",
    403: "Không có quyền / Forbidden",
    404: "Không tìm thấy / Not found",
    405: "Phương thức không được phép / Method not allowed",
    409: "Xung đột / Conflict",
    412: "Phiên bản đã thay đổi / Precondition failed",
    413: "Tệp quá lớn / Payload too large",
    415: "Kiểu nội dung không được hỗ trợ / Unsupported media type",
    422: "Dữ liệu không hợp lệ / Unprocessable content",
    429: "Quá nhiều yêu cầu / Too many requests",
    500: "Lỗi máy chủ / Internal server error",
    503: "Dịch vụ tạm thời không sẵn sàng / Service unavailable",
}


class ProblemOut(Schema):
    """RFC 9457 problem details (documents every error response in the OpenAPI spec)."""

    class Meta:
        unknown = INCLUDE  # problem types add their own members (additionalProperties: true)

    type = fields.String(required=True, metadata={"format": "uri"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    instance = fields.String(metadata={"description": "the request path"})
    errors = fields.Dict(keys=fields.String(), metadata={"description": "422: field -> messages"})
    missing_documents = fields.List(
        fields.Raw(), metadata={"description": "422: document type codes still required"}
    )
    unmet_guards = fields.List(fields.Raw(), metadata={"description": "422: refusing guards"})


def problem(
    status: int, code: str, detail: str, headers: dict | None = None, **extra: Any
) -> Response:
    body = {
        "type": TYPE_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extra,
    }
    resp = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=PROBLEM)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def from_domain(exc: RehabflowError) -> Response:
    return problem(exc.status, exc.code, exc.message, **exc.details)


def from_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    extra: dict[str, Any] = {}
    messages = data.get("errors") or data.get("messages")
    if messages:
        # webargs nests by location ({"json": {...}}); flatten to field -> messages
        flat: dict[str, Any] = {}
        for location, fields in messages.items():
            if isinstance(fields, dict):
                flat.update(fields)
            else:
                flat[location] = fields
        extra["errors"] = flat
    code = {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "validation_failed",
        429: "too_many_requests",
    }.get(status, "http_error")
    detail = data.get("message") or exc.description or exc.name
    headers = dict(data.get("headers") or {})
    if status == 405 and exc.get_headers():
        headers.update({k: v for k, v in exc.get_headers() if k == "Allow"})
    return problem(status, code, detail, headers=headers, **extra)


def register(app: Flask) -> None:
    app.register_error_handler(RehabflowError, from_domain)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return from_http(exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal_error", "An unexpected error occurred; it was logged.")
