"""The indicators report as JSON, CSV or XLSX (openpyxl).

The tables are the same in CSV and XLSX: a title row in Vietnamese naming the unit and the
period (dd/mm/yyyy), then one table per section (one sheet each in XLSX, separated by a blank
line in CSV). Numbers stay numbers: XLSX cells get int/float values, shares a percent format.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from typing import Any


@dataclass(frozen=True)
class Table:
    name: str  # sheet name (≤ 31 characters)
    headers: list[str]
    rows: list[list[Any]]


def _d(iso: str) -> str:
    return date.fromisoformat(iso).strftime("%d/%m/%Y")


def title(report: dict[str, Any]) -> str:
    return (
        f"Báo cáo kết quả công tác cai nghiện và quản lý sau cai nghiện ma túy — "
        f"{report['unit_label']} — từ ngày {_d(report['from'])} đến ngày {_d(report['to'])}"
    )


def tables(report: dict[str, Any]) -> list[Table]:
    c, s, f = report["compulsory"], report["support"], report["family_commitment"]
    dossier, rel, chk = report["management_dossier"], report["relapses"], report["check_ins"]
    return [
        Table(
            "Nhóm quản lý",
            ["Nhóm", "Mã", "Đầu kỳ", "Mới trong kỳ", "Kết thúc trong kỳ", "Cuối kỳ"],
            [
                [g["label"], g["group"], g["at_start"], g["new"], g["ended"], g["at_end"]]
                for g in report["groups"]
            ],
        ),
        Table(
            "Hồ sơ bắt buộc",
            ["Chỉ tiêu", "Giá trị"],
            [
                ["Hồ sơ đề nghị đã lập", c["dossiers_made"]],
                ["Đã chuyển Tòa án", c["sent_to_court"]],
                ["Tòa án quyết định đưa vào cơ sở cai nghiện bắt buộc", c["decided"]],
                ["Không đưa vào / đình chỉ", c["rejected"]],
                ["Số ngày làm việc trung bình từ lập hồ sơ đến quyết định", c["avg_working_days"]],
                ["Số ngày làm việc tối đa", c["max_working_days"]],
            ],
        ),
        Table(
            "Tỷ lệ",
            ["Chỉ tiêu", "Số người", "Đạt", "Tỷ lệ", "Chỉ tiêu kế hoạch"],
            [
                ["Hồ sơ quản lý đầy đủ", dossier["cases"], dossier["complete"], dossier["share"],
                 1.0],
                ["Hoàn thành cai nghiện được hỗ trợ (học nghề, vay vốn, việc làm)",
                 s["finished"], s["supported"], s["share"], s["target"]],
                ["Gia đình ký cam kết phối hợp", f["cases"], f["signed"], f["share"], f["target"]],
            ],
        ),
        Table(
            "Tái nghiện, điểm danh",
            ["Chỉ tiêu", "Giá trị"],
            [
                ["Số lượt tái sử dụng, tái nghiện", rel["events"]],
                ["Số người tái sử dụng, tái nghiện", rel["cases"]],
                ["Lượt điểm danh, kiểm diện đã thực hiện", chk["done"]],
                ["Kỳ điểm danh đến hạn", chk["due"]],
                ["Kỳ điểm danh đúng hạn", chk["met_on_time"]],
                ["Kỳ điểm danh bị bỏ lỡ", chk["missed"]],
            ],
        ),
        Table(
            "Thời hạn theo cơ quan",
            ["Cơ quan", "Mã", "Đến hạn", "Đúng hạn", "Trễ hạn", "Quá hạn chưa xử lý",
             "Chưa đến hạn", "Tổng quá hạn"],
            [
                [d["label"], d["agency"], d["due"], d["met_on_time"], d["met_late"],
                 d["overdue_open"], d["pending"], d["overdue"]]
                for d in report["deadlines"]
            ],
        ),
    ]  # fmt: skip


def to_json(report: dict[str, Any]) -> bytes:
    return json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8")


def to_csv(report: dict[str, Any]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([title(report)])
    for t in tables(report):
        w.writerow([])
        w.writerow([t.name])
        w.writerow(t.headers)
        w.writerows(["" if v is None else v for v in row] for row in t.rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")  # BOM: Excel reads UTF-8


def to_xlsx(report: dict[str, Any]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)
    heading = title(report)
    for t in tables(report):
        ws = wb.create_sheet(t.name[:31])
        ws.append([heading])
        ws["A1"].font = Font(bold=True, size=13)
        ws.append(t.headers)
        for cell in ws[2]:
            cell.font = Font(bold=True)
        for row in t.rows:
            ws.append(row)
        if "Tỷ lệ" in t.headers:
            for col in (t.headers.index("Tỷ lệ") + 1, t.headers.index("Tỷ lệ") + 2):
                for r in range(3, ws.max_row + 1):
                    ws.cell(r, col).number_format = "0.0%"
        ws.column_dimensions["A"].width = 60
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


FORMATS = {
    "json": (to_json, "application/json"),
    "csv": (to_csv, "text/csv; charset=utf-8"),
    "xlsx": (to_xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}


def export(report: dict[str, Any], fmt: str) -> tuple[bytes, str]:
    """(content, media type) of ``report`` in ``fmt`` (json, csv or xlsx)."""
    fn, media = FORMATS[fmt]
    return fn(report), media
