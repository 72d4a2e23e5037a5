"""The report pages: the report of a unit and a period, the cases behind its figures, the
XLSX/CSV downloads and the plan targets.

The data set is the hand-built one of tests/integration/test_reports.py (its ``world``
fixture, whose docstring tells the cases and the known answers), written through the app's
own service; the report is made on 20/06/2026 for 2026H1 (15/12/2025-14/06/2026).
"""

from __future__ import annotations

import csv
import html as htmlmod
import io
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from openpyxl import load_workbook
from sqlalchemy import func, select
from werkzeug.test import TestResponse

import api.web.reports as web_reports
from workflow.model import AccessLog, ReportTarget

from ...integration.helpers import at
from ...integration.test_reports import OTHER, TODAY, world  # noqa: F401 - the data set
from ..conftest import Clock
from .conftest import COMMUNE, PROVINCE, Browser, People, text

H1 = "period=2026H1"
TITLE_VI = (
    "Báo cáo kết quả công tác cai nghiện và quản lý sau cai nghiện ma túy — "
    "Xã Đô Lương, Nghệ An — từ ngày 15/12/2025 đến ngày 14/06/2026"
)


@pytest.fixture
def session_factory(app: Flask):  # noqa: ANN201
    """The world's agencies and users (tests.conftest.Actors) go to the app's database."""
    return app.extensions["rehabflow"].session_factory


@pytest.fixture
def data(world: dict[str, int], clock: Clock) -> dict[str, int]:  # noqa: F811
    clock.now = at(TODAY)
    return world


def figures(resp: TestResponse) -> dict[str, str]:
    """Figure path (``data-figure``) → the text the cell shows."""
    html = resp.get_data(as_text=True)
    cells = re.findall(r'data-figure="([^"]+)"[^>]*>(.*?)</td>', html, flags=re.S)
    return {path: " ".join(re.sub(r"<[^>]+>", " ", inner).split()) for path, inner in cells}


def links(resp: TestResponse) -> dict[str, str]:
    """Figure path → the link of its cell (the cases behind it)."""
    html = resp.get_data(as_text=True)
    cells = re.findall(r'data-figure="([^"]+)"[^>]*><a href="([^"]+)"', html)
    return {path: htmlmod.unescape(href) for path, href in cells}


def number(shown: str) -> int:
    """A whole number as the page writes it in Vietnamese (1.234)."""
    return int(shown.replace(".", ""))


def report(b: Browser, query: str) -> TestResponse:
    resp = b.get(f"/reports?{query}")
    assert resp.status_code == 200, text(resp)[:3000]
    return resp


# --------------------------------------------------------------------------- the report
COMMUNE_FIGURES = {
    # people under management: at start, new, ended, at end
    "groups.voluntary_home.at_start": "0",
    "groups.voluntary_home.new": "1",
    "groups.voluntary_home.at_end": "1",
    "groups.substitution.at_start": "1",
    "groups.substitution.ended": "1",
    "groups.substitution.at_end": "0",
    "groups.illegal_use.at_start": "1",
    "groups.illegal_use.new": "1",
    "groups.illegal_use.ended": "2",
    "groups.illegal_use.at_end": "0",
    "groups.absent.at_end": "0",
    # compulsory dossiers
    "compulsory.dossiers_made": "1",
    "compulsory.sent_to_court": "1",
    "compulsory.decided": "1",
    "compulsory.rejected": "0",
    "compulsory.avg_working_days": "12",
    "compulsory.max_working_days": "12",
    # shares against the plans' targets
    "management_dossier.cases": "2",
    "management_dossier.complete": "1",
    "management_dossier.incomplete": "1",
    "management_dossier.share": "50 %",
    "management_dossier.target": "100 % chưa đạt",
    "support.finished": "0",
    "support.share": "—",
    "support.target": "90 %",  # the commune's own target
    "family_commitment.cases": "1",
    "family_commitment.signed": "1",
    "family_commitment.share": "100 %",
    "family_commitment.target": "100 % đạt",
    # relapses, check-ins
    "relapses.events": "1",
    "relapses.cases": "1",
    "check_ins.done": "1",
    "check_ins.due": "3",
    "check_ins.met_on_time": "1",
    "check_ins.missed": "2",
    # deadlines per agency: due, met on time, overdue and open, overdue in all
    "deadlines.commune_pc.due": "6",
    "deadlines.commune_pc.met_on_time": "4",
    "deadlines.commune_pc.overdue_open": "1",
    "deadlines.commune_pc.overdue": "2",
    "deadlines.district_police.due": "3",
    "deadlines.district_police.overdue_open": "3",
    # plan vs actual, 2026
    "targets.voluntary_home.plan": "60",
    "targets.voluntary_home.actual": "1",
    "targets.voluntary_home.achieved": "1,7 %",
    "targets.substitution.plan": "250",
    "targets.substitution.achieved": "0,4 %",
    "targets.dossiers_made.achieved": "50 %",
    "targets.support_share.plan": "90 %",
    "targets.support_share.actual": "—",
    "targets.management_dossier_share.actual": "50 %",
    # month by month
    "trend.2025-12.illegal_use": "2",
    "trend.2025-12.total": "3",
    "trend.2025-12.new_cases": "1",
    "trend.2026-03.total": "2",
    "trend.2026-06.total": "1",
}


