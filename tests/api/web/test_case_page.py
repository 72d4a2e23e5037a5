"""The case page and its forms: what is shown to whom, transitions from the definition's field
spec with their documents, uploads, revocations, activities, and every refusal re-rendered
with the typed values and a Vietnamese message."""

from __future__ import annotations

import re
from datetime import date

import pytest
from flask import Flask
from sqlalchemy import func, select

from workflow.model import AccessLog, AuditEvent, Document
from workflow.simulate import fake_pdf

from ..conftest import Clock
from .conftest import OTHER_COMMUNE, Browser, People, attach, text, to_addicted

DOC = "Văn bản đề nghị xác định tình trạng nghiện ma túy"
TRANSITION = "Đề nghị xác định tình trạng nghiện ma túy"
URL = "/cases/{}/transitions/request_determination"


def _state(app: Flask, case_id: int) -> str:
    from workflow.model import Case

    with app.extensions["rehabflow"].session_factory() as s:
        return s.get(Case, case_id).state


def _count(app: Flask, model, **where) -> int:  # noqa: ANN001, ANN003
    with app.extensions["rehabflow"].session_factory() as s:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return s.execute(stmt).scalar_one()


def _form(page: str, anchor: str) -> str:
    return page.split(f'id="{anchor}"', 1)[1].split("</section>", 1)[0]


def _version(page: str) -> str:
    return re.search(r'name="version" value="(\d+)"', page).group(1)


@pytest.fixture
def case_id(open_case) -> int:  # noqa: ANN001
    return open_case().case_id


@pytest.fixture
def officer(people: People) -> Browser:
    return people.officer().login()


