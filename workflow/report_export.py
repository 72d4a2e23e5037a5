"""The indicators report as JSON, CSV or XLSX (openpyxl).

The tables are the same in CSV and XLSX: a title row in Vietnamese naming the unit and the
period (dd/mm/yyyy), then one table per section (one sheet each in XLSX, separated by a blank
line in CSV): the groups, compulsory dossiers, shares, relapses and check-ins, deadlines per
agency, plan vs actual for the reporting year, and the monthly trend. Cells keep their types:
XLSX numbers are numbers (shares with a percent format), dates are dates (dd/mm/yyyy); CSV
writes dates as dd/mm/yyyy.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

PERCENT = "0.0%"
DAY = "DD/MM/YYYY"
SOURCES = {
    "unit": "Của đơn vị",
    "communes": "Tổng các xã",
    "provinces": "Tổng các tỉnh",
    "default": "Mức của kế hoạch",
}
KINDS = {"people": "người", "count": "hồ sơ", "percent": "%"}


@dataclass(frozen=True)
class Table:
    name: str  # sheet name (≤ 31 characters)
    headers: list[str]
    rows: list[list[Any]]
    formats: dict[int, str] = field(default_factory=dict)  # column (0-based) -> number format
    widths: dict[int, int] = field(default_factory=dict)


def _d(iso: str) -> str:
    return date.fromisoformat(iso).strftime("%d/%m/%Y")


def title(report: dict[str, Any]) -> str:
    return (
        f"Báo cáo kết quả công tác cai nghiện và quản lý sau cai nghiện ma túy — "
        f"{report['unit_label']} — từ ngày {_d(report['from'])} đến ngày {_d(report['to'])}"
    )


def _plan(report: dict[str, Any], indicator: str, default: float) -> float:
    row = next((t for t in report.get("targets", []) if t["indicator"] == indicator), None)
    return round(row["plan"] / 100, 4) if row else default


def _source(row: dict[str, Any]) -> str:
    text = SOURCES.get(row["source"], row["source"])
    return f"{text} ({row['units']})" if row["source"] in ("communes", "provinces") else text


def _month(key: str) -> str:
    year, month = key.split("-")
    return f"{month}/{year}"


def tables(report: dict[str, Any]) -> list[Table]:
    c, s, f = report["compulsory"], report["support"], report["family_commitment"]
    dossier, rel, chk = report["management_dossier"], report["relapses"], report["check_ins"]
    groups = report["groups"]
    return [
        Table(
            "Nhóm quản lý",
            ["Nhóm", "Mã", "Đầu kỳ", "Mới trong kỳ", "Kết thúc trong kỳ", "Cuối kỳ"],
            [[g["label"], g["group"], g["at_start"], g["new"], g["ended"], g["at_end"]]
             for g in groups],
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
                 _plan(report, "management_dossier_share", 1.0)],
                ["Hoàn thành cai nghiện được hỗ trợ (học nghề, vay vốn, việc làm)",
                 s["finished"], s["supported"], s["share"], s["target"]],
                ["Gia đình ký cam kết phối hợp", f["cases"], f["signed"], f["share"], f["target"]],
            ],
            formats={3: PERCENT, 4: PERCENT},
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
        Table(
            "Kế hoạch và thực hiện",
            [f"Chỉ tiêu năm {report['year']}", "Mã", "Đơn vị tính", "Kế hoạch", "Thực hiện",
             "Tỷ lệ đạt", "Nguồn kế hoạch"],
            [
                [t["label"], t["indicator"], KINDS.get(t["kind"], t["kind"]), t["plan"],
                 t["actual"], t["achieved"], _source(t)]
                for t in report.get("targets", [])
            ],
            formats={5: PERCENT},
        ),
        Table(
            "Xu hướng theo tháng",
            ["Tháng", "Từ ngày", "Đến ngày", *(g["label"] for g in groups),
             "Tổng số đang quản lý", "Hồ sơ mới"],
            [
                [_month(m["month"]), date.fromisoformat(m["from"]), date.fromisoformat(m["to"]),
                 *(m["groups"][g["group"]] for g in groups), m["total"], m["new_cases"]]
                for m in report.get("trend", [])
            ],
            formats={1: DAY, 2: DAY},
            widths={0: 10, 1: 12, 2: 12},
        ),
    ]  # fmt: skip


def to_json(report: dict[str, Any]) -> bytes:
    return json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    return value


def to_csv(report: dict[str, Any]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([title(report)])
    for t in tables(report):
        w.writerow([])
        w.writerow([t.name])
        w.writerow(t.headers)
        w.writerows([_csv_cell(v) for v in row] for row in t.rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")  # BOM: Excel reads UTF-8


def to_xlsx(report: dict[str, Any]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

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
        for col, fmt in t.formats.items():
            for r in range(3, ws.max_row + 1):
                ws.cell(r, col + 1).number_format = fmt
        ws.column_dimensions["A"].width = 60
        for col, width in t.widths.items():
            ws.column_dimensions[get_column_letter(col + 1)].width = width
        ws.freeze_panes = "A3"
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
