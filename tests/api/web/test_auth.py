"""Signing in and out of the pages: session cookie, CSRF, lockout, language, the API left as
it was."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

from flask import Flask
from sqlalchemy import select

from api.web import session_secret
from workflow.model import LoginAttempt

from ..conftest import Clock, assert_problem
from .conftest import PASSWORD, Browser, People, text


def _cookie(resp) -> str:  # noqa: ANN001
    cookies = [c for c in resp.headers.getlist("Set-Cookie") if c.startswith("rehabflow_session=")]
    assert cookies, resp.headers
    return cookies[-1]


class TestSignIn:
    def test_pages_need_a_signed_in_user(self, app: Flask) -> None:
        b = Browser(app)
        for path in ("/", "/cases", "/cases/1", "/cases/new", "/inbox", "/admin/users"):
            resp = b.get(path)
            assert resp.status_code == 302, path
            assert resp.headers["Location"].startswith("/login?next=")

    def test_login_page_is_vietnamese(self, app: Flask) -> None:
        resp = Browser(app).get("/login")
        assert resp.status_code == 200
        html = resp.get_data(as_text=True)
        assert '<html lang="vi">' in html
        page = text(resp)
        assert "Đăng nhập" in page
        assert "Tên đăng nhập" in page and "Mật khẩu" in page
        assert 'autocomplete="current-password"' in html

    def test_sign_in_goes_where_asked_with_a_safe_cookie(self, app: Flask, people: People) -> None:
        officer = people.officer()
        b = officer.browser
        b.get("/cases")
        resp = b.post(
            "/login", {"username": officer.username, "password": PASSWORD, "next": "/cases"}
        )
        assert resp.status_code == 303
        assert resp.headers["Location"] == "/cases"
        cookie = _cookie(resp)
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert "Secure" not in cookie  # plain HTTP to localhost: the demo set-up
        assert b.get("/cases").status_code == 200

    def test_cookie_is_secure_over_https_and_when_configured(
        self, app: Flask, make_app, people: People
    ) -> None:  # noqa: ANN001
        resp = app.test_client().get("/login", base_url="https://localhost")
        assert "Secure" in _cookie(resp)
        resp = app.test_client().get("/login", base_url="http://rehab.example.gov.vn")
        assert "Secure" in _cookie(resp)  # never a session over plain HTTP on a network
        forced = make_app(REHABFLOW_COOKIE_SECURE="1")
        assert "Secure" in _cookie(forced.test_client().get("/login"))
        off = make_app(REHABFLOW_COOKIE_SECURE="0")
        resp = off.test_client().get("/login", base_url="http://rehab.example.gov.vn")
        assert "Secure" not in _cookie(resp)

    def test_session_key_is_derived_from_the_secret(self, app: Flask) -> None:
        secret = app.extensions["rehabflow"].settings.secret_key
        assert app.secret_key == session_secret(secret) != secret
        expected = hmac.new(
            secret.encode(), b"rehabflow web session cookie v1", hashlib.sha256
        ).hexdigest()
        assert app.secret_key == expected

    def test_wrong_password_keeps_the_username_not_the_password(
        self, app: Flask, people: People
    ) -> None:
        officer = people.officer()
        resp = officer.browser.post(
            "/login", {"username": officer.username, "password": "sai-mật-khẩu-123"}
        )
        assert resp.status_code == 422
        assert "Tên đăng nhập hoặc mật khẩu không đúng." in text(resp)
        html = resp.get_data(as_text=True)
        assert f'value="{officer.username}"' in html
        assert "sai-mật-khẩu-123" not in html
        assert officer.browser.get("/").status_code == 302

    def test_unknown_user_gets_the_same_answer(self, app: Flask, people: People) -> None:
        resp = Browser(app).post("/login", {"username": "khong.ton.tai", "password": "x" * 12})
        assert resp.status_code == 422
        assert "Tên đăng nhập hoặc mật khẩu không đúng." in text(resp)

    def test_empty_form(self, app: Flask) -> None:
        resp = Browser(app).post("/login", {"username": "", "password": ""})
        assert resp.status_code == 422
        assert "Hãy nhập tên đăng nhập và mật khẩu." in text(resp)

    def test_next_never_leaves_the_site(self, app: Flask, people: People) -> None:
        officer = people.officer()
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            resp = officer.browser.post(
                "/login", {"username": officer.username, "password": PASSWORD, "next": target}
            )
            assert resp.status_code == 303
            assert resp.headers["Location"] == "/", target
            officer.browser.logout()


class TestLockout:
    def _fail(self, b: Browser, username: str, n: int) -> None:
        for _ in range(n):
            resp = b.post("/login", {"username": username, "password": "wrong-password-x"})
            assert resp.status_code == 422

    def test_five_failures_lock_the_username_for_fifteen_minutes(
        self, app: Flask, people: People, clock: Clock
    ) -> None:
        officer = people.officer()
        b = officer.browser
        self._fail(b, officer.username, 5)
        resp = b.post("/login", {"username": officer.username, "password": PASSWORD})
        assert resp.status_code == 429
        assert resp.headers["Retry-After"] == str(15 * 60)
        assert "Đăng nhập sai quá nhiều lần. Tạm khóa đăng nhập trong 15 phút." in text(resp)
        assert b.get("/").status_code == 302  # not signed in
        # failures are stored folded, without the password
        with app.extensions["rehabflow"].session_factory() as s:
            rows = list(s.execute(select(LoginAttempt)).scalars())
        assert len(rows) == 5
        assert {r.username for r in rows} == {officer.username.lower()}
        clock.advance(minutes=14)
        resp = b.post("/login", {"username": officer.username, "password": PASSWORD})
        assert resp.status_code == 429
        assert "1 phút" in text(resp)
        clock.advance(minutes=1, seconds=1)
        b.login(officer.username)
        assert b.get("/").status_code == 200
        with app.extensions["rehabflow"].session_factory() as s:
            assert s.execute(select(LoginAttempt)).first() is None  # success clears them

    def test_lockout_does_not_tell_whether_the_username_exists(
        self, app: Flask, people: People
    ) -> None:
        b = Browser(app)
        self._fail(b, "khong.ton.tai", 5)
        resp = b.post("/login", {"username": "khong.ton.tai", "password": "x" * 12})
        assert resp.status_code == 429
        assert "Tạm khóa đăng nhập" in text(resp)

    def test_four_failures_do_not_lock(self, app: Flask, people: People) -> None:
        officer = people.officer()
        self._fail(officer.browser, officer.username.upper(), 4)
        officer.browser.login(officer.username)

    def test_one_address_is_limited_across_usernames(self, app: Flask, people: People) -> None:
        officer = people.officer()
        b = Browser(app)
        for i in range(20):
            self._fail(b, f"guess{i}", 1)
        resp = b.post("/login", {"username": officer.username, "password": PASSWORD})
        assert resp.status_code == 429
        # another address is not affected
        other = officer.browser.client.post(
            "/login",
            data={
                "csrf_token": officer.browser.csrf(),
                "username": officer.username,
                "password": PASSWORD,
            },
            environ_base={"REMOTE_ADDR": "10.0.0.7"},
        )
        assert other.status_code == 303


class TestCsrf:
    def test_post_without_the_token_is_refused(self, app: Flask, people: People) -> None:
        officer = people.officer()
        resp = officer.browser.client.post(
            "/login", data={"username": officer.username, "password": PASSWORD}
        )
        assert resp.status_code == 400
        assert "Biểu mẫu đã hết hiệu lực" in text(resp)
        b = officer.login()
        resp = b.client.post("/logout", data={"csrf_token": "forged"})
        assert resp.status_code == 400
        assert b.get("/").status_code == 200  # still signed in

    def test_every_form_of_a_page_carries_the_token(self, app: Flask, people: People) -> None:
        b = people.admin().login()
        token = b.csrf()
        for path in ("/", "/cases/new", "/inbox", "/admin/users", "/admin/tokens"):
            html = b.get(path).get_data(as_text=True)
            forms = re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S)
            posts = [f for f in forms if 'method="post"' in f]
            assert posts, path
            for form in posts:
                assert f'name="csrf_token" value="{token}"' in form, (path, form[:200])

    def test_a_new_session_at_sign_in(self, app: Flask, people: People) -> None:
        officer = people.officer()
        before = officer.browser.csrf()
        b = officer.login()
        assert b.csrf() != before


class TestSignOut:
    def test_sign_out(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        resp = b.logout()
        assert resp.status_code == 303
        assert resp.headers["Location"] == "/login"
        assert b.get("/").status_code == 302
        assert b.get("/logout").status_code == 405  # only by a form (POST, CSRF)

    def test_deactivated_user_is_signed_out(self, app: Flask, people: People) -> None:
        from workflow.model import User

        officer = people.officer()
        b = officer.login()
        with app.extensions["rehabflow"].session_factory() as s:
            s.get(User, officer.user_id).active = False
            s.commit()
        assert b.get("/").status_code == 302

    def test_a_new_password_ends_older_sessions(self, app: Flask, people: People) -> None:
        from argon2 import PasswordHasher

        from workflow.model import User

        officer = people.officer()
        b = officer.login()
        with app.extensions["rehabflow"].session_factory() as s:
            s.get(User, officer.user_id).password_hash = PasswordHasher(
                time_cost=1, memory_cost=8, parallelism=1
            ).hash("another-password-1")
            s.commit()
        assert b.get("/").status_code == 302

    def test_sessions_end_after_twelve_hours(
        self, app: Flask, people: People, clock: Clock
    ) -> None:
        b = people.officer().login()
        clock.advance(hours=11)
        assert b.get("/").status_code == 200
        clock.advance(hours=1, minutes=1)
        assert b.get("/").status_code == 302


class TestLanguage:
    def test_switch_to_english_and_back(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        page = text(b.get("/"))
        assert "Việc cần làm" in page and "Đăng xuất" in page
        resp = b.post("/lang", {"lang": "en", "next": "/cases?state=detected"})
        assert resp.status_code == 303
        assert resp.headers["Location"] == "/cases?state=detected"
        resp = b.get("/")
        assert '<html lang="en">' in resp.get_data(as_text=True)
        page = text(resp)
        assert "Worklist" in page and "Sign out" in page and "Việc cần làm" not in page
        b.post("/lang", {"lang": "vi"})
        assert "Việc cần làm" in text(b.get("/"))

    def test_the_choice_survives_sign_in_and_out(self, app: Flask, people: People) -> None:
        officer = people.officer()
        officer.browser.post("/lang", {"lang": "en", "next": "/login"})
        assert "Sign in" in text(officer.browser.get("/login"))
        b = officer.login()
        assert "Worklist" in text(b.get("/"))
        b.logout()
        assert "Username" in text(b.get("/login"))

    def test_unknown_language_is_ignored(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        b.post("/lang", {"lang": "fr"})
        assert "Việc cần làm" in text(b.get("/"))


class TestApiUnchanged:
    def test_api_still_answers_problem_details(self, app: Flask, people: People) -> None:
        b = people.officer().login()  # a page session gives no access to the API
        assert_problem(b.get("/api/v1/cases"), 401, "unauthorized")
        assert_problem(b.get("/api/v1/nothing-here"), 401)
        token = app.extensions["rehabflow.accounts"].create_token(
            people.officer().username, datetime.now(UTC)
        )
        auth = {"Authorization": f"Bearer {token.token}"}
        assert b.get("/api/v1/cases", headers=auth).status_code == 200
        assert_problem(b.get("/api/v1/nothing-here", headers=auth), 404)

    def test_the_api_neither_reads_nor_renews_the_page_session(
        self, app: Flask, people: People
    ) -> None:
        """A signed-in browser's cookie sent to the API is not opened there (the API has no
        session), and no cookie comes back; the pages' session is untouched by it."""

        @app.get("/api/v1/test-session-probe")  # (routes are added before any request)
        def _probe() -> dict[str, bool]:
            from flask import session

            return {"null": app.session_interface.is_null_session(session)}

        officer = people.officer()
        b = officer.login()
        token = app.extensions["rehabflow.accounts"].create_token(
            officer.username, datetime.now(UTC)
        )
        auth = {"Authorization": f"Bearer {token.token}"}
        resp = b.get("/api/v1/test-session-probe", headers=auth)
        assert resp.status_code == 200 and resp.get_json() == {"null": True}
        assert not resp.headers.getlist("Set-Cookie")
        for resp in (b.get("/api/v1/cases", headers=auth), b.get("/api/v1/nothing")):
            assert not resp.headers.getlist("Set-Cookie"), resp.headers
        assert b.get("/cases").status_code == 200  # still signed in on the pages

    def test_unknown_page_is_a_page(self, app: Flask, people: People) -> None:
        b = people.officer().login()
        resp = b.get("/no-such-page", headers={"Accept": "text/html,*/*;q=0.8"})
        assert resp.status_code == 404
        assert resp.mimetype == "text/html"
        assert "Không có trang này." in text(resp)
        # a program (no text/html in Accept) still gets problem details there
        assert_problem(b.get("/no-such-page"), 404)
        assert_problem(b.get("/api/v1/x", headers={"Accept": "text/html"}), 401)
        assert b.get("/healthz").get_json() == {"status": "ok"}
