"""Upload in place: a transition or activity form is one multipart form whose file inputs (one
per missing required document) are attached and then the step fired, in one POST; a refusal of
a file or of the step keeps what was typed, shows the files accepted as attached and says why in
Vietnamese."""

from __future__ import annotations

import io
import re
from datetime import date
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from workflow.model import AuditEvent, Case, Document
from workflow.simulate import fake_pdf

from ..conftest import Clock
from .conftest import Browser, People, attach, text, to_addicted

DOC = "Văn bản đề nghị xác định tình trạng nghiện ma túy"
TRANSITION = "Đề nghị xác định tình trạng nghiện ma túy"
URL = "/cases/{}/transitions/request_determination"
ANCHOR = "t-request_determination"
FORM = {"request_date": "02/06/2025", "reason": "own_request"}
ATTACHED = "Đã đính kèm vào hồ sơ (vẫn được lưu dù bước này chưa được thực hiện): "
HOME_FORM = "Đơn đăng ký cai nghiện ma túy tự nguyện tại gia đình, cộng đồng"


def _state(app: Flask, case_id: int) -> str:
    with app.extensions["rehabflow"].session_factory() as s:
        return s.get(Case, case_id).state


def _count(app: Flask, model: Any, **where: Any) -> int:
    with app.extensions["rehabflow"].session_factory() as s:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return s.execute(stmt).scalar_one()


def _card(resp: TestResponse, anchor: str = ANCHOR) -> str:
    return resp.get_data(as_text=True).split(f'id="{anchor}"', 1)[1].split("</section>", 1)[0]


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def send(
    b: Browser, url: str, data: dict[str, str], files: dict[str, tuple[bytes, str]], **kw: Any
) -> TestResponse:
    """Post a card's form as a browser does (multipart, each file input a part)."""
    body: dict[str, Any] = dict(data)
    for name, (content, filename) in files.items():
        body[name] = (io.BytesIO(content), filename)
    return b.post(url, body, content_type="multipart/form-data", **kw)


@pytest.fixture
def case_id(open_case) -> int:  # noqa: ANN001
    return open_case().case_id


@pytest.fixture
def officer(people: People) -> Browser:
    return people.officer().login()


