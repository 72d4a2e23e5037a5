"""GET /api/v1/reports/indicators: shape, jurisdiction, CSV and XLSX downloads."""

from __future__ import annotations

import io

from openpyxl import load_workbook

from ..conftest import COMMUNE, PROVINCE
from .conftest import OTHER_COMMUNE, OTHER_PROVINCE, ApiUsers, assert_problem, open_case

URL = "/api/v1/reports/indicators"


def test_shape_for_the_commune(users: ApiUsers) -> None:
    officer = users.officer()
    open_case(officer)
    resp = officer.get(f"{URL}?unit={COMMUNE}&from=2025-01-01&to=2025-12-31")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["unit"] == COMMUNE and body["unit_level"] == "commune"
    assert body["from"] == "2025-01-01" and body["to"] == "2025-12-31"
    assert [g["group"] for g in body["groups"]] == [
        "voluntary_home",
        "voluntary_facility",
        "substitution",
        "compulsory",
        "post_rehab",
        "illegal_use",
        "absent",
    ]
    assert set(body) >= {
        "compulsory",
        "management_dossier",
        "support",
        "family_commitment",
        "relapses",
        "check_ins",
        "deadlines",
    }
    assert body["management_dossier"]["cases"] == 1  # the case just opened (state detected)
    # no unit: the user's own unit; a reporting period by name
    resp = officer.get(f"{URL}?period=2026H1")
    assert resp.status_code == 200
    assert resp.get_json()["unit"] == COMMUNE and resp.get_json()["from"] == "2025-12-15"


def test_jurisdiction(users: ApiUsers) -> None:
    officer = users.officer()
    for unit in (OTHER_COMMUNE, PROVINCE, OTHER_PROVINCE):
        assert_problem(officer.get(f"{URL}?unit={unit}&period=2026"), 403)
    province = users.get("provincial_police", "head")
    assert province.unit == PROVINCE
    for unit in (PROVINCE, COMMUNE, OTHER_COMMUNE):
        assert province.get(f"{URL}?unit={unit}&period=2026").status_code == 200
    assert_problem(province.get(f"{URL}?unit={OTHER_PROVINCE}&period=2026"), 403)
    assert_problem(officer.get(f"{URL}?unit=99999&period=2026"), 422)
    assert_problem(officer.get(f"{URL}?unit={COMMUNE}"), 422)
    assert_problem(officer.get(f"{URL}?unit={COMMUNE}&period=2026Q1"), 422)
    # without a unit: one's own unit; the whole country only for a central-level agency
    assert officer.get(f"{URL}?period=2026").get_json()["unit"] == COMMUNE
    assert province.get(f"{URL}?period=2026").get_json()["unit"] == PROVINCE
    ministry = users.get("ministry", "head", PROVINCE)
    country = ministry.get(f"{URL}?period=2026")
    assert country.status_code == 200 and country.get_json()["unit"] is None
    for unit in (OTHER_PROVINCE, OTHER_COMMUNE):
        assert ministry.get(f"{URL}?unit={unit}&period=2026").status_code == 200


