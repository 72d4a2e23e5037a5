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
