"""The staff pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against the app served by waitress on a free loopback port.

A commune police officer opens a case, tries a transition without its document and reads the
Vietnamese error naming it, chooses a wrong file in the same form (refused, named, the input
kept), then the scan, which is uploaded and the transition fired in one send, and sees the new
state and the timeline entry; then the province's health facility, which the case now
reaches, finds it in its worklist. Each step leaves a screenshot in ``test-artifacts/browser/``.

Skipped only when ``/usr/bin/chromium`` is missing and ``REHABFLOW_REQUIRE_BROWSER`` is unset.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.app import create_app
from workflow.calendar import business_date
from workflow.demo import DEMO_PASSWORD, load_demo
from workflow.simulate import fake_pdf

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = bool(os.environ.get("REHABFLOW_REQUIRE_BROWSER"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

if not CHROMIUM.exists() and not REQUIRED:
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
if REQUIRED:
    assert CHROMIUM.exists(), "REHABFLOW_REQUIRE_BROWSER is set but /usr/bin/chromium is missing"
    from playwright.sync_api import Page, expect, sync_playwright
else:
    sync_api = pytest.importorskip("playwright.sync_api")
    Page, expect, sync_playwright = sync_api.Page, sync_api.expect, sync_api.sync_playwright


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app over a fresh SQLite database with the demo directory (users with the demo
    password) and a few demo cases, served by waitress in this process."""
    from waitress.server import create_server

    data_dir = tmp_path_factory.mktemp("browser-data")
    # the production cookie (Secure): Chromium keeps Secure cookies of http://127.0.0.1
    app = create_app(
        {"REHABFLOW_ENV": {"REHABFLOW_DATA_DIR": str(data_dir)}, "REHABFLOW_COOKIE_SECURE": "1"}
    )
    load_demo(app.extensions["rehabflow"], n_cases=4, seed=6)
    server = create_server(app, host="127.0.0.1", port=_free_port(), threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=10)
        app.extensions["rehabflow"].engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def _shot(page: Page, name: str, *, full: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


def _sign_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("Tên đăng nhập").fill(username)
    page.get_by_label("Mật khẩu").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Đăng nhập").click()
    expect(page.get_by_role("heading", level=1, name="Việc cần làm")).to_be_visible()


def test_officer_opens_and_advances_a_case_the_health_facility_then_sees_it(
    base_url: str, browser: object, tmp_path: Path
) -> None:
    today = business_date(datetime.now(UTC)).strftime("%d/%m/%Y")
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="vi-VN")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()

    # 1. sign in as the commune police officer
    page.goto(f"{base_url}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    expect(page.locator("html")).to_have_attribute("lang", "vi")
    _shot(page, "01-login", full=False)
    _sign_in(page, base_url, "commune_police.officer")
    cookie = next(c for c in context.cookies() if c["name"] == "rehabflow_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
    _shot(page, "02-worklist")

    # 2. open a case
    page.get_by_role("link", name="Mở hồ sơ mới").click()
    page.get_by_label("Họ và tên").fill("Phạm Văn Thử")
    page.get_by_label("Ngày sinh").fill("15/04/1992")
    page.get_by_label("Giới tính").select_option("male")
    page.get_by_label("Số định danh cá nhân").fill("040092001111")
    page.get_by_label("Địa chỉ").fill("Xóm 5, Xã Đô Lương")
    page.get_by_role("button", name="Mở hồ sơ").click()
    expect(page.get_by_role("status").filter(has_text="Đã mở hồ sơ")).to_be_visible()
    number = page.get_by_role("heading", level=1).inner_text().removeprefix("Hồ sơ ").strip()
    assert re.fullmatch(r"17662-\d{4}-\d{6}", number), number
    expect(page.locator(".sub .tag.state")).to_have_text("Phát hiện sử dụng trái phép chất ma túy")
    expect(page.locator(".sub")).to_contain_text("drug_rehab v")
    _shot(page, "03-case-opened")

    # 3. the transition without its document: refused, the error names the document
    card = page.locator("#t-request_determination")
    card.get_by_label("Ngày đề nghị").fill(today)
    card.get_by_label("Căn cứ đề nghị").select_option(label="Tự nguyện đề nghị xác định")
    card.get_by_role("button", name="Đề nghị xác định tình trạng nghiện ma túy", exact=True).click()
    alert = page.locator("#t-request_determination [role=alert]")
    expect(alert).to_contain_text(
        "Thiếu giấy tờ bắt buộc: Văn bản đề nghị xác định tình trạng nghiện ma túy."
    )
    expect(card.get_by_label("Ngày đề nghị")).to_have_value(today)  # what was typed is kept
    expect(page.locator(".sub .tag.state")).to_have_text("Phát hiện sử dụng trái phép chất ma túy")
    _shot(page, "04-missing-document", full=False)

    # 4. a file that is no document, chosen in the same form: refused, named, the input kept
    card = page.locator("#t-request_determination")
    notes = tmp_path / "ghi-chu.pdf"
    notes.write_text("không phải tệp PDF\n", encoding="utf-8")
    card.get_by_label("Văn bản đề nghị xác định tình trạng nghiện ma túy").set_input_files(
        str(notes)
    )
    card.get_by_role("button", name="Đề nghị xác định tình trạng nghiện ma túy", exact=True).click()
    expect(page.locator("#t-request_determination [role=alert]")).to_contain_text(
        "Văn bản đề nghị xác định tình trạng nghiện ma túy: Loại tệp này không được chấp nhận"
    )
    card = page.locator("#t-request_determination")
    expect(card.get_by_label("Ngày đề nghị")).to_have_value(today)
    expect(card.get_by_label("Căn cứ đề nghị")).to_have_value("own_request")
    _shot(page, "05-wrong-file", full=False)

    # 5. the real scan in the same form: uploaded and the transition fired in one send
    scan = tmp_path / "de-nghi-xac-dinh.pdf"
    scan.write_bytes(fake_pdf("browser-determination-request"))
    card.get_by_label("Văn bản đề nghị xác định tình trạng nghiện ma túy").set_input_files(
        str(scan)
    )
    card.get_by_role("button", name="Đề nghị xác định tình trạng nghiện ma túy", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Đã tải lên")).to_contain_text(
        "Văn bản đề nghị xác định tình trạng nghiện ma túy"
    )
    expect(page.get_by_role("status").filter(has_text="Đã thực hiện")).to_contain_text(
        "Trạng thái hồ sơ hiện nay: Đang xác định tình trạng nghiện ma túy."
    )
    expect(page.locator(".sub .tag.state")).to_have_text("Đang xác định tình trạng nghiện ma túy")
    entry = page.locator("#timeline li").first
    expect(entry).to_contain_text("Đề nghị xác định tình trạng nghiện ma túy")
    expect(entry).to_contain_text(
        "Phát hiện sử dụng trái phép chất ma túy → Đang xác định tình trạng nghiện ma túy"
    )
    expect(entry).to_contain_text("commune_police.officer")
    expect(page.locator('svg g[aria-current="step"]')).to_have_attribute(
        "id", "state-addiction_determination"
    )
    expect(page.locator("#deadlines")).to_contain_text("Thời hạn xác định tình trạng nghiện")
    _shot(page, "06-transition-done")
    case_url = page.url.split("#", 1)[0]

    # 6. the province's health facility now sees it in its worklist
    page.get_by_role("button", name="Đăng xuất").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    _sign_in(page, base_url, "health_facility.doctor")
    deadlines = page.locator("section[aria-labelledby=h-deadlines]")
    expect(deadlines.get_by_role("link", name=number)).to_be_visible()
    _shot(page, "07-health-facility-worklist")
    deadlines.get_by_role("link", name=number).click()
    expect(page.locator("#t-record_addiction_result")).to_be_visible()
    expect(page.locator("#t-request_determination")).to_have_count(0)
    _shot(page, "08-health-facility-case")

    # 7. the same case page on a phone, and in English
    phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="vi-VN")
    phone.add_cookies(context.cookies())
    small = phone.new_page()
    small.goto(case_url)
    expect(small.get_by_role("heading", level=1)).to_have_text(f"Hồ sơ {number}")
    overflow = small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone's screen"
    _shot(small, "09-phone-case", full=False)
    small.get_by_role("button", name="English").click()
    expect(small.get_by_role("heading", level=1)).to_have_text(f"Case {number}")
    expect(small.locator(".sub .tag.state")).to_have_text("Addiction being determined")
    _shot(small, "10-phone-english", full=False)
    phone.close()
    context.close()