def test_the_report_of_a_commune(app: Flask, people: People, data: dict[str, int]) -> None:
    b = people.officer().login()
    resp = report(b, f"unit={COMMUNE}&{H1}")
    page = text(resp)
    assert TITLE_VI in page
    assert "Cai nghiện tự nguyện tại gia đình, cộng đồng" in page  # the groups' labels
    assert "Số người đang quản lý, theo nhóm" in page
    shown = figures(resp)
    assert {k: shown.get(k) for k in COMMUNE_FIGURES} == COMMUNE_FIGURES
    # every table of the report
    for heading in (
        "Hồ sơ đề nghị cai nghiện bắt buộc",
        "Tái nghiện và điểm danh",
        "Tỷ lệ so với chỉ tiêu của kế hoạch",
        "Thời hạn theo cơ quan",
        "Kế hoạch và thực hiện năm 2026",
        "Theo từng tháng",
    ):
        assert heading in page, heading
    # the charts, inline SVG drawn on the server
    html = resp.get_data(as_text=True)
    for chart in ("rf-groups", "rf-trend", "rf-new", "rf-targets"):
        assert re.search(rf'<svg [^>]*aria-labelledby="{chart}-title', html), chart
    assert "<script" not in html.split("<main", 1)[1]
    # the same report by dates typed as dd/mm/yyyy
    by_dates = report(b, f"unit={COMMUNE}&kind=dates&from=15/12/2025&to=14/06/2026")
    assert figures(by_dates) == shown
    assert 'value="15/12/2025"' in by_dates.get_data(as_text=True)


def test_the_form(app: Flask, people: People, data: dict[str, int]) -> None:
    b = people.officer().login()
    # the menu leads to the page; without a choice: the user's commune, the current half-year
    assert 'href="/reports"' in b.get("/").get_data(as_text=True)
    resp = report(b, "")
    assert "từ ngày 15/06/2026 đến ngày 14/12/2026" in text(resp)
    html = resp.get_data(as_text=True)
    assert '<option value="2026H2" selected>' in html
    assert "6 tháng đầu năm 2026 (15/12/2025 – 14/06/2026)" in text(resp)
    assert "Năm 2026 (15/12/2025 – 14/12/2026)" in text(resp)
    # a refused form keeps what was typed
    resp = b.get(f"/reports?unit={COMMUNE}&kind=dates&from=32/13/2026&to=14/06/2026")
    assert resp.status_code == 422
    page = text(resp)
    assert "Chưa lập được báo cáo. Hãy sửa các trường được đánh dấu bên dưới." in page
    assert "Nhập ngày theo dạng dd/mm/yyyy, ví dụ 25/11/2026." in page
    html = resp.get_data(as_text=True)
    assert 'value="32/13/2026"' in html and 'value="14/06/2026"' in html
    assert 'id="r-kind-dates" name="kind" value="dates" checked' in html
    resp = b.get(f"/reports?unit={COMMUNE}&kind=dates&from=14/06/2026&to=15/12/2025")
    assert resp.status_code == 422 and "Ngày kết thúc trước ngày bắt đầu." in text(resp)
    resp = b.get(f"/reports?unit={COMMUNE}&period=2026Q3")
    assert resp.status_code == 422 and "Hãy chọn một kỳ báo cáo." in text(resp)