def test_xlsx_and_csv(users: ApiUsers) -> None:
    officer = users.officer()
    open_case(officer)
    resp = officer.get(f"{URL}?unit={COMMUNE}&from=2025-01-01&to=2025-12-31&format=xlsx")
    assert resp.status_code == 200
    assert resp.mimetype.endswith("spreadsheetml.sheet")
    wb = load_workbook(io.BytesIO(resp.data))
    assert wb.sheetnames == [
        "Nhóm quản lý",
        "Hồ sơ bắt buộc",
        "Tỷ lệ",
        "Tái nghiện, điểm danh",
        "Thời hạn theo cơ quan",
        "Kế hoạch và thực hiện",
        "Xu hướng theo tháng",
    ]
    ws = wb["Nhóm quản lý"]
    heading = ws["A1"].value
    assert "Xã Đô Lương, Nghệ An" in heading and "01/01/2025" in heading
    assert "31/12/2025" in heading
    assert [c.value for c in ws[2]] == [
        "Nhóm",
        "Mã",
        "Đầu kỳ",
        "Mới trong kỳ",
        "Kết thúc trong kỳ",
        "Cuối kỳ",
    ]
    rows = {r[1]: r[2:] for r in ws.iter_rows(min_row=3, values_only=True)}
    assert rows["illegal_use"] == (0, 0, 0, 0)
    assert all(isinstance(v, int) for r in rows.values() for v in r)
    ratio = wb["Tỷ lệ"]
    # the open case is in its initial state, which requires no document: complete
    assert ratio.cell(3, 2).value == 1 and ratio.cell(3, 4).value == 1.0
    assert ratio.cell(3, 4).number_format == "0.0%"
    resp = officer.get(f"{URL}?unit={COMMUNE}&period=2026&format=csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    text = resp.data.decode("utf-8-sig")
    assert text.splitlines()[0].startswith('"Báo cáo') or text.startswith("Báo cáo")
    assert "15/12/2025" in text.splitlines()[0]


DRILL = "/api/v1/reports/cases"
TARGETS = "/api/v1/reports/targets"
YEAR_2025 = "from=2025-01-01&to=2025-12-31"


def test_report_carries_targets_trend_and_drill_keys(users: ApiUsers) -> None:
    officer = users.officer()
    open_case(officer)
    body = officer.get(f"{URL}?unit={COMMUNE}&{YEAR_2025}").get_json()
    assert body["year"] == 2026  # a period ending on or after 15/12 belongs to the next year
    assert [m["month"] for m in body["trend"]][:2] == ["2025-01", "2025-02"]
    assert body["trend"][5]["new_cases"] == 1  # opened in June
    assert body["drill"]["groups.voluntary_home.at_end"] == "groups.voluntary_home.at_end"
    assert body["drill"]["support.share"] == "support.finished"
    assert {t["indicator"] for t in body["targets"]} >= {"support_share"}  # the plans' default


def test_drill_down(users: ApiUsers) -> None:
    officer = users.officer()
    ids = [open_case(officer) for _ in range(3)]
    url = f"{DRILL}?unit={COMMUNE}&{YEAR_2025}&figure=management_dossier.cases&limit=2"
    resp = officer.get(url)
    assert resp.status_code == 200, resp.get_json()
    page = resp.get_json()
    assert page["count"] == 3 and len(page["items"]) == 2 and page["next"]
    item = page["items"][0]
    assert item["id"] == ids[-1] and item["state"] == "detected" and item["unit_code"] == COMMUNE
    assert item["full_name"] == "Trần Văn Bình"  # the officer may open the case
    assert "national_id" not in item and "date_of_birth" not in item
    rest = officer.get(page["next"]).get_json()
    assert [x["id"] for x in page["items"] + rest["items"]] == sorted(ids, reverse=True)
    assert rest["next"] is None
    # the count is the figure
    report = officer.get(f"{URL}?unit={COMMUNE}&{YEAR_2025}").get_json()
    assert report["management_dossier"]["cases"] == page["count"]
    new = officer.get(f"{DRILL}?unit={COMMUNE}&{YEAR_2025}&figure=trend.2025-06.new_cases")
    assert new.get_json()["count"] == 3
    assert new.get_json()["items"][0]["detail"] == "case.opened"


def test_drill_down_rules(users: ApiUsers) -> None:
    officer = users.officer()
    open_case(officer)
    figure = f"{YEAR_2025}&figure=management_dossier.cases"
    # a province agency sees the figure's cases, but not the names of cases not routed to it
    province = users.get("provincial_police", "head")
    page = province.get(f"{DRILL}?unit={PROVINCE}&{figure}").get_json()
    assert page["count"] == 1 and page["items"][0]["full_name"] is None
    # the same unit rules as the indicators
    assert_problem(officer.get(f"{DRILL}?unit={OTHER_COMMUNE}&{figure}"), 403)
    assert_problem(officer.get(f"{DRILL}?unit={PROVINCE}&{figure}"), 403)
    # families and mentors may not drill
    for agency in ("family", "mentor"):
        caller = users.get(agency, "member")
        assert_problem(caller.get(f"{DRILL}?unit={COMMUNE}&{figure}"), 403)
    bad = assert_problem(officer.get(f"{DRILL}?unit={COMMUNE}&{YEAR_2025}&figure=nothing"), 422)
    assert "figure" in bad["errors"]
    bad = assert_problem(officer.get(f"{DRILL}?unit={COMMUNE}&{figure}&cursor=abc"), 422)
    assert "cursor" in bad["errors"]
    assert_problem(officer.get(f"{DRILL}?unit={COMMUNE}&{YEAR_2025}"), 422)  # no figure
    gone = officer.get(f"{DRILL}?unit={COMMUNE}&{YEAR_2025}&figure=trend.2024-01.total")
    assert "figure" in assert_problem(gone, 422)["errors"]


def test_targets(users: ApiUsers) -> None:
    admin = users.admin()
    put = admin.request(
        "PUT",
        TARGETS,
        json={"unit": COMMUNE, "year": 2026, "indicator": "home_community", "target": 60},
    )
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["indicator"] == "voluntary_home" and put.get_json()["target"] == 60
    assert put.get_json()["set_by"] == admin.user_id
    listed = admin.get(f"{TARGETS}?unit={PROVINCE}&year=2026").get_json()
    assert listed["targets"] == []
    plan = {p["indicator"]: p for p in listed["plan"]}
    assert (plan["voluntary_home"]["plan"], plan["voluntary_home"]["source"]) == (60, "communes")
    report = admin.get(f"{URL}?unit={COMMUNE}&period=2026").get_json()
    row = next(t for t in report["targets"] if t["indicator"] == "voluntary_home")
    assert (row["plan"], row["actual"], row["achieved"]) == (60, 0, 0.0)
    assert admin.request("DELETE", f"{TARGETS}?unit={COMMUNE}&year=2026&indicator=voluntary_home")
    gone = admin.request("DELETE", f"{TARGETS}?unit={COMMUNE}&year=2026&indicator=voluntary_home")
    assert_problem(gone, 404)
    verify = admin.get("/api/v1/audit/verify").get_json()
    assert verify["ok"] and verify["checked"] == 2  # the set and the delete


def test_targets_refuse_bad_input_naming_the_field(users: ApiUsers) -> None:
    admin = users.admin()
    good = {"unit": COMMUNE, "year": 2026, "indicator": "voluntary_home", "target": 60}
    for field, value in (
        ("unit", "99999"),
        ("year", 1900),
        ("year", "2026"),
        ("indicator", "everything"),
        ("target", -1),
        ("target", 1.5),
    ):
        resp = admin.request("PUT", TARGETS, json=good | {field: value})
        assert field in assert_problem(resp, 422)["errors"], (field, value)
    resp = admin.request("PUT", TARGETS, json=good | {"indicator": "support_share", "target": 120})
    assert "target" in assert_problem(resp, 422)["errors"]
    officer = users.officer()
    assert_problem(officer.request("PUT", TARGETS, json=good), 403)
    assert_problem(officer.get(f"{TARGETS}?unit={COMMUNE}&year=2026"), 403)
