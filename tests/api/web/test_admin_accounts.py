"""Administration of existing accounts: deactivate and reactivate a user (their session and API
tokens stop working), give a user a new password, set an agency's e-mail and webhook (the
secret never shown back); every change audited; CSRF on each form, administrators only."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import select

from workflow import audit
from workflow.model import Agency, AuditEvent, User

from ..conftest import assert_problem
from .conftest import PASSWORD, Browser, People, text

NEW_PASSWORD = "mật-khẩu-mới-2026"
SECRET = "khóa-bí-mật-của-webhook-01"


def _events(app: Flask, action: str) -> list[AuditEvent]:
    with app.extensions["rehabflow"].session_factory() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def _chain_ok(app: Flask) -> bool:
    with app.extensions["rehabflow"].session_factory() as s:
        return audit.verify(s).ok


def _token(app: Flask, username: str) -> dict[str, str]:
    token = app.extensions["rehabflow.accounts"].create_token(username, datetime.now(UTC)).token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(people: People) -> Browser:
    return people.admin().login()


class TestDeactivate:
    def test_the_user_is_signed_out_and_their_token_refused(
        self, app: Flask, people: People, admin: Browser
    ) -> None:
        officer = people.officer()
        b = officer.login()
        auth = _token(app, officer.username)
        assert b.get("/").status_code == 200
        assert b.get("/api/v1/cases", headers=auth).status_code == 200
        page = text(admin.get(f"/admin/users/{officer.user_id}"))
        assert "Đang hoạt động" in page and f"Khóa tài khoản {officer.username}" in page
        resp = admin.post(f"/admin/users/{officer.user_id}/active", {"active": "0"})
        assert resp.status_code == 303
        assert resp.headers["Location"] == f"/admin/users/{officer.user_id}"
        page = text(admin.get(f"/admin/users/{officer.user_id}"))
        assert f"Đã khóa tài khoản {officer.username}." in page
        assert "Ngừng hoạt động" in page
        # their next page: the sign-in page; their token: 401
        resp = b.get("/cases")
        assert resp.status_code == 302
        assert resp.headers["Location"].startswith("/login")
        assert_problem(b.get("/api/v1/cases", headers=auth), 401)
        assert (
            Browser(app)
            .post("/login", {"username": officer.username, "password": PASSWORD})
            .status_code
            == 422
        )
        [event] = _events(app, "user.deactivated")
        assert event.case_id is None
        assert event.extra == {"user_id": officer.user_id, "username": officer.username}
        assert event.actor == people.admin().username
        assert _chain_ok(app)

    def test_reactivate(self, app: Flask, people: People, admin: Browser) -> None:
        officer = people.officer()
        auth = _token(app, officer.username)
        admin.post(f"/admin/users/{officer.user_id}/active", {"active": "0"})
        resp = admin.post(f"/admin/users/{officer.user_id}/active", {"active": "1"})
        assert resp.status_code == 303
        assert f"Đã mở lại tài khoản {officer.username}." in text(
            admin.get(f"/admin/users/{officer.user_id}")
        )
        b = officer.login()
        assert b.get("/").status_code == 200
        assert b.get("/api/v1/cases", headers=auth).status_code == 200
        assert len(_events(app, "user.reactivated")) == 1
        # the same state again changes nothing and is not audited again
        admin.post(f"/admin/users/{officer.user_id}/active", {"active": "1"})
        assert len(_events(app, "user.reactivated")) == 1

    def test_not_oneself(self, app: Flask, people: People, admin: Browser) -> None:
        me = people.admin()
        page = text(admin.get(f"/admin/users/{me.user_id}"))
        assert f"Khóa tài khoản {me.username}" not in page
        assert "Đây là tài khoản của bạn: phải do một quản trị viên khác khóa." in page
        resp = admin.post(f"/admin/users/{me.user_id}/active", {"active": "0"})
        assert resp.status_code == 422
        assert "Bạn không thể tự khóa tài khoản của mình." in text(resp)
        assert admin.get("/").status_code == 200
        assert _events(app, "user.deactivated") == []

    def test_the_users_list_links_to_each_user(self, people: People, admin: Browser) -> None:
        officer = people.officer()
        html = admin.get("/admin/users").get_data(as_text=True)
        assert f'href="/admin/users/{officer.user_id}"' in html
        assert admin.get("/admin/users/999999").status_code == 404


class TestNewPassword:
    def test_the_new_password_works_the_old_one_not(
        self, app: Flask, people: People, admin: Browser
    ) -> None:
        officer = people.officer()
        b = officer.login()
        resp = admin.post(
            f"/admin/users/{officer.user_id}/password",
            {"password": NEW_PASSWORD, "password2": NEW_PASSWORD},
        )
        assert resp.status_code == 303
        page = text(admin.get(f"/admin/users/{officer.user_id}"))
        assert f"Đã đặt mật khẩu mới cho {officer.username}." in page
        assert b.get("/").status_code == 302  # their open session ended
        old = Browser(app).post("/login", {"username": officer.username, "password": PASSWORD})
        assert old.status_code == 422
        assert "Tên đăng nhập hoặc mật khẩu không đúng." in text(old)
        Browser(app).login(officer.username, NEW_PASSWORD)
        [event] = _events(app, "user.password_reset")
        assert event.extra == {"user_id": officer.user_id, "username": officer.username}
        assert NEW_PASSWORD not in str(event.extra)
        assert _chain_ok(app)

    def test_errors_in_vietnamese_the_password_not_shown_back(
        self, app: Flask, people: People, admin: Browser
    ) -> None:
        officer = people.officer()
        url = f"/admin/users/{officer.user_id}/password"
        resp = admin.post(url, {"password": "ngắn", "password2": "ngắn"})
        assert resp.status_code == 422
        page = text(resp)
        assert "Chưa đổi mật khẩu. Hãy sửa các trường được đánh dấu bên dưới." in page
        assert "Tối thiểu 10 ký tự." in page
        assert "ngắn" not in resp.get_data(as_text=True)
        resp = admin.post(url, {"password": NEW_PASSWORD, "password2": NEW_PASSWORD + "x"})
        assert resp.status_code == 422
        assert "Hai mật khẩu không giống nhau." in text(resp)
        assert NEW_PASSWORD not in resp.get_data(as_text=True)
        officer.login()  # the old password still works
        assert _events(app, "user.password_reset") == []

    def test_in_english(self, people: People, admin: Browser) -> None:
        admin.post("/lang", {"lang": "en"})
        officer = people.officer()
        resp = admin.post(f"/admin/users/{officer.user_id}/password", {"password": "short"})
        assert "At least 10 characters." in text(resp)


class TestAgency:
    @pytest.fixture
    def agency_id(self, people: People) -> int:
        return people.officer().actor.agency_id

    def _agency(self, app: Flask, agency_id: int) -> Agency:
        with app.extensions["rehabflow"].session_factory() as s:
            return s.get(Agency, agency_id)

    def test_save_e_mail_and_webhook_the_secret_never_shown(
        self, app: Flask, admin: Browser, agency_id: int
    ) -> None:
        html = admin.get("/admin/agencies").get_data(as_text=True)
        assert f'href="/admin/agencies/{agency_id}"' in html
        page = text(admin.get(f"/admin/agencies/{agency_id}"))
        assert "Địa chỉ webhook" in page and "Chưa đặt" in page
        form = {
            "email": "congan.doluong@nghean.gov.vn",
            "webhook_url": "https://hethong.nghean.gov.vn/rehabflow",
            "webhook_secret": SECRET,
        }
        resp = admin.post(f"/admin/agencies/{agency_id}", form)
        assert resp.status_code == 303
        assert resp.headers["Location"] == "/admin/agencies"
        agency = self._agency(app, agency_id)
        assert (agency.email, agency.webhook_url, agency.webhook_secret) == tuple(form.values())
        assert "Đã lưu cơ quan" in text(admin.get("/admin/agencies"))
        resp = admin.get(f"/admin/agencies/{agency_id}")
        html = resp.get_data(as_text=True)
        assert SECRET not in html
        assert 'value="https://hethong.nghean.gov.vn/rehabflow"' in html
        assert "Đã đặt" in text(resp)
        # saved again without a secret: the stored one is kept
        resp = admin.post(
            f"/admin/agencies/{agency_id}", {"email": "", "webhook_url": form["webhook_url"]}
        )
        assert resp.status_code == 303
        agency = self._agency(app, agency_id)
        assert (agency.email, agency.webhook_secret) == (None, SECRET)
        events = _events(app, "agency.updated")
        assert [e.extra["changed"] for e in events] == [
            ["email", "webhook_secret", "webhook_url"],
            ["email"],
        ]
        assert all(SECRET not in str(e.extra) for e in events)
        assert _chain_ok(app)

    def test_errors_inline_in_vietnamese_keeping_the_input(
        self, app: Flask, admin: Browser, agency_id: int
    ) -> None:
        url = f"/admin/agencies/{agency_id}"
        resp = admin.post(
            url,
            {"email": "không-phải-email", "webhook_url": "ftp://x", "webhook_secret": "ngắn"},
        )
        assert resp.status_code == 422
        page = text(resp)
        assert "Chưa lưu. Hãy sửa các trường được đánh dấu bên dưới." in page
        assert "Nhập một địa chỉ thư điện tử, ví dụ congan.xa@nghean.gov.vn." in page
        assert "Nhập một địa chỉ bắt đầu bằng https:// hoặc http://" in page
        assert "Từ 16 đến 128 ký tự, không có dấu cách ở đầu và cuối." in page
        html = resp.get_data(as_text=True)
        assert 'value="không-phải-email"' in html and 'value="ftp://x"' in html
        assert "ngắn" not in html  # a secret is never written back, even a refused one
        assert html.count('aria-invalid="true"') == 3
        resp = admin.post(url, {"webhook_url": "https://user:pw@example.org/hook"})
        assert resp.status_code == 422
        assert "không có dấu cách hay mật khẩu" in text(resp)
        resp = admin.post(url, {"webhook_url": "https://example.org/hook"})
        assert resp.status_code == 422
        assert "Webhook cần có khóa bí mật: hãy nhập một khóa." in text(resp)
        agency = self._agency(app, agency_id)
        assert (agency.email, agency.webhook_url, agency.webhook_secret) == (None, None, None)
        assert _events(app, "agency.updated") == []

    def test_remove_the_secret(self, app: Flask, admin: Browser, agency_id: int) -> None:
        url = f"/admin/agencies/{agency_id}"
        admin.post(url, {"webhook_url": "https://example.org/h", "webhook_secret": SECRET})
        resp = admin.post(url, {"webhook_url": "https://example.org/h", "clear_secret": "1"})
        assert resp.status_code == 422  # a webhook without a secret cannot sign
        assert admin.post(url, {"webhook_url": "", "clear_secret": "1"}).status_code == 303
        agency = self._agency(app, agency_id)
        assert (agency.webhook_url, agency.webhook_secret) == (None, None)


class TestOnlyAdministratorsWithTheToken:
    def test_every_form_carries_the_token(self, people: People, admin: Browser) -> None:
        officer = people.officer()
        token = admin.csrf()
        for path in (
            f"/admin/users/{officer.user_id}",
            f"/admin/agencies/{officer.actor.agency_id}",
        ):
            html = admin.get(path).get_data(as_text=True)
            posts = [
                f for f in re.findall(r"<form\b.*?</form>", html, re.S) if 'method="post"' in f
            ]
            assert len(posts) >= 2, path  # the page's forms and the language switch
            for form in posts:
                assert f'name="csrf_token" value="{token}"' in form, (path, form[:200])

    def test_csrf_failure_on_each_form(self, app: Flask, people: People, admin: Browser) -> None:
        officer = people.officer()
        agency_id = officer.actor.agency_id
        posts = {
            f"/admin/users/{officer.user_id}/active": {"active": "0"},
            f"/admin/users/{officer.user_id}/password": {
                "password": NEW_PASSWORD,
                "password2": NEW_PASSWORD,
            },
            f"/admin/agencies/{agency_id}": {"email": "a@b.vn"},
        }
        for path, data in posts.items():
            for token in (None, "forged"):
                body = data if token is None else data | {"csrf_token": token}
                resp = admin.client.post(path, data=body)
                assert resp.status_code == 400, path
                assert "Biểu mẫu đã hết hiệu lực" in text(resp)
        with app.extensions["rehabflow"].session_factory() as s:
            user = s.get(User, officer.user_id)
            assert user.active
        officer.login()  # neither deactivated nor a new password
        assert self_agency_email(app, agency_id) is None

    def test_other_users_get_403(self, app: Flask, people: People) -> None:
        officer = people.officer()
        b = officer.login()
        other = people.get("commune_pc", "officer")
        agency_id = officer.actor.agency_id
        for path in (f"/admin/users/{other.user_id}", f"/admin/agencies/{agency_id}"):
            assert b.get(path).status_code == 403, path
        for path, data in {
            f"/admin/users/{other.user_id}/active": {"active": "0"},
            f"/admin/users/{other.user_id}/password": {
                "password": NEW_PASSWORD,
                "password2": NEW_PASSWORD,
            },
            f"/admin/agencies/{agency_id}": {"email": "a@b.vn"},
        }.items():
            resp = b.post(path, data)
            assert resp.status_code == 403, path
            assert "Cơ quan và vai trò của bạn không được thực hiện thao tác này." in text(resp)
        other.login()
        assert self_agency_email(app, agency_id) is None


def self_agency_email(app: Flask, agency_id: int) -> str | None:
    with app.extensions["rehabflow"].session_factory() as s:
        return s.get(Agency, agency_id).email