class TestTransitionWithItsDocument:
    def test_one_post_attaches_and_fires(self, app: Flask, officer: Browser, case_id: int) -> None:
        resp = send(officer, URL.format(case_id), FORM, {"doc-0": (fake_pdf("đề nghị"), "a.pdf")})
        assert resp.status_code == 303
        assert resp.headers["Location"] == f"/cases/{case_id}#timeline"
        assert _state(app, case_id) == "addiction_determination"
        with app.extensions["rehabflow"].session_factory() as s:
            doc = s.execute(select(Document).where(Document.case_id == case_id)).scalar_one()
            actions = list(
                s.execute(
                    select(AuditEvent.action)
                    .where(AuditEvent.case_id == case_id)
                    .order_by(AuditEvent.seq)
                ).scalars()
            )
        assert (doc.type, doc.filename, doc.media_type) == (
            "determination_request",
            "a.pdf",
            "application/pdf",
        )
        assert actions == ["case.opened", "document.attached", "transition:request_determination"]
        page = text(officer.get(f"/cases/{case_id}"))
        assert f"Đã tải lên: {DOC}." in page
        assert f"Đã thực hiện: {TRANSITION}." in page
        # the timeline: the transition, its change of state and who, then the upload
        assert (
            f"{TRANSITION} Phát hiện sử dụng trái phép chất ma túy → Đang xác định tình trạng "
            "nghiện ma túy Cán bộ officer" in page
        )
        assert f"Đính kèm giấy tờ: {DOC}" in page

    def test_a_refused_step_keeps_the_input_and_shows_the_document_attached(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        resp = send(
            officer,
            URL.format(case_id),
            {"request_date": "31/02/2025", "reason": "own_request"},
            {"doc-0": (fake_pdf("đề nghị"), "de-nghi.pdf")},
        )
        assert resp.status_code == 422
        card = _card(resp)
        assert 'value="31/02/2025"' in card  # what was typed
        assert '<option value="own_request" selected>' in card
        assert "Nhập ngày theo dạng dd/mm/yyyy, ví dụ 25/11/2026." in card
        assert f"{ATTACHED}{DOC}." in _text(card)
        assert '<span class="tick yes" aria-hidden="true">✓</span>' in card  # now ticked
        assert 'name="doc-0"' not in card  # nothing left to choose for it
        assert _count(app, Document, case_id=case_id) == 1
        assert _state(app, case_id) == "detected"
        # sent again with the date corrected (and no file): done
        resp = send(officer, URL.format(case_id), FORM, {"doc-0": (b"", "")})
        assert resp.status_code == 303
        assert _state(app, case_id) == "addiction_determination"
        assert _count(app, Document, case_id=case_id) == 1

    def test_no_file_chosen_is_a_missing_document(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        # a browser sends an empty part for a file input left empty
        resp = send(officer, URL.format(case_id), FORM, {"doc-0": (b"", "")})
        assert resp.status_code == 422
        card = _card(resp)
        assert f"Thiếu giấy tờ bắt buộc: {DOC}." in _text(card)
        assert 'value="02/06/2025"' in card
        assert "Đã đính kèm vào hồ sơ" not in card

    def test_a_wrong_kind_of_file_is_refused_naming_the_document(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        resp = send(
            officer, URL.format(case_id), FORM, {"doc-0": (b"just some text\n", "note.pdf")}
        )
        assert resp.status_code == 422
        card = _card(resp)
        refusal = "Loại tệp này không được chấp nhận cho giấy tờ này. Chấp nhận: PDF, JPEG, PNG."
        assert f"{DOC}: {refusal}" in _text(card)
        # next to its input too, which is marked invalid
        field = card.split(f'<label for="{ANCHOR}-doc-0">', 1)[1].split("</div>", 1)[0]
        assert refusal in field
        assert 'aria-invalid="true"' in field
        assert 'value="02/06/2025"' in card and '<option value="own_request" selected>' in card
        assert _count(app, Document, case_id=case_id) == 0
        assert _state(app, case_id) == "detected"
        assert _count(app, AuditEvent, case_id=case_id) == 1  # case.opened only

    def test_in_english(self, app: Flask, officer: Browser, case_id: int) -> None:
        officer.post("/lang", {"lang": "en"})
        resp = send(officer, URL.format(case_id), FORM, {"doc-0": (b"text\n", "x.pdf")})
        assert resp.status_code == 422
        assert (
            "Request for addiction determination: This kind of file is not accepted for this "
            "document. Accepted: PDF, JPEG, PNG." in text(resp)
        )

    def test_a_second_send_does_not_upload_twice(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        page = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        idem = re.search(r'name="idem" value="([0-9a-f]{32})"', page).group(1)
        for _ in range(2):  # a double click
            resp = send(
                officer,
                URL.format(case_id),
                FORM | {"idem": idem},
                {"doc-0": (fake_pdf("hai lần"), "a.pdf")},
            )
            assert resp.status_code == 303
        assert _count(app, Document, case_id=case_id) == 1
        assert (
            _count(app, AuditEvent, case_id=case_id, action="transition:request_determination") == 1
        )

    def test_without_the_csrf_token_nothing_is_stored(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        body = FORM | {"doc-0": (io.BytesIO(fake_pdf("x")), "a.pdf"), "csrf_token": "forged"}
        resp = officer.client.post(
            URL.format(case_id), data=body, content_type="multipart/form-data"
        )
        assert resp.status_code == 400
        assert "Biểu mẫu đã hết hiệu lực" in text(resp)
        assert _count(app, Document, case_id=case_id) == 0
        assert _state(app, case_id) == "detected"


class TestSeveralDocuments:
    @pytest.fixture
    def minor(self, app: Flask, people: People, open_case, clock: Clock) -> int:  # noqa: ANN001
        case = open_case(name="Đỗ Văn Nhỏ", born=date(2010, 1, 1)).case_id
        to_addicted(app, case, people.officer().actor, clock())  # attaches the addiction result
        return case

    def test_a_guard_refusal_after_the_uploads(
        self, app: Flask, people: People, minor: int
    ) -> None:
        clerk = people.get("commune_pc", "officer").login()
        url = f"/cases/{minor}/transitions/register_voluntary_home"
        page = clerk.get(f"/cases/{minor}")
        card = _card(page, "t-register_voluntary_home")
        # the addiction result is attached; one input for the form, one for the identity paper
        assert 'name="doc-0"' in card and 'name="doc-1"' not in card and 'name="doc-2"' in card
        assert '<select id="t-register_voluntary_home-doc-2-type" name="doc-2-type">' in card
        resp = send(
            clerk,
            url,
            {
                "registration_date": "02/06/2025",
                "registered_by": "self",
                "doc-2-type": "birth_certificate",
            },
            {
                "doc-0": (fake_pdf("đơn"), "don.pdf"),
                "doc-2": (fake_pdf("giấy khai sinh"), "ks.pdf"),
            },
        )
        assert resp.status_code == 422
        card = _text(_card(resp, "t-register_voluntary_home"))
        assert "Người dưới 18 tuổi phải do người đại diện hợp pháp đăng ký" in card
        assert f"{ATTACHED}{HOME_FORM}; Bản sao giấy khai sinh." in card
        assert "02/06/2025" in _card(resp, "t-register_voluntary_home")
        with app.extensions["rehabflow"].session_factory() as s:
            types = set(s.execute(select(Document.type).where(Document.case_id == minor)).scalars())
        assert types == {
            "determination_request",
            "addiction_result",
            "voluntary_registration_form",
            "birth_certificate",
        }
        assert _state(app, minor) == "addicted"

    def test_a_file_too_large_is_refused_the_others_attached(
        self, app: Flask, people: People, minor: int
    ) -> None:
        clerk = people.get("commune_pc", "officer").login()
        big = fake_pdf("lớn") + b"0" * (10 * 1024 * 1024)  # the identity papers: 10 MB at most
        resp = send(
            clerk,
            f"/cases/{minor}/transitions/register_voluntary_home",
            {
                "registration_date": "02/06/2025",
                "registered_by": "legal_representative",
                "doc-2-type": "passport_copy",
            },
            {"doc-0": (fake_pdf("đơn"), "don.pdf"), "doc-2": (big, "hochieu.pdf")},
        )
        assert resp.status_code == 422
        html = _card(resp, "t-register_voluntary_home")
        card = _text(html)
        assert "Bản sao hộ chiếu: Tệp quá lớn (tối đa 10 MB)." in card
        assert f"{ATTACHED}{HOME_FORM}." in card
        assert '<option value="passport_copy" selected>' in html  # the choice is kept
        assert '<option value="legal_representative" selected>' in html
        assert _state(app, minor) == "addicted"  # not fired: a file was refused


class TestActivityWithItsDocument:
    @pytest.fixture
    def managed(self, app: Flask, people: People, case_id: int, clock: Clock) -> int:
        head = people.get("commune_pc", "head").actor
        for code in ("positive_test_result", "management_decision"):
            attach(app, case_id, code, head, clock())
        app.extensions["rehabflow"].cases.advance(
            case_id, "start_illegal_use_management", {"decision_date": "2025-06-02"}, head, clock()
        )
        return case_id

    def test_record_a_test_result_with_its_file(
        self, app: Flask, officer: Browser, managed: int
    ) -> None:
        resp = send(
            officer,
            f"/cases/{managed}/activities/drug_test_result",
            {"test_date": "02/06/2025", "result": "negative"},
            {"doc-0": (fake_pdf("xét nghiệm"), "xn.pdf")},
        )
        assert resp.status_code == 303
        assert _count(app, Document, case_id=managed, type="drug_test_result") == 1
        assert _count(app, AuditEvent, case_id=managed, action="activity:drug_test_result") == 1

    def test_a_changed_case_keeps_the_input_and_says_what_was_attached(
        self, app: Flask, officer: Browser, managed: int, people: People, clock: Clock
    ) -> None:
        page = officer.get(f"/cases/{managed}").get_data(as_text=True)
        stale = re.search(r'name="version" value="(\d+)"', page).group(1)
        # someone else records a check-in meanwhile
        app.extensions["rehabflow"].cases.record_activity(
            managed,
            "check_in",
            {"check_in_date": "2025-06-02", "result": "present"},
            people.get("commune_police", "officer").actor,
            clock(),
        )
        resp = send(
            officer,
            f"/cases/{managed}/activities/drug_test_result",
            {"test_date": "02/06/2025", "result": "positive", "version": stale},
            {"doc-0": (fake_pdf("xét nghiệm"), "xn.pdf")},
        )
        assert resp.status_code == 409
        page = text(resp)
        assert "Người khác vừa thay đổi hồ sơ này" in page
        assert f"{ATTACHED}Kết quả xét nghiệm chất ma túy." in page
        card = _card(resp, "a-drug_test_result")
        assert 'value="02/06/2025"' in card and '<option value="positive" selected>' in card
        assert _count(app, AuditEvent, case_id=managed, action="activity:drug_test_result") == 0
        assert _count(app, Document, case_id=managed, type="drug_test_result") == 1
