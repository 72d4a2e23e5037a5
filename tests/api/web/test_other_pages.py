"""The new-case form, the inbox and the administration pages."""

from __future__ import annotations

import re
from datetime import date

import pytest
from flask import Flask
from sqlalchemy import select

from workflow.model import Case, Delivery, InboxItem, Subject

from ..conftest import Clock, assert_problem
from .conftest import OTHER_COMMUNE, Browser, People, text


class TestNewCase:
    def test_the_form(self, app: Flask, people: People) -> None:
        resp = people.officer().login().get("/cases/new")
        assert resp.status_code == 200
        page = text(resp)
        for label in ("Họ và tên", "Ngày sinh", "Giới tính", "Số định danh cá nhân"):
            assert label in page
        assert "Hồ sơ sẽ theo drug_rehab v2, phiên bản đang có hiệu lực hôm nay." in page
        html = resp.get_data(as_text=True)
        # the one commune the agency covers, by its name (vietnam-provinces)
        assert '<option value="17662">Xã Đô Lương, Nghệ An</option>' in html

    def test_open_a_case(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        resp = b.post(
            "/cases/new",
            {
                "full_name": "  Hoàng Thị Hạnh ",
                "date_of_birth": "7/3/1995",
                "sex": "female",
                "national_id": "040195004321",
                "address": "Xóm 3",
                "unit_code": "17662",
                "definition": "drug_rehab",
            },
        )
        assert resp.status_code == 303
        case_id = int(resp.headers["Location"].rsplit("/", 1)[1])
        page = text(b.get(resp.headers["Location"]))
        assert re.search(r"Đã mở hồ sơ 17662-2025-\d{6}\.", page)
        assert "Hoàng Thị Hạnh" in page and "07/03/1995" in page and "Nữ" in page
        with app.extensions["rehabflow"].session_factory() as s:
            case = s.get(Case, case_id)
            assert (case.state, case.definition_version) == ("detected", 2)
            assert case.subject.date_of_birth == date(1995, 3, 7)

    def test_errors_keep_what_was_typed(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        resp = b.post("/cases/new", {"full_name": "Lê Văn Tám", "date_of_birth": "32/13/1990"})
        assert resp.status_code == 422
        html = resp.get_data(as_text=True)
        assert "Nhập ngày theo dạng dd/mm/yyyy, ví dụ 25/11/2026." in text(resp)
        assert 'value="Lê Văn Tám"' in html and 'value="32/13/1990"' in html
        resp = b.post(
            "/cases/new",
            {"full_name": " ", "national_id": "123", "sex": "male", "unit_code": "17662"},
        )
        assert resp.status_code == 422
        page = text(resp)
        assert "Chưa mở được hồ sơ. Hãy sửa các trường được đánh dấu bên dưới." in page
        assert "Họ tên là bắt buộc." in page
        assert "Số định danh phải có 12 (hoặc 9) chữ số." in page
        html = resp.get_data(as_text=True)
        assert 'value="123"' in html and '<option value="male" selected>' in html
        with app.extensions["rehabflow"].session_factory() as s:
            assert s.execute(select(Subject)).first() is None

    def test_errors_in_english(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        b.post("/lang", {"lang": "en"})
        resp = b.post("/cases/new", {"full_name": "", "unit_code": "17662"})
        assert resp.status_code == 422
        assert "Full name is required." in text(resp)

    def test_a_commune_outside_my_jurisdiction(self, app: Flask, people: People) -> None:
        resp = (
            people.officer()
            .login()
            .post("/cases/new", {"full_name": "Lê Văn Tám", "unit_code": OTHER_COMMUNE})
        )
        assert resp.status_code == 403
        assert "Không có quyền" in text(resp)


@pytest.fixture
def inbox(app: Flask, people: People, clock: Clock) -> dict[str, int]:
    mine, theirs = people.officer().actor.agency_id, people.get("commune_pc", "head").actor
    ids = {}
    with app.extensions["rehabflow"].session_factory() as s:
        for key, agency, subject in (
            ("a", mine, "Hồ sơ số 1 vừa có cập nhật"),
            ("b", mine, "Nhắc hạn: Thời hạn đọc hồ sơ"),
            ("c", theirs.agency_id, "Thư của cơ quan khác"),
        ):
            item = InboxItem(
                message_id=key, agency_id=agency, case_id=None, topic="t", subject=subject,
                body="Kính gửi quý cơ quan,\nNội dung.", created_at=clock(),
            )  # fmt: skip
            s.add(item)
            s.flush()
            ids[key] = item.id
        s.commit()
    return ids


class TestInbox:
    def test_list_and_mark_read(self, app: Flask, people: People, inbox: dict[str, int]) -> None:
        b = people.officer().login()
        resp = b.get("/inbox")
        page = text(resp)
        assert "Cơ quan của bạn có 2 thư chưa đọc" in page
        assert "Nhắc hạn: Thời hạn đọc hồ sơ" in page
        assert "Thư của cơ quan khác" not in page
        resp = b.post(f"/inbox/{inbox['a']}/read")
        assert resp.status_code == 303
        page = text(b.get("/inbox"))
        assert "Cơ quan của bạn có 1 thư chưa đọc" in page
        assert "đã đọc lúc 02/06/2025 09:00" in page
        unread = text(b.get("/inbox", query_string={"unread": "1"}))
        assert "Nhắc hạn" in unread and "Hồ sơ số 1 vừa có cập nhật" not in unread
        assert b.post("/inbox/read-all").status_code == 303
        assert "Đã đánh dấu 1 thư là đã đọc." in text(b.get("/inbox"))

    def test_another_agencys_item(self, app: Flask, people: People, inbox: dict[str, int]) -> None:
        b = people.officer().login()
        resp = b.post(f"/inbox/{inbox['c']}/read")
        assert resp.status_code == 404
        with app.extensions["rehabflow"].session_factory() as s:
            assert s.get(InboxItem, inbox["c"]).read_at is None


ADMIN_PAGES = (
    "/admin",
    "/admin/users",
    "/admin/agencies",
    "/admin/tokens",
    "/admin/deliveries",
    "/admin/access-log",
)


class TestAdministration:
    def test_only_for_administrators(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        for path in ADMIN_PAGES:
            resp = b.get(path)
            assert resp.status_code == 403, path
            assert "Cơ quan và vai trò của bạn không được thực hiện thao tác này." in text(resp)
        assert b.post("/admin/users", {"username": "x"}).status_code == 403
        assert b.post("/admin/tokens", {"username": "x"}).status_code == 403
        assert "Quản trị" not in text(b.get("/"))
        admin = people.admin().login()
        assert "Quản trị" in text(admin.get("/"))
        for path in ADMIN_PAGES[1:]:
            assert admin.get(path).status_code == 200, path

    def test_create_a_user_who_can_sign_in(self, app: Flask, people: People) -> None:
        admin = people.admin().login()
        form = {
            "username": "ytexa.bacsi",
            "full_name": "Bác sĩ Nguyễn Thị Lan",
            "agency_type": "health_facility",
            "role": "doctor",
            "unit_code": "40",
            "password": "mật-khẩu-mới-12",
        }
        resp = admin.post("/admin/users", form)
        assert resp.status_code == 303
        assert "Đã tạo người dùng ytexa.bacsi." in text(admin.get("/admin/users"))
        b = Browser(app)
        b.login("ytexa.bacsi", "mật-khẩu-mới-12")
        assert "Bác sĩ Nguyễn Thị Lan" in text(b.get("/"))

    def test_user_errors_keep_input_but_not_the_password(self, app: Flask, people: People) -> None:
        admin = people.admin().login()
        taken = people.officer().username
        resp = admin.post(
            "/admin/users",
            {
                "username": taken,
                "full_name": "Ai đó",
                "agency_type": "commune_police",
                "role": "officer",
                "unit_code": "99",
                "password": "ngắn",
            },
        )
        assert resp.status_code == 422
        page = text(resp)
        assert "Mã xã, phường hoặc tỉnh không tồn tại." in page
        assert "Tối thiểu 10 ký tự." in page
        html = resp.get_data(as_text=True)
        assert 'value="Ai đó"' in html and 'value="99"' in html and "ngắn" not in html
        resp = admin.post(
            "/admin/users",
            {
                "username": taken,
                "agency_type": "commune_police",
                "role": "officer",
                "unit_code": "17662",
                "password": "đủ-dài-rồi-123",
            },
        )
        assert resp.status_code == 422
        assert "Tên đăng nhập này đã có người dùng." in text(resp)

    def test_agencies(self, app: Flask, people: People) -> None:
        people.get("health_facility", "doctor", "40")
        page = text(people.admin().login().get("/admin/agencies"))
        assert "Ủy ban nhân dân cấp xã - Xã Đô Lương, Nghệ An" in page
        assert "Xã Đô Lương, Nghệ An (17662)" in page and "Nghệ An (40)" in page

    def test_tokens_shown_once_and_revoked(self, app: Flask, people: People) -> None:
        admin = people.admin().login()
        officer = people.officer()
        resp = admin.post("/admin/tokens", {"username": officer.username, "expires_days": "30"})
        assert resp.status_code == 201
        token = re.search(r'<code class="token">(rf_[^<]+)</code>', resp.get_data(True)).group(1)
        assert "chỉ hiển thị một lần" in text(resp)
        auth = {"Authorization": f"Bearer {token}"}
        assert admin.get("/api/v1/cases", headers=auth).status_code == 200
        listing = admin.get("/admin/tokens").get_data(as_text=True)
        assert token not in listing and token[:10] in listing
        token_id = re.search(r"/admin/tokens/(\d+)/revoke", listing).group(1)
        assert admin.post(f"/admin/tokens/{token_id}/revoke").status_code == 303
        assert f"Đã thu hồi mã truy cập {token_id}." in text(admin.get("/admin/tokens"))
        assert_problem(admin.get("/api/v1/cases", headers=auth), 401)

    def test_token_errors(self, app: Flask, people: People) -> None:
        admin = people.admin().login()
        resp = admin.post("/admin/tokens", {"username": "khong.co", "expires_days": "30"})
        assert resp.status_code == 422
        assert "Không có người dùng này." in text(resp)
        resp = admin.post("/admin/tokens", {"username": "x", "expires_days": "0"})
        assert resp.status_code == 422
        assert "Số ngày từ 1 đến 3650." in text(resp)

    def test_dead_letters_and_retry(self, app: Flask, people: People, clock: Clock) -> None:
        admin = people.admin()
        with app.extensions["rehabflow"].session_factory() as s:
            d = Delivery(
                message_id="m-1", agency_id=admin.actor.agency_id, channel="webhook",
                status="dead", attempts=6, last_error="HTTP 500", created_at=clock(),
                updated_at=clock(),
            )  # fmt: skip
            s.add(d)
            s.commit()
            delivery_id = d.id
        b = admin.login()
        page = text(b.get("/admin/deliveries"))
        assert "HTTP 500" in page and "webhook" in page
        resp = b.post(f"/admin/deliveries/{delivery_id}/retry")
        assert resp.status_code == 303
        assert f"Thông báo {delivery_id} sẽ được gửi lại" in text(b.get("/admin/deliveries"))
        with app.extensions["rehabflow"].session_factory() as s:
            d = s.get(Delivery, delivery_id)
            assert (d.status, d.attempts, d.next_attempt_at) == ("retry", 0, clock())
        assert "Không có thông báo gửi lỗi." in text(b.get("/admin/deliveries"))

    def test_access_log(self, app: Flask, people: People, open_case) -> None:  # noqa: ANN001
        first, second = open_case().case_id, open_case(name="Lê Thị Cúc").case_id
        officer = people.officer().login()
        officer.get(f"/cases/{first}")
        officer.get(f"/cases/{second}")
        admin = people.admin().login()
        page = text(admin.get("/admin/access-log"))
        assert page.count("commune_police.officer.17662") == 2
        assert "Xem hồ sơ" in page
        filtered = admin.get("/admin/access-log", query_string={"case": str(first)})
        assert text(filtered).count("commune_police.officer.17662") == 1