class TestWhatIsShown:
    def test_the_case_in_vietnamese(self, app: Flask, officer: Browser, case_id: int) -> None:
        resp = officer.get(f"/cases/{case_id}")
        assert resp.status_code == 200
        page = text(resp)
        assert "Phát hiện sử dụng trái phép chất ma túy" in page  # the state, from the YAML
        assert "drug_rehab v2" in page
        assert "Trần Văn Bình" in page and "14/05/1990" in page and "040094001234" in page
        assert "Xã Đô Lương, Nghệ An" in page
        # the timeline: what, when (Vietnam time), who, which agency
        assert "Mở hồ sơ 02/06/2025 09:00" not in page  # newest first: when, then what
        assert "02/06/2025 09:00 Mở hồ sơ" in page
        assert (
            "Cán bộ officer (commune_police.officer.17662) · Công an cấp xã - Xã Đô Lương, "
            "Nghệ An · Cán bộ, công chức" in page
        )

    def test_the_diagram_is_inline_with_the_current_state(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        html = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        svg = re.search(r"<svg\b.*?</svg>", html, flags=re.S).group(0)
        assert re.search(r'<g id="state-detected" class="current" aria-current="step"', svg)
        assert "<style>" not in svg  # the page's CSP allows no inline style
        assert "Trạng thái hiện tại: Phát hiện sử dụng trái phép chất ma túy." in svg

    def test_reading_the_page_is_in_the_access_log(
        self, app: Flask, people: People, officer: Browser, case_id: int
    ) -> None:
        officer.get(f"/cases/{case_id}")
        assert _count(app, AccessLog, case_id=case_id, action="case.read") == 1

    def test_another_communes_case_is_not_found(
        self, app: Flask, officer: Browser, open_case
    ) -> None:  # noqa: ANN001
        other = open_case(unit=OTHER_COMMUNE).case_id
        for path in (f"/cases/{other}", f"/cases/{other}/documents/1", "/cases/987654"):
            resp = officer.get(path)
            assert resp.status_code == 404, path
            assert "Không tìm thấy" in text(resp)
        resp = officer.post(URL.format(other), {"request_date": "02/06/2025"})
        assert resp.status_code == 404
        assert _state(app, other) == "detected"
        assert officer.get("/cases/99999999999999999999999").status_code == 404

    def test_only_the_transitions_i_may_fire(
        self, app: Flask, people: People, officer: Browser, case_id: int
    ) -> None:
        page = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        assert 'id="t-request_determination"' in page
        assert 'id="t-start_illegal_use_management"' not in page  # commune chairman only
        chairman = people.get("commune_pc", "head").login()
        page = chairman.get(f"/cases/{case_id}").get_data(as_text=True)
        assert 'id="t-start_illegal_use_management"' in page
        assert 'id="t-request_determination"' not in page
        # and posting one anyway is refused
        resp = chairman.post(URL.format(case_id), {"request_date": "02/06/2025"})
        assert resp.status_code == 403
        assert "Cơ quan và vai trò của bạn không được thực hiện thao tác này." in text(resp)

    def test_form_from_the_field_spec_with_its_documents(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        page = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        form = _form(page, "t-request_determination")
        assert f"Còn thiếu giấy tờ: {DOC}." in form  # blocked by a document: says which
        assert '<span class="tick no" aria-hidden="true">✗</span>' in form
        assert '<label for="t-request_determination-request_date">Ngày đề nghị' in form
        assert 'placeholder="dd/mm/yyyy"' in form
        assert '<label for="t-request_determination-reason">Căn cứ đề nghị' in form
        assert '<option value="own_request">Tự nguyện đề nghị xác định</option>' in form
        # upload in place: one form, with a file input labelled with the missing document
        assert form.count("<form ") == 1
        assert 'enctype="multipart/form-data"' in form
        label = form.split('<label for="t-request_determination-doc-0">', 1)[1].split("</label>")[0]
        assert text_of(label) == f"✗ Còn thiếu: {DOC}"
        assert re.search(
            r'<input type="file" id="t-request_determination-doc-0" name="doc-0"', form
        )
        assert "Tệp PDF, JPEG, PNG, tối đa 20 MB" in form

    def test_no_step_for_a_family_member(self, app: Flask, people: People, case_id: int) -> None:
        family = people.get("family", "officer").login()
        page = text(family.get(f"/cases/{case_id}"))
        assert "cơ quan và vai trò của bạn không có bước nào cần thực hiện" in page


class TestTransition:
    def test_without_its_document_it_is_refused_and_the_input_kept(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        resp = officer.post(
            URL.format(case_id), {"request_date": "02/06/2025", "reason": "own_request"}
        )
        assert resp.status_code == 422
        page = resp.get_data(as_text=True)
        form = _form(page, "t-request_determination")
        assert f"Thiếu giấy tờ bắt buộc: {DOC}." in text_of(form)
        assert 'value="02/06/2025"' in form
        assert '<option value="own_request" selected>' in form
        assert "Biểu mẫu vừa gửi chưa được chấp nhận." in text(resp)
        assert _state(app, case_id) == "detected"

    def test_field_errors_in_vietnamese_keep_what_was_typed(
        self, app: Flask, officer: Browser, case_id: int
    ) -> None:
        resp = officer.post(URL.format(case_id), {"request_date": "31/02/2025", "reason": ""})
        assert resp.status_code == 422
        form = _form(resp.get_data(as_text=True), "t-request_determination")
        assert 'value="31/02/2025"' in form
        assert "Nhập ngày theo dạng dd/mm/yyyy, ví dụ 25/11/2026." in form
        assert "Trường này là bắt buộc." in form  # the engine's message for the reason
        assert 'aria-invalid="true"' in form
        assert "Một số trường chưa hợp lệ; xem bên dưới." in form

    def test_upload_in_place_then_fire(
        self, app: Flask, officer: Browser, case_id: int, clock: Clock
    ) -> None:
        resp = officer.upload(
            case_id,
            "determination_request",
            fake_pdf("request"),
            form="t-request_determination--up0",
        )
        assert resp.status_code == 303
        assert resp.headers["Location"] == f"/cases/{case_id}#t-request_determination"
        page = officer.get(f"/cases/{case_id}")
        assert f"Đã tải lên: {DOC}." in text(page)
        form = _form(page.get_data(as_text=True), "t-request_determination")
        assert '<span class="tick yes" aria-hidden="true">✓</span>' in form
        assert "Còn thiếu" not in form
        resp = officer.post(
            URL.format(case_id),
            {"request_date": "02/06/2025", "reason": "own_request"},
        )
        assert resp.status_code == 303
        assert resp.headers["Location"] == f"/cases/{case_id}#timeline"
        assert _state(app, case_id) == "addiction_determination"
        page = text(officer.get(f"/cases/{case_id}"))
        assert (
            f"Đã thực hiện: {TRANSITION}. Trạng thái hồ sơ hiện nay: "
            "Đang xác định tình trạng nghiện ma túy." in page
        )
        # the timeline entry: what, the change of state, who
        assert (
            f"{TRANSITION} Phát hiện sử dụng trái phép chất ma túy → Đang xác định tình trạng "
            "nghiện ma túy Cán bộ officer" in page
        )
        # the deadline it started, with working days left (Vietnamese calendar)
        assert "Thời hạn xác định tình trạng nghiện" in page
        assert re.search(r"Thời hạn xác định tình trạng nghiện \d\d/\d\d/2025 \d+", page)

    def test_a_changed_case_is_shown_again_with_the_input(
        self, app: Flask, officer: Browser, case_id: int, clock: Clock, people: People
    ) -> None:
        page = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        stale = _version(page)
        attach(app, case_id, "determination_request", people.officer().actor, clock())
        # someone else records something on the case meanwhile
        app.extensions["rehabflow"].cases.advance(
            case_id,
            "request_determination",
            {"request_date": "2025-06-02", "reason": "other"},
            people.get("commune_police", "head").actor,
            clock(),
        )
        resp = officer.post(
            URL.format(case_id),
            {"request_date": "02/06/2025", "reason": "own_request", "version": stale},
        )
        assert resp.status_code == 409
        page = text(resp)
        assert "Người khác vừa thay đổi hồ sơ này" in page
        assert _state(app, case_id) == "addiction_determination"

    def test_a_second_send_of_the_same_form_is_not_a_second_transition(
        self, app: Flask, officer: Browser, case_id: int, people: People, clock: Clock
    ) -> None:
        attach(app, case_id, "determination_request", people.officer().actor, clock())
        page = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        idem = re.search(r'name="idem" value="([0-9a-f]{32})"', page).group(1)
        data = {"request_date": "02/06/2025", "reason": "own_request", "idem": idem}
        assert officer.post(URL.format(case_id), data).status_code == 303
        assert officer.post(URL.format(case_id), data).status_code == 303  # a double click
        assert _count(app, AuditEvent, case_id=case_id, action="transition:request_determination")
        assert (
            _count(app, AuditEvent, case_id=case_id, action="transition:request_determination") == 1
        )
        # a new send without that key: the step is no longer possible
        resp = officer.post(URL.format(case_id), {"request_date": "02/06/2025"})
        assert resp.status_code == 409
        assert "Không thể thực hiện bước này ở trạng thái hiện tại" in text(resp)

    def test_a_guard_says_why(self, app: Flask, people: People, open_case, clock: Clock) -> None:  # noqa: ANN001
        minor = open_case(name="Đỗ Văn Nhỏ", born=date(2010, 1, 1)).case_id
        officer = people.officer().actor
        to_addicted(app, minor, officer, clock())
        for code in ("voluntary_registration_form", "citizen_id_copy"):
            attach(app, minor, code, officer, clock())
        clerk = people.get("commune_pc", "officer").login()
        resp = clerk.post(
            f"/cases/{minor}/transitions/register_voluntary_home",
            {"registration_date": "02/06/2025", "registered_by": "self"},
        )
        assert resp.status_code == 422
        form = _form(resp.get_data(as_text=True), "t-register_voluntary_home")
        assert "Người dưới 18 tuổi phải do người đại diện hợp pháp đăng ký" in form
        assert _state(app, minor) == "addicted"

    def test_in_english(self, app: Flask, officer: Browser, case_id: int) -> None:
        officer.post("/lang", {"lang": "en"})
        page = text(officer.get(f"/cases/{case_id}"))
        assert "Request addiction determination" in page and "Drug use detected" in page
        resp = officer.post(URL.format(case_id), {"request_date": "", "reason": ""})
        page = text(resp)
        assert "Missing required documents: Request for addiction determination." in page
        assert "This field is required." in page


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


class TestDocuments:
    def test_refused_uploads(self, app: Flask, officer: Browser, case_id: int) -> None:
        resp = officer.upload(case_id, "determination_request", b"just some text\n")
        assert resp.status_code == 422
        assert (
            "Loại tệp này không được chấp nhận cho giấy tờ này. Chấp nhận: PDF, JPEG, PNG."
            in text(resp)
        )
        resp = officer.post(
            f"/cases/{case_id}/documents",
            {"type": "determination_request", "form": "documents"},
            content_type="multipart/form-data",
        )
        assert resp.status_code == 422
        assert "Hãy chọn tệp để tải lên." in text(resp)
        resp = officer.upload(case_id, "no_such_type", fake_pdf("x"))
        assert resp.status_code == 422
        assert "Loại giấy tờ không tồn tại." in text(resp)
        assert _count(app, Document, case_id=case_id) == 0

    def test_download(self, app: Flask, officer: Browser, case_id: int) -> None:
        content = fake_pdf("tải xuống")
        officer.upload(case_id, "determination_request", content, note="bản chụp")
        with app.extensions["rehabflow"].session_factory() as s:
            doc = s.execute(select(Document)).scalar_one()
        assert doc.note == "bản chụp"
        page = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        assert f'href="/cases/{case_id}/documents/{doc.id}"' in page
        resp = officer.get(f"/cases/{case_id}/documents/{doc.id}")
        assert resp.status_code == 200
        assert resp.mimetype == "application/pdf"
        assert resp.data == content
        assert "attachment" in resp.headers["Content-Disposition"]
        assert _count(app, AccessLog, case_id=case_id, action="document.read") == 1

    def test_revoke(self, app: Flask, officer: Browser, case_id: int) -> None:
        officer.upload(case_id, "determination_request", fake_pdf("thu hồi"))
        with app.extensions["rehabflow"].session_factory() as s:
            doc_id = s.execute(select(Document.id)).scalar_one()
        url = f"/cases/{case_id}/documents/{doc_id}/revoke"
        resp = officer.post(url, {"reason": "  "})
        assert resp.status_code == 422
        assert "Hãy nêu lý do thu hồi giấy tờ." in text(resp)
        assert f'<details id="revoke-{doc_id}" open>' in resp.get_data(as_text=True)
        resp = officer.post(url, {"reason": "Bản chụp không rõ"})
        assert resp.status_code == 303
        page = officer.get(f"/cases/{case_id}")
        assert f"Đã thu hồi: {DOC}." in text(page)
        assert "Đã thu hồi Bản chụp không rõ" in text(page)
        assert f"Thu hồi giấy tờ: {DOC}" in text(page)  # in the timeline
        # the transition needs it again
        assert "Còn thiếu giấy tờ" in _form(page.get_data(as_text=True), "t-request_determination")

    def test_a_family_member_may_not_revoke(
        self, app: Flask, people: People, officer: Browser, case_id: int
    ) -> None:
        officer.upload(case_id, "determination_request", fake_pdf("gia đình"))
        with app.extensions["rehabflow"].session_factory() as s:
            doc_id = s.execute(select(Document.id)).scalar_one()
        family = people.get("family", "officer").login()
        resp = family.post(f"/cases/{case_id}/documents/{doc_id}/revoke", {"reason": "x"})
        assert resp.status_code == 403


class TestActivity:
    def test_record_a_movement_report(
        self, app: Flask, people: People, officer: Browser, case_id: int, clock: Clock
    ) -> None:
        to_addicted(app, case_id, people.officer().actor, clock())
        page = officer.get(f"/cases/{case_id}").get_data(as_text=True)
        assert "<summary>Ghi nhận di biến động</summary>" in page
        url = f"/cases/{case_id}/activities/movement_report"
        resp = officer.post(url, {"report_date": "03/06/2025", "location": "99999", "movement": ""})
        assert resp.status_code == 422
        form = _form(resp.get_data(as_text=True), "a-movement_report")
        assert "Mã đơn vị hành chính không tồn tại." in form
        assert "Trường này là bắt buộc." in form
        assert 'value="99999"' in form
        assert '<details id="a-movement_report-d" open>' in resp.get_data(as_text=True)
        resp = officer.post(
            url,
            {"report_date": "03/06/2025", "location": "17677", "movement": "Đi làm ăn xa"},
        )
        assert resp.status_code == 303
        page = text(officer.get(f"/cases/{case_id}"))
        assert "Đã ghi nhận: Ghi nhận di biến động." in page
        assert _count(app, AuditEvent, case_id=case_id, action="activity:movement_report") == 1


class TestHandedOver:
    def test_the_sending_commune_keeps_the_history_only(
        self, app: Flask, people: People, officer: Browser, case_id: int, clock: Clock
    ) -> None:
        to_addicted(app, case_id, people.officer().actor, clock())
        resp = officer.post(
            f"/cases/{case_id}/activities/change_residence",
            {"moved_date": "02/06/2025", "new_unit": OTHER_COMMUNE, "reason": "Chuyển nhà"},
        )
        assert resp.status_code == 303, text(resp)
        resp = officer.get(f"/cases/{case_id}")
        assert resp.status_code == 200
        page = text(resp)
        assert "Lịch sử hồ sơ đã chuyển đi" in page
        assert "Hồ sơ này đã được chuyển đến Xã Văn Hiến, Nghệ An." in page
        assert "Chuyển hồ sơ từ Xã Đô Lương, Nghệ An đến Xã Văn Hiến, Nghệ An" in page
        assert "Trần Văn Bình" not in page  # no personal data, no forms
        assert "/transitions/" not in resp.get_data(as_text=True)
        assert _count(app, AccessLog, case_id=case_id, action="case.history") == 1
        # the receiving commune has the whole case
        receiving = people.officer(OTHER_COMMUNE).login()
        page = text(receiving.get(f"/cases/{case_id}"))
        assert "Trần Văn Bình" in page and "Ghi nhận di biến động" in page
