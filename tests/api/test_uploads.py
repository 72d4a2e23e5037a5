"""Document uploads over HTTP: stored content-addressed, sniffed, size-limited; every refusal
is a clear 4xx problem that leaves no document row, no audit event and no blob behind."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from workflow.model import AuditEvent, Document

from .conftest import (
    ApiUsers,
    Caller,
    assert_problem,
    count_rows,
    definition,
    doc_bytes,
    error_fields,
    open_case,
)

ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def blobs(app: Flask) -> set[Path]:
    root = app.extensions["rehabflow"].settings.blob_dir
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def padded_pdf(size: int) -> bytes:
    head = doc_bytes("big")
    return head + b"%" * (size - len(head))


@pytest.fixture
def officer(users: ApiUsers) -> Caller:
    return users.officer()


@pytest.fixture
def case_id(officer: Caller) -> int:
    return open_case(officer)


def test_upload_and_download_round_trip(app: Flask, officer: Caller, case_id: int) -> None:
    content = doc_bytes("citizen_id_copy")
    r = officer.upload(case_id, "citizen_id_copy", content, note="bản sao có chứng thực")
    assert r.status_code == 201, r.get_json()
    doc = r.get_json()
    assert {"id", "type", "sha256", "size", "media_type"} <= set(doc)
    assert doc["type"] == "citizen_id_copy"
    assert doc["sha256"] == hashlib.sha256(content).hexdigest()
    assert doc["size"] == len(content)
    assert doc["media_type"] == "application/pdf"
    url = f"/api/v1/cases/{case_id}/documents/{doc['id']}/content"
    assert r.headers["Location"].endswith(url)

    got = officer.get(url)
    assert got.status_code == 200
    assert got.data == content
    assert got.mimetype == "application/pdf"
    assert hashlib.sha256(got.data).hexdigest() == doc["sha256"]
    assert got.headers["X-Content-SHA256"] == doc["sha256"]
    assert got.headers["Content-Disposition"].startswith("attachment")

    # content-addressed under REHABFLOW_DATA_DIR/blobs
    sha = doc["sha256"]
    stored = app.extensions["rehabflow"].settings.blob_dir / sha[:2] / sha[2:4] / sha
    assert stored.read_bytes() == content
    # the same bytes again: a second document, one blob
    again = officer.upload(case_id, "passport_copy", content).get_json()
    assert again["sha256"] == sha and again["id"] != doc["id"]
    assert blobs(app) == {stored}


def test_image_is_sniffed_from_the_bytes_not_the_claim(officer: Caller, case_id: int) -> None:
    r = officer.upload(
        case_id, "citizen_id_copy", png(), filename="scan.pdf", claimed="application/pdf"
    )
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["media_type"] == "image/png"


RefusedUpload = Callable[[Caller, int], object]

REFUSALS: dict[str, tuple[RefusedUpload, int]] = {
    # citizen_id_copy accepts at most 10 MB
    "over the type's max size": (
        lambda c, i: c.upload(i, "citizen_id_copy", padded_pdf(10 * 1024 * 1024 + 1)),
        422,
    ),
    "ELF executable named .pdf": (
        lambda c, i: c.upload(i, "citizen_id_copy", ELF, filename="cccd.pdf"),
        422,
    ),
    "PE executable named .pdf": (
        lambda c, i: c.upload(i, "citizen_id_copy", PE, filename="cccd.pdf"),
        422,
    ),
    "plain text named .pdf": (
        lambda c, i: c.upload(i, "citizen_id_copy", b"just some text\n" * 20),
        422,
    ),
    "empty file": (lambda c, i: c.upload(i, "citizen_id_copy", b""), 422),
    "unknown document type": (lambda c, i: c.upload(i, "no_such_type", doc_bytes("x")), 422),
    "missing file field": (lambda c, i: c.upload(i, "citizen_id_copy", None), 422),
    "missing type field": (lambda c, i: c.upload(i, None, doc_bytes("x")), 422),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused_uploads_store_nothing(
    app: Flask, officer: Caller, case_id: int, name: str
) -> None:
    call, status = REFUSALS[name]
    before = (count_rows(app, Document, AuditEvent), blobs(app))
    body = assert_problem(call(officer, case_id), status)
    field = {"missing type field": "type", "unknown document type": "type"}.get(name, "file")
    # the problem says which part of the request is wrong
    assert body.get("field") == field or field in error_fields(body.get("errors")), body
    assert (count_rows(app, Document, AuditEvent), blobs(app)) == before
    case = officer.get(f"/api/v1/cases/{case_id}").get_json()
    assert case["documents"] == []


def test_unknown_type_lists_the_known_ones(app: Flask, officer: Caller, case_id: int) -> None:
    body = assert_problem(officer.upload(case_id, "no_such_type", doc_bytes("x")), 422)
    assert set(body["known"]) == set(definition(app).document_types)


def test_executable_refusal_names_the_accepted_types(officer: Caller, case_id: int) -> None:
    body = assert_problem(officer.upload(case_id, "citizen_id_copy", ELF), 422)
    assert set(body["accepted"]) == {"application/pdf", "image/jpeg", "image/png"}


def test_over_max_content_length_is_413(make_app: Callable[..., Flask]) -> None:
    app = make_app(MAX_CONTENT_LENGTH=256 * 1024)
    officer = ApiUsers(app).officer()
    case_id = open_case(officer)
    before = (count_rows(app, Document, AuditEvent), blobs(app))
    body = assert_problem(officer.upload(case_id, "citizen_id_copy", padded_pdf(300 * 1024)), 413)
    assert "Traceback" not in body["detail"]
    assert (count_rows(app, Document, AuditEvent), blobs(app)) == before
    # under the limit it goes through
    assert officer.upload(case_id, "citizen_id_copy", padded_pdf(200 * 1024)).status_code == 201


def test_revoked_document_stays_downloadable_but_no_longer_counts(
    app: Flask, officer: Caller, case_id: int
) -> None:
    content = doc_bytes("determination_request")
    doc = officer.upload(case_id, "determination_request", content).get_json()
    base = f"/api/v1/cases/{case_id}"
    offered = {a["key"]: a for a in officer.get(base).get_json()["available_transitions"]}
    assert offered["request_determination"]["missing_documents"] == []

    # a reason is required
    body = assert_problem(officer.post(f"{base}/documents/{doc['id']}/revoke", {}), 422)
    assert "reason" in error_fields(body["errors"])
    body = assert_problem(
        officer.post(f"{base}/documents/{doc['id']}/revoke", {"reason": "   "}), 422
    )
    assert "reason" in error_fields(body["errors"])

    r = officer.post(f"{base}/documents/{doc['id']}/revoke", {"reason": "bản scan bị mờ"})
    assert r.status_code == 200, r.get_json()
    assert (r.get_json()["revoked"], r.get_json()["revoke_reason"]) == (True, "bản scan bị mờ")

    got = officer.get(f"{base}/documents/{doc['id']}/content")
    assert (got.status_code, got.data) == (200, content)
    case = officer.get(base).get_json()
    assert [(d["id"], d["revoked"]) for d in case["documents"]] == [(doc["id"], True)]
    offered = {a["key"]: a for a in case["available_transitions"]}
    assert offered["request_determination"]["missing_documents"] == ["determination_request"]
    data = {"request_date": "2025-06-02", "reason": "own_request"}
    body = assert_problem(officer.fire(case_id, "request_determination", data), 422)
    assert body["missing_documents"] == ["determination_request"]
    assert count_rows(app, Document)["documents"] == 1  # never deleted
    audit = [e["action"] for e in officer.get(f"{base}/audit").get_json()]
    assert audit.count("document.revoked") == 1

    # unknown document of this case -> 404
    assert_problem(officer.post(f"{base}/documents/999999/revoke", {"reason": "x"}), 404)
    assert_problem(officer.get(f"{base}/documents/999999/content"), 404)


def test_document_of_another_case_is_not_reachable_through_this_one(
    officer: Caller, case_id: int
) -> None:
    other = open_case(officer)
    doc = officer.upload(other, "citizen_id_copy", doc_bytes("other")).get_json()
    assert_problem(officer.get(f"/api/v1/cases/{case_id}/documents/{doc['id']}/content"), 404)
    assert_problem(
        officer.post(f"/api/v1/cases/{case_id}/documents/{doc['id']}/revoke", {"reason": "x"}),
        404,
    )