def test_a_commune_user_sees_only_their_commune(
    app: Flask, people: People, data: dict[str, int]
) -> None:
    b = people.officer().login()
    html = report(b, H1).get_data(as_text=True)
    options = re.findall(
        r'<option value="(\d+)"', html.split('id="r-unit"', 1)[1].split("</select>")[0]
    )
    assert options == [COMMUNE]
    for unit in (OTHER, PROVINCE, "01"):
        for path in ("/reports", "/reports/download/xlsx", "/reports/cases"):
            resp = b.get(f"{path}?unit={unit}&{H1}&figure=relapses.events")
            assert resp.status_code == 403, (path, unit)
            assert "Không có quyền" in text(resp)
    resp = b.get(f"/reports?unit=99999&{H1}")
    assert resp.status_code == 422 and "Mã xã, phường hoặc tỉnh không tồn tại." in text(resp)


def test_the_province_report_sums_its_communes(
    app: Flask, people: People, data: dict[str, int]
) -> None:
    b = people.get("provincial_police", "head", PROVINCE).login()
    resp = report(b, f"unit={PROVINCE}&{H1}")
    html = resp.get_data(as_text=True)
    select_html = html.split('id="r-unit"', 1)[1].split("</select>")[0]
    assert '<option value="40" selected>Nghệ An (toàn tỉnh)</option>' in select_html
    assert f'<option value="{COMMUNE}">' in select_html
    assert f'<option value="{OTHER}">' in select_html
    province = figures(resp)
    parts = [figures(report(b, f"unit={u}&{H1}")) for u in (COMMUNE, OTHER)]
    summed = 0
    for path, value in province.items():
        if not re.match(r"(groups|compulsory|relapses|check_ins|deadlines|trend)\.", path):
            continue
        if path.split(".")[-1] in ("avg_working_days", "max_working_days"):
            continue
        assert number(value) == sum(number(p.get(path, "0")) for p in parts), path
        summed += 1
    assert summed > 100
    assert province["groups.illegal_use.at_end"] == "1"  # D, in the other commune
    assert province["groups.illegal_use.new"] == "2"
    assert province["family_commitment.share"] == "50 %"
    assert province["management_dossier.share"] == "75 %"
    assert province["support.share"] == "100 %"


def test_a_ministry_reports_on_the_whole_country(
    app: Flask, people: People, data: dict[str, int]
) -> None:
    b = people.get("ministry", "head", PROVINCE).login()
    html = report(b, H1).get_data(as_text=True)
    select_html = html.split('id="r-unit"', 1)[1].split("</select>")[0]
    assert '<option value="VN" selected>Toàn quốc</option>' in select_html
    country = figures(report(b, f"unit=VN&{H1}"))
    province = figures(report(b, f"unit={PROVINCE}&{H1}"))
    # all the data set's cases are in this province: the country has the same figures
    for path, value in province.items():
        if path.startswith(("groups.", "relapses.", "check_ins.")):
            assert country[path] == value, path
    assert "Toàn quốc" in text(report(b, f"unit=VN&{H1}"))
    drill = b.get(f"/reports/cases?unit=VN&{H1}&figure=relapses.events")
    assert drill.status_code == 200 and "Toàn quốc" in text(drill)
    # a province agency gets no country choice
    police = people.get("provincial_police", "head", PROVINCE).login()
    assert 'value="VN"' not in report(police, H1).get_data(as_text=True)
    for path in ("/reports", "/reports/download/xlsx", "/reports/cases"):
        resp = police.get(f"{path}?unit=VN&{H1}&figure=relapses.events")
        assert resp.status_code == 403, path


