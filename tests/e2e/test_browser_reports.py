"""The report page in a real headless Chromium (the browser, helpers and screenshot folder of
tests/e2e/test_browser.py), over the demo commune with a few dozen demo cases.

A commune police officer opens the report from the menu, chooses the plans' year, reads the
Vietnamese title and the charts, follows a figure to the cases behind it, and opens the page
on a phone: no horizontal scroll. Screenshots: ``test-artifacts/browser/11-report*.png``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from api.app import create_app
from workflow.calendar import business_date
from workflow.demo import load_demo
from workflow.reports import period, reporting_year

from .test_browser import (  # noqa: F401 - browser: the shared Chromium fixture
    TIMEOUT_MS,
    _free_port,
    _shot,
    _sign_in,
    browser,
    expect,
)

DEMO_CASES = 60


@pytest.fixture(scope="module")
def report_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app over a fresh SQLite database with the demo directory and cases, served by
    waitress in this process (as tests/e2e/test_browser.py does, with more cases)."""
    from waitress.server import create_server

    data_dir = tmp_path_factory.mktemp("browser-report-data")
    app = create_app(
        {"REHABFLOW_ENV": {"REHABFLOW_DATA_DIR": str(data_dir)}, "REHABFLOW_COOKIE_SECURE": "1"}
    )
    load_demo(app.extensions["rehabflow"], n_cases=DEMO_CASES, seed=11)
    server = create_server(app, host="127.0.0.1", port=_free_port(), threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=10)
        app.extensions["rehabflow"].engine.dispose()


def test_the_report_page(report_url: str, browser: object) -> None:  # noqa: F811
    year = reporting_year(business_date(datetime.now(UTC)))
    start, end = (d.strftime("%d/%m/%Y") for d in period(str(year)))
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="vi-VN")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    _sign_in(page, report_url, "commune_police.officer")

    # 1. from the menu, the plans' year
    page.get_by_role("link", name="Báo cáo", exact=True).click()
    expect(page.get_by_role("heading", level=1, name="Báo cáo")).to_be_visible()
    page.get_by_label("Xã, phường hoặc tỉnh").select_option("17662")
    page.get_by_label("Theo kỳ báo cáo").check()
    page.get_by_label("Kỳ báo cáo", exact=True).select_option(str(year))
    page.get_by_role("button", name="Xem báo cáo").click()
    title = page.get_by_role("heading", level=2).first
    expect(title).to_have_text(
        "Báo cáo kết quả công tác cai nghiện và quản lý sau cai nghiện ma túy — "
        f"Xã Đô Lương, Nghệ An — từ ngày {start} đến ngày {end}"
    )
    charts = page.locator("figure.chart svg[role=img]")
    expect(charts).to_have_count(4)  # groups, trend, new cases, plan vs actual (the shares)
    for i in range(4):  # a chart fits its column and is drawn at a readable size
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] >= 420, box
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the window"
    _shot(page, "11-report")
    _shot(page, "11-report-top", full=False)

    # 2. a figure leads to the cases behind it
    cell = page.locator('[data-figure="management_dossier.cases"] a')
    n = int(cell.inner_text().replace(".", ""))
    cell.click()
    expect(page.get_by_role("heading", level=1, name="Các hồ sơ của số liệu")).to_be_visible()
    expect(page.locator("[data-count]")).to_have_attribute("data-count", str(n))
    assert page.locator("tbody tr").count() == min(n, 50)
    _shot(page, "12-report-cases", full=False)
    assert re.search(r"/reports/cases\?.*figure=management_dossier\.cases", page.url)
    page.go_back()

    # 3. on a phone: no horizontal scroll, the charts shrink to the screen
    phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="vi-VN")
    phone.add_cookies(context.cookies())
    small = phone.new_page()
    small.goto(page.url)
    expect(small.get_by_role("heading", level=2).first).to_contain_text("Xã Đô Lương")
    overflow = small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone's screen"
    _shot(small, "13-phone-report")
    phone.close()
    context.close()
