"""workflow.charts: the SVG parses, says what it shows, and its shapes match the values."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from workflow.charts import bar_chart, line_chart, report_charts, target_chart

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby").split()
    assert root.find(f"s:title[@id='{title_id}']", NS) is not None
    assert root.find(f"s:desc[@id='{desc_id}']", NS) is not None
    assert not root.findall(".//s:script", NS) and "<script" not in svg
    assert "href" not in svg.replace("url(#", "")  # nothing external
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_bar_lengths_are_proportional_to_the_values() -> None:
    bars = [("Cai nghiện tại gia đình", 60), ("Methadone", 250), ("Bắt buộc", 15), ("Khác", 0)]
    root = parse(bar_chart(bars, title="Số người", unit="người"))
    rects = root.findall(".//s:rect[@class='bar']", NS)
    assert [float(r.get("data-value")) for r in rects] == [60, 250, 15, 0]
    widths = [float(r.get("width")) for r in rects]
    assert widths[3] == 0
    for (_, v), w in zip(bars, widths, strict=True):
        assert w == pytest.approx(widths[1] * v / 250, abs=0.01)
    assert len({r.get("x") for r in rects}) == 1  # one baseline
    words = texts(root)
    for label, v in bars:
        assert label in words and str(v) in words  # readable without colour
    desc = root.find("s:desc", NS).text
    assert "Methadone: 250 người" in desc


def test_text_is_escaped() -> None:
    svg = bar_chart([("<script>alert(1)</script> & co", 3)], title='A "title" <b>')
    root = parse(svg)
    assert "<script>alert(1)</script> & co" in texts(root)
    assert root.find("s:title", NS).text == 'A "title" <b>'
    assert "&lt;script&gt;" in svg


def test_empty_and_all_zero_bars() -> None:
    root = parse(bar_chart([], title="Không có số liệu"))
    assert root.findall(".//s:rect[@class='bar']", NS) == []
    root = parse(bar_chart([("a", 0), ("b", 0)], title="0"))
    assert [float(r.get("width")) for r in root.findall(".//s:rect", NS)] == [0, 0]


def series_points(root: ET.Element) -> dict[str, list[tuple[float, float, float]]]:
    out = {}
    for g in root.findall(".//s:g[@class='series']", NS):
        out[g.get("data-name")] = [
            (float(p.get("data-x")), float(p.get("data-y")), float(p.get("data-value")))
            for p in g.iter()
            if p.get("class") == "point"
        ]
    return out


def test_line_points_correspond_to_the_values() -> None:
    months = ["12/2025", "01/2026", "02/2026", "03/2026"]
    series = [("Tại gia đình", [0, 1, 1, 3]), ("Methadone", [2, 2, 0, 1])]
    root = parse(line_chart(months, series, title="Xu hướng"))
    points = series_points(root)
    assert list(points) == ["Tại gia đình", "Methadone"]
    base = float(root.find(".//s:line[@class='axis-x']", NS).get("y1"))
    all_points = [p for ps in points.values() for p in ps]
    unit = next((base - y) / v for _, y, v in all_points if v)
    for name, values in series:
        got = points[name]
        assert [v for _, _, v in got] == values
        for _, y, v in got:
            assert base - y == pytest.approx(v * unit, abs=0.02)  # same scale, from 0
        xs = [x for x, _, _ in got]
        assert xs == sorted(xs) and len(set(xs)) == len(months)  # one point per month
        line = root.find(f".//s:g[@data-name='{name}']/s:polyline[@class='line']", NS)
        coords = [tuple(map(float, pair.split(","))) for pair in line.get("points").split()]
        flat = [c for pair in coords for c in pair]
        assert flat == pytest.approx([c for x, y, _ in got for c in (x, y)], abs=0.01)
    words = texts(root)
    assert all(m in words for m in months)
    # the legend names each series with its last value
    assert "Tại gia đình (03/2026: 3)" in words and "Methadone (03/2026: 1)" in words
    assert "Xu hướng" in words  # a visible heading too
    # told apart without colour: another marker shape and another dash
    first, second = (root.find(f".//s:g[@data-name='{n}']", NS) for n, _ in series)
    shape = {el.tag for el in first.iter() if el.get("class") == "point"}
    assert shape != {el.tag for el in second.iter() if el.get("class") == "point"}
    assert first.find("s:polyline", NS).get("stroke-dasharray") != second.find(
        "s:polyline", NS
    ).get("stroke-dasharray")


def test_target_chart() -> None:
    rows = [("Tại gia đình", 60, 30), ("Methadone", 250, 250), ("Hỗ trợ (%)", 80, None)]
    root = parse(target_chart(rows, title="Kế hoạch"))
    groups = root.findall(".//s:g[@class='target']", NS)
    assert len(groups) == 3
    plan = [float(g.find("s:rect[@class='plan']", NS).get("width")) for g in groups]
    actual = [float(g.find("s:rect[@class='actual']", NS).get("width")) for g in groups]
    assert actual[0] == pytest.approx(plan[0] / 2, abs=0.01)  # half the plan
    assert actual[1] == pytest.approx(plan[1], abs=0.01)
    assert actual[2] == 0
    words = texts(root)
    assert "30 / 60 (50 %)" in words and "— / 80" in words
    assert "Kế hoạch" in words and "Thực hiện" in words  # the legend names both


def test_value_axis_reaches_the_biggest_value() -> None:
    for biggest in (0, 1, 3, 7.5, 8.5, 31, 250, 1999):
        root = parse(line_chart(["a", "b"], [("s", [0, biggest])], title="t"))
        ticks = [vi_number(t.text) for t in root.iter() if t.get("class") == "tick"]
        assert ticks[0] == 0 and ticks[-1] >= biggest and len(ticks) <= 6
        assert all(t == int(t) for t in ticks)  # whole people


def test_report_charts() -> None:
    groups = [
        {"group": "voluntary_home", "label": "Tại gia đình", "at_end": 4},
        {"group": "substitution", "label": "Methadone", "at_end": 7},
    ]
    trend = [
        {"month": "2026-01", "groups": {"voluntary_home": 1, "substitution": 7}, "new_cases": 2},
        {"month": "2026-02", "groups": {"voluntary_home": 4, "substitution": 7}, "new_cases": 3},
    ]
    report = {
        "unit_label": "Xã Đô Lương, Nghệ An",
        "from": "2026-01-01",
        "to": "2026-02-28",
        "year": 2026,
        "groups": groups,
        "trend": trend,
        "targets": [{"label": "Tại gia đình", "plan": 10, "actual": 5}],
    }
    charts = report_charts(report)
    assert set(charts) == {"groups", "trend", "new_cases", "targets"}
    ids = set()
    for svg in charts.values():
        root = parse(svg)
        ids |= {el.get("id") for el in root.iter() if el.get("id")}
        assert "Xã Đô Lương, Nghệ An, 01/01/2026 – 28/02/2026" in root.find("s:title", NS).text
    assert len(ids) == 4 * 2 + 1  # title and desc of each, one hatch pattern: all distinct
    bars = parse(charts["groups"]).findall(".//s:rect[@class='bar']", NS)
    assert [float(b.get("data-value")) for b in bars] == [4, 7]
    points = series_points(parse(charts["trend"]))
    assert [v for _, _, v in points["Tại gia đình"]] == [1, 4]
    assert "01/2026" in texts(parse(charts["new_cases"]))
    assert "targets" not in report_charts({**report, "targets": []})
    english = report_charts(report, lang="en")["groups"]
    assert "People under management" in english


def vi_number(text: str) -> float:
    """A figure written the Vietnamese way (1.234,5) as a number."""
    return float(text.replace(".", "").replace(",", "."))


def test_figures_are_written_the_way_each_language_reads_them() -> None:
    bars = [("Nhóm", 1234.5), ("Khác", 2000)]
    vi = {t.text for t in parse(bar_chart(bars, title="t")).iter() if t.get("class") == "value"}
    en = {
        t.text
        for t in parse(bar_chart(bars, title="t", lang="en")).iter()
        if t.get("class") == "value"
    }
    assert vi == {"1.234,5", "2.000"}
    assert en == {"1,234.5", "2,000"}