# --------------------------------------------------------------------------- the drill-down
def test_every_figure_drills_to_as_many_cases(
    app: Flask, people: People, data: dict[str, int]
) -> None:
    b = people.officer().login()
    resp = report(b, f"unit={COMMUNE}&{H1}")
    shown, hrefs = figures(resp), links(resp)
    assert len(hrefs) > 100
    assert "targets.voluntary_home.plan" not in hrefs  # a plan has no cases behind it
    checked = 0
    for path, href in hrefs.items():
        key = parse_qs(urlsplit(href).query)["figure"][0]
        page = b.get(href)
        assert page.status_code == 200, (path, text(page)[:2000])
        html = page.get_data(as_text=True)
        count = int(re.search(r'data-count="(\d+)"', html).group(1))
        rows = re.findall(r'<a class="nowrap" href="/cases/(\d+)">', html)
        assert len(rows) == count, path  # every row on one page here
        if key in shown and "%" not in shown[key]:
            assert count == number(shown[key]), (path, key)
            checked += 1
    assert checked > 100
    page = text(b.get(hrefs["groups.illegal_use.ended"]))
    assert "Quản lý người sử dụng trái phép chất ma túy — Kết thúc trong kỳ" in page
    assert "2 trường hợp, đúng bằng số liệu của báo cáo." in page


def test_drill_pages_and_the_case_page(
    app: Flask, people: People, data: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    officer = people.officer()
    b = officer.login()
    monkeypatch.setattr(web_reports, "PAGE_SIZE", 1)
    first = b.get(f"/reports/cases?unit={COMMUNE}&{H1}&figure=groups.illegal_use.ended")
    html = first.get_data(as_text=True)
    assert 'data-count="2"' in html
    ids = re.findall(r'<a class="nowrap" href="/cases/(\d+)">', html)
    nxt = htmlmod.unescape(re.search(r'<a href="([^"]+)" rel="next">', html).group(1))
    second = b.get(nxt).get_data(as_text=True)
    ids += re.findall(r'<a class="nowrap" href="/cases/(\d+)">', second)
    assert sorted(map(int, ids)) == sorted([data["A"], data["C"]])
    assert 'rel="next"' not in second and "Trang đầu" in second
    page = text(b.get(f"/reports/cases?unit={COMMUNE}&{H1}&figure=groups.illegal_use.ended"))
    assert "Trần Văn Bình" in page and "Xã Đô Lương, Nghệ An" in page and "drug_rehab v1" in page
    # each row says what it counts for: here the transition that left the group
    assert "Kết thúc hồ sơ 14/06/2026 09:00" in page and "transition:" not in page  # C, closed
    page = text(b.get(f"/reports/cases?unit={COMMUNE}&{H1}&figure=check_ins.missed"))
    assert "Kỳ điểm danh, kiểm diện định kỳ" in page and "check_in_due" not in page
    # a case opened from the list is read through the case page: the access log has it
    with app.extensions["rehabflow"].session_factory() as s:
        before = s.scalar(select(func.count()).select_from(AccessLog))
    assert b.get(f"/cases/{ids[0]}").status_code == 200
    with app.extensions["rehabflow"].session_factory() as s:
        logged = s.execute(select(AccessLog).order_by(AccessLog.id.desc())).scalars().first()
        assert s.scalar(select(func.count()).select_from(AccessLog)) == before + 1
    assert (logged.user_id, logged.case_id) == (officer.user_id, int(ids[0]))
    # an unknown figure, a broken page link
    resp = b.get(f"/reports/cases?unit={COMMUNE}&{H1}&figure=nothing")
    assert resp.status_code == 422 and "Không có số liệu này" in text(resp)
    resp = b.get(f"/reports/cases?unit={COMMUNE}&{H1}&figure=relapses.events&cursor=abc")
    assert resp.status_code == 200 and "Liên kết trang không còn hợp lệ" in text(resp)


def test_families_see_the_figures_but_not_the_cases(
    app: Flask, people: People, data: dict[str, int]
) -> None:
    b = people.get("family", "member").login()
    resp = report(b, f"unit={COMMUNE}&{H1}")
    assert figures(resp)["groups.illegal_use.ended"] == "2" and links(resp) == {}
    resp = b.get(f"/reports/cases?unit={COMMUNE}&{H1}&figure=groups.illegal_use.ended")
    assert resp.status_code == 403


# --------------------------------------------------------------------------- downloads
def test_xlsx_download(app: Flask, people: People, data: dict[str, int]) -> None:
    b = people.officer().login()
    html = report(b, f"unit={COMMUNE}&{H1}").get_data(as_text=True)
    href = htmlmod.unescape(re.search(r'href="(/reports/download/xlsx[^"]*)"', html).group(1))
    resp = b.get(href)
    assert resp.status_code == 200
    assert resp.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith(
        'attachment; filename="bao-cao-xa-do-luong-nghe-an-15-12-2025-den-14-06-2026.xlsx"'
    )
    assert "filename*=UTF-8''B%C3%A1o%20c%C3%A1o%20X%C3%A3" in disposition
    disposition.encode("ascii")  # the header is ASCII
    wb = load_workbook(io.BytesIO(resp.data))
    assert wb.sheetnames[:3] == ["Nhóm quản lý", "Hồ sơ bắt buộc", "Tỷ lệ"]
    for ws in wb.worksheets:
        assert ws["A1"].value == TITLE_VI
    rows = {r[1]: r[2:] for r in wb["Nhóm quản lý"].iter_rows(min_row=3, values_only=True)}
    assert rows["illegal_use"] == (1, 1, 2, 0) and rows["voluntary_home"] == (0, 1, 0, 1)
    # in English too, the file is the Vietnamese report
    b.post("/lang", {"lang": "en"})
    again = load_workbook(io.BytesIO(b.get(href).data))
    assert again["Nhóm quản lý"]["A1"].value == TITLE_VI
    assert again["Nhóm quản lý"]["A3"].value == "Cai nghiện tự nguyện tại gia đình, cộng đồng"


def test_csv_download(app: Flask, people: People, data: dict[str, int]) -> None:
    b = people.officer().login()
    resp = b.get(f"/reports/download/csv?unit={COMMUNE}&kind=dates&from=15/12/2025&to=14/06/2026")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.headers["Content-Disposition"].startswith(
        'attachment; filename="bao-cao-xa-do-luong-nghe-an-15-12-2025-den-14-06-2026.csv"'
    )
    lines = list(csv.reader(io.StringIO(resp.data.decode("utf-8-sig"))))
    assert lines[0] == [TITLE_VI]
    at_groups = lines.index(["Nhóm quản lý"])
    rows = {r[1]: r[2:] for r in lines[at_groups + 2 : at_groups + 9]}
    assert rows["illegal_use"] == ["1", "1", "2", "0"]


# --------------------------------------------------------------------------- targets
def test_targets_are_for_administrators(app: Flask, people: People, data: dict[str, int]) -> None:
    b = people.officer().login()
    assert b.get("/admin/targets").status_code == 403
    resp = b.post("/admin/targets", {"unit": COMMUNE, "year": "2026",
                                     "indicator": "compulsory", "target": "5"})  # fmt: skip
    assert resp.status_code == 403
    with app.extensions["rehabflow"].session_factory() as s:
        assert s.get(ReportTarget, (COMMUNE, 2026, "compulsory")) is None


def test_set_a_target_and_see_plan_vs_actual(
    app: Flask, people: People, data: dict[str, int]
) -> None:
    b = people.admin().login()
    resp = b.get(f"/admin/targets?unit={COMMUNE}&year=2026")
    assert resp.status_code == 200
    page = text(resp)
    assert "Chỉ tiêu của Xã Đô Lương, Nghệ An năm 2026" in page
    assert "Cai nghiện tự nguyện tại gia đình, cộng đồng 60" in page  # set by the data set
    resp = b.post(
        "/admin/targets",
        {"unit": COMMUNE, "year": "2026", "indicator": "compulsory", "target": "1234"},
    )
    assert resp.status_code == 303
    assert resp.headers["Location"] == f"/admin/targets?unit={COMMUNE}&year=2026"
    page = text(b.get(resp.headers["Location"]))
    assert "Đã lưu chỉ tiêu: Cai nghiện bắt buộc, Xã Đô Lương, Nghệ An, 2026: 1.234." in page
    shown = figures(report(b, f"unit={COMMUNE}&{H1}"))
    assert shown["targets.compulsory.plan"] == "1.234"
    assert shown["targets.compulsory.actual"] == "0"
    assert shown["targets.compulsory.achieved"] == "0 %"
    # remove it again
    resp = b.post("/admin/targets/delete", {"unit": COMMUNE, "year": "2026",
                                             "indicator": "compulsory"})  # fmt: skip
    assert resp.status_code == 303
    assert "targets.compulsory.plan" not in figures(report(b, f"unit={COMMUNE}&{H1}"))


def test_refused_targets_keep_the_input(app: Flask, people: People, data: dict[str, int]) -> None:
    b = people.admin().login()
    resp = b.post("/admin/targets", {"unit": "99999", "year": "2026", "indicator": "",
                                     "target": "abc"})  # fmt: skip
    assert resp.status_code == 422
    page = text(resp)
    assert "Chưa lưu được chỉ tiêu. Hãy sửa các trường được đánh dấu bên dưới." in page
    assert "Mã xã, phường hoặc tỉnh không tồn tại." in page
    assert "Hãy chọn một chỉ tiêu." in page
    assert "Một số nguyên, từ 0 trở lên." in page
    html = resp.get_data(as_text=True)
    assert 'value="abc"' in html and 'value="99999"' in html
    resp = b.post("/admin/targets", {"unit": COMMUNE, "year": "2026",
                                     "indicator": "support_share", "target": "120"})  # fmt: skip
    assert resp.status_code == 422
    assert "Tỷ lệ phần trăm, từ 0 đến 100." in text(resp)
    assert '<option value="support_share" selected>' in resp.get_data(as_text=True)
    with app.extensions["rehabflow"].session_factory() as s:
        assert s.get(ReportTarget, (COMMUNE, 2026, "support_share")).target == 90  # unchanged


def test_the_targets_form_needs_its_csrf_token(
    app: Flask, people: People, data: dict[str, int]
) -> None:
    b = people.admin().login()
    form = {"unit": COMMUNE, "year": "2026", "indicator": "compulsory", "target": "7"}
    resp = b.client.post("/admin/targets", data=form)
    assert resp.status_code == 400 and "Biểu mẫu đã hết hiệu lực" in text(resp)
    resp = b.client.post("/admin/targets", data=form | {"csrf_token": "forged"})
    assert resp.status_code == 400
    with app.extensions["rehabflow"].session_factory() as s:
        assert s.get(ReportTarget, (COMMUNE, 2026, "compulsory")) is None


# --------------------------------------------------------------------------- English
def test_in_english(app: Flask, people: People, data: dict[str, int]) -> None:
    b = people.officer().login()
    b.post("/lang", {"lang": "en"})
    resp = report(b, f"unit={COMMUNE}&{H1}")
    assert '<html lang="en">' in resp.get_data(as_text=True)
    page = text(resp)
    assert (
        "Report on drug rehabilitation and post-rehabilitation management — "
        "Xã Đô Lương, Nghệ An — from 15/12/2025 to 14/06/2026"
    ) in page
    assert "People under management, by group" in page and "Voluntary home/community rehab" in page
    shown = figures(resp)
    assert shown["targets.voluntary_home.achieved"] == "1.7%"
    assert shown["management_dossier.share"] == "50%"
    drill = text(b.get(links(resp)["groups.illegal_use.ended"]))
    assert "Illegal drug-user management — Ended in the period" in drill
