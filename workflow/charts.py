"""Server-side SVG charts of the reports: pure functions from numbers to an SVG string.

No script and no external resource: a chart is an ``<svg role="img">`` with a ``<title>`` and
a ``<desc>`` (the figures in words, for screen readers), every value also written as text next
to its bar or point, and series told apart by marker shape and line dash as well as by colour,
so a chart printed in black and white still reads. Every text is XML-escaped.

* :func:`bar_chart`: horizontal bars, one per label (people by group, new cases by month);
* :func:`line_chart`: one line per series over months (people by group at each month end);
* :func:`target_chart`: plan vs actual per indicator, the plan as a hatched track;
* :func:`report_charts`: the charts of an indicators report (``workflow.reports``), for the
  report page and anything else that shows a report.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from functools import partial
from typing import Any
from xml.sax.saxutils import escape, quoteattr

FONT = "font-family=\"'Noto Sans', 'DejaVu Sans', Arial, sans-serif\" font-size=\"13\""
INK = "#1a202c"
BAR = "#2b6cb0"
GRID = "#cbd5e0"
# colours (Okabe-Ito, safe for colour-blind readers), dashes and markers: a series keeps all
# three, so any one of them tells it apart
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "10 4", "4 4", "1 2")
MARKERS = ("circle", "square", "diamond", "triangle", "triangle-down", "cross", "plus")


def _num(x: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _fmt(value: float | int | None, lang: str = "vi") -> str:
    """A figure as people read it: 1.234 and 12,5 in Vietnamese; 1,234 and 12.5 in English."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:,.2f}".rstrip("0").rstrip(".")
    else:
        text = f"{int(value):,}"
    if lang == "vi":
        text = text.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return text


def _id(prefix: str | None, title: str) -> str:
    return prefix or "c" + hashlib.sha1(title.encode("utf-8")).hexdigest()[:8]  # noqa: S324


def _open(width: float, height: float, uid: str, title: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}" role="img" '
        f'aria-labelledby="{uid}-title {uid}-desc" {FONT}>',
        f'<title id="{uid}-title">{escape(title)}</title>',
        f'<desc id="{uid}-desc">{escape(desc)}</desc>',
    ]


def _text(x: float, y: float, content: str, *, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" fill="{INK}"{extra}>'
        f"{escape(content)}</text>"
    )


def _ticks(value: float) -> tuple[float, int]:
    """(step, count): value-axis ticks at 1, 2 or 5 times a power of ten, at most 5 steps,
    the last at or above ``value`` (people are whole: the step is at least 1)."""
    step = 1.0
    while True:
        for mult in (1, 2, 5):
            if step * mult * 5 >= value:
                s = step * mult
                return s, max(1, math.ceil(value / s))
        step *= 10


def _heading(title: str) -> tuple[list[str], int]:
    """The visible heading (split after " — " onto a second line) and the room it takes
    beyond the first line."""
    first, _, second = title.partition(" — ")
    lines = [_text(0, 16, first, font_weight="bold", class_="heading")]
    if second:
        lines.append(_text(0, 34, second, class_="heading"))
    return lines, 18 if second else 0


def _finish(out: list[str], title: str) -> str:
    """Put the heading after the title/desc of ``out`` (and any defs), move the rest down by
    the heading's extra line, and close the SVG."""
    lines, extra = _heading(title)
    head = 4 if out[3].startswith("<defs>") else 3
    if extra:  # the root grows by the extra line
        out[0] = re.sub(
            r'height="([\d.]+)"', lambda m: f'height="{_num(float(m[1]) + extra)}"', out[0], count=1
        )
        out[0] = re.sub(
            r'viewBox="0 0 ([\d.]+) ([\d.]+)"',
            lambda m: f'viewBox="0 0 {m[1]} {_num(float(m[2]) + extra)}"',
            out[0],
        )
    body = out[head:]
    if extra:
        body = [f'<g transform="translate(0 {extra})">', *body, "</g>"]
    return "\n".join([*out[:head], *lines, *body, "</svg>"])


# ---------------------------------------------------------------------------- bars
def bar_chart(
    bars: Sequence[tuple[str, float | int]],
    *,
    title: str,
    desc: str | None = None,
    unit: str = "",
    width: int = 640,
    label_width: int = 0,
    id_prefix: str | None = None,
    lang: str = "vi",
) -> str:
    """Horizontal bars, one per ``(label, value)``, the value written after each bar, under a
    visible heading. Labels sit above their bar (long names never cut), or on its left in
    ``label_width`` pixels when that is given (short labels such as months).

    Bar lengths are proportional to the values (zero: no bar, the value still written)."""
    fmt = partial(_fmt, lang=lang)
    uid = _id(id_prefix, title)
    above = label_width == 0
    bar_h, value_room, top = 18, 70, 30
    row = bar_h + (28 if above else 10)
    height = top + len(bars) * row + 4
    x0 = 0 if above else label_width
    track = width - x0 - value_room
    biggest = max((v for _, v in bars), default=0) or 1
    scale = track / biggest
    if desc is None:
        desc = "; ".join(f"{label}: {fmt(v)}{(' ' + unit) if unit else ''}" for label, v in bars)
    out = _open(width, height, uid, title, desc)
    out.append(f'<g role="list" aria-label={quoteattr(title)}>')
    for i, (label, value) in enumerate(bars):
        y = top + i * row + (18 if above else 0)
        w = max(value, 0) * scale
        words = f"{label}: {fmt(value)}{(' ' + unit) if unit else ''}"
        out.append(f'<g role="listitem" aria-label={quoteattr(words)}>')
        if above:
            out.append(_text(0, y - 5, label, class_="label"))
        else:
            out.append(_text(label_width - 8, y + bar_h / 2 + 4, label, anchor="end"))
        out.append(
            f'<rect class="bar" x="{_num(x0)}" y="{_num(y)}" width="{_num(w)}" '
            f'height="{bar_h}" fill="{BAR}" data-value="{value}">'
            f"<title>{escape(words)}</title></rect>"
        )
        out.append(_text(x0 + w + 6, y + bar_h / 2 + 4, fmt(value), class_="value"))
        out.append("</g>")
    out.append("</g>")
    if bars:
        out.append(
            f'<line class="axis" x1="{_num(x0)}" y1="{_num(top + (14 if above else -4))}" '
            f'x2="{_num(x0)}" y2="{_num(top + len(bars) * row - 4)}" stroke="{INK}"/>'
        )
    return _finish(out, title)


# ---------------------------------------------------------------------------- lines
def _marker(shape: str, x: float, y: float, colour: str, value: Any, words: str) -> str:
    r = 4.5
    attrs = f'class="point" data-value="{value}" data-x="{_num(x)}" data-y="{_num(y)}"'
    tip = f"<title>{escape(words)}</title>"
    if shape == "circle":
        return (
            f'<circle {attrs} cx="{_num(x)}" cy="{_num(y)}" r="{r}" fill="{colour}">{tip}</circle>'
        )
    if shape == "square":
        return (
            f'<rect {attrs} x="{_num(x - r)}" y="{_num(y - r)}" width="{2 * r}" height="{2 * r}" '
            f'fill="{colour}">{tip}</rect>'
        )
    points = {
        "diamond": [(0, -r - 1), (r + 1, 0), (0, r + 1), (-r - 1, 0)],
        "triangle": [(0, -r - 1), (r + 1, r), (-r - 1, r)],
        "triangle-down": [(0, r + 1), (r + 1, -r), (-r - 1, -r)],
        "cross": [(-r, -r), (r, r), (0, 0), (r, -r), (-r, r), (0, 0)],
        "plus": [(0, -r), (0, r), (0, 0), (r, 0), (-r, 0), (0, 0)],
    }[shape]
    path = " ".join(f"{_num(x + dx)},{_num(y + dy)}" for dx, dy in points)
    if shape in ("cross", "plus"):
        return (
            f'<polyline {attrs} points="{path}" fill="none" stroke="{colour}" '
            f'stroke-width="2.5">{tip}</polyline>'
        )
    return f'<polygon {attrs} points="{path}" fill="{colour}">{tip}</polygon>'


def line_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | int]]],
    *,
    title: str,
    desc: str | None = None,
    width: int = 760,
    height: int = 340,
    id_prefix: str | None = None,
    lang: str = "vi",
) -> str:
    """One line per ``(name, values)`` over ``labels`` (e.g. months), with a marker of its own
    shape at each point, the series' name at its end and in the legend, a value axis from 0."""
    fmt = partial(_fmt, lang=lang)
    uid = _id(id_prefix, title)
    left, right, top = 56, 32, 34
    plot_w = width - left - right
    plot_h = height - top - 40
    height = height + 22 * len(series)  # the legend, one series a line
    step, n_ticks = _ticks(max((v for _, vs in series for v in vs), default=0))
    top_value = step * n_ticks
    base = top + plot_h

    def y_of(v: float) -> float:
        return base - v * plot_h / top_value

    gap = plot_w / max(len(labels) - 1, 1)
    xs = [left + i * gap for i in range(len(labels))] if len(labels) > 1 else [left + plot_w / 2]
    if desc is None:
        desc = ". ".join(
            f"{name}: " + ", ".join(f"{lab} {fmt(v)}" for lab, v in zip(labels, vs, strict=True))
            for name, vs in series
        )
    out = _open(width, height, uid, title, desc)
    for k in range(n_ticks + 1):  # value grid and axis, from 0
        v = step * k
        y = y_of(v)
        colour, cls = (INK, "axis-x") if k == 0 else (GRID, "grid")
        out.append(
            f'<line class="{cls}" x1="{left}" y1="{_num(y)}" x2="{_num(left + plot_w)}" '
            f'y2="{_num(y)}" stroke="{colour}"/>'
        )
        out.append(_text(left - 6, y + 4, fmt(v), anchor="end", class_="tick"))
    for x, lab in zip(xs, labels, strict=True):
        out.append(_text(x, base + 18, lab, anchor="middle", class_="label"))
    for n, (name, values) in enumerate(series):
        colour, dash = COLOURS[n % len(COLOURS)], DASHES[n % len(DASHES)]
        shape = MARKERS[n % len(MARKERS)]
        pts = [(x, y_of(v)) for x, v in zip(xs, values, strict=True)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="series" data-name={quoteattr(name)} role="list" '
                   f'aria-label={quoteattr(name)}>')  # fmt: skip
        out.append(
            f'<polyline class="line" points="{" ".join(f"{_num(x)},{_num(y)}" for x, y in pts)}"'
            f' fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        for (x, y), lab, v in zip(pts, labels, values, strict=True):
            words = f"{name}, {lab}: {fmt(v)}"
            out.append(f'<g role="listitem" aria-label={quoteattr(words)}>')
            out.append(_marker(shape, x, y, colour, v, words))
            out.append("</g>")
        out.append("</g>")
    for n, (name, values) in enumerate(series):  # legend: dash, marker, name, last value
        y = base + 44 + n * 22
        colour, dash = COLOURS[n % len(COLOURS)], DASHES[n % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        last = f" ({labels[-1]}: {fmt(values[-1])})" if values else ""
        out.append('<g class="legend">')
        out.append(
            f'<line x1="{left}" y1="{_num(y)}" x2="{left + 30}" y2="{_num(y)}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        out.append(_marker(MARKERS[n % len(MARKERS)], left + 15, y, colour, "", name))
        out.append(_text(left + 38, y + 4, name + last))
        out.append("</g>")
    return _finish(out, title)


# ---------------------------------------------------------------------------- plan vs actual
def target_chart(
    rows: Sequence[tuple[str, float | int, float | int | None]],
    *,
    title: str,
    desc: str | None = None,
    legend: tuple[str, str] = ("Kế hoạch", "Thực hiện"),
    width: int = 700,
    id_prefix: str | None = None,
    lang: str = "vi",
) -> str:
    """Plan vs actual per ``(label, plan, actual)``, under a visible heading and a legend: the
    plan is a hatched track, the actual a solid bar on the same row's scale, followed by
    "actual / plan (x %)"; each label sits above its row."""
    fmt = partial(_fmt, lang=lang)
    uid = _id(id_prefix, title)
    bar_h, row, top, value_room = 22, 50, 54, 170
    height = top + len(rows) * row + 4
    track = width - value_room
    if desc is None:
        desc = "; ".join(
            f"{label}: {legend[1].lower()} {fmt(actual)}, {legend[0].lower()} {fmt(plan)}"
            + (f" ({fmt(round(actual / plan * 100, 1))} %)" if plan and actual is not None else "")
            for label, plan, actual in rows
        )
    out = _open(width, height, uid, title, desc)
    out.append(
        f'<defs><pattern id="{uid}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="{INK}" '
        f'stroke-width="1.2"/></pattern></defs>'
    )
    out.append(  # legend: a hatched and a solid swatch, each named
        f'<rect x="0" y="28" width="18" height="12" fill="url(#{uid}-hatch)" stroke="{INK}"/>'
    )
    out.append(_text(24, 38, legend[0]))
    out.append(f'<rect x="130" y="28" width="18" height="12" fill="{BAR}"/>')
    out.append(_text(154, 38, legend[1]))
    out.append(f'<g role="list" aria-label={quoteattr(title)}>')
    for i, (label, plan, actual) in enumerate(rows):
        y = top + i * row + 20
        scale = track / max(plan or 0, actual or 0, 1)
        share = f" ({fmt(round(actual / plan * 100, 1))} %)" if plan and actual is not None else ""
        words = f"{fmt(actual)} / {fmt(plan)}{share}"
        out.append(
            f'<g class="target" role="listitem" aria-label={quoteattr(label + ": " + words)}>'
        )
        out.append(_text(0, y - 6, label, class_="label"))
        out.append(
            f'<rect class="plan" x="0" y="{_num(y)}" width="{_num((plan or 0) * scale)}" '
            f'height="{bar_h}" fill="url(#{uid}-hatch)" stroke="{INK}" data-value="{plan}"/>'
        )
        out.append(
            f'<rect class="actual" x="0" y="{_num(y + 5)}" '
            f'width="{_num((actual or 0) * scale)}" height="{bar_h - 10}" fill="{BAR}" '
            f'data-value="{"" if actual is None else actual}"/>'
        )
        end = max(plan or 0, actual or 0) * scale
        out.append(_text(end + 6, y + bar_h / 2 + 4, words, class_="value"))
        out.append("</g>")
    out.append("</g>")
    return _finish(out, title)


# ---------------------------------------------------------------------------- a report's
TEXTS = {
    "vi": {
        "groups": "Số người đang quản lý cuối kỳ, theo nhóm",
        "trend": "Số người đang quản lý cuối mỗi tháng, theo nhóm",
        "new_cases": "Số hồ sơ mới trong mỗi tháng",
        "targets": "Kế hoạch và thực hiện",
        "people": "người",
        "cases": "hồ sơ",
        "legend": ("Kế hoạch", "Thực hiện"),
    },
    "en": {
        "groups": "People under management at the end of the period, by group",
        "trend": "People under management at each month end, by group",
        "new_cases": "New cases each month",
        "targets": "Plan and actual",
        "people": "people",
        "cases": "cases",
        "legend": ("Plan", "Actual"),
    },
}


def _month(key: str) -> str:
    year, month = key.split("-")
    return f"{month}/{year}"


def report_charts(report: dict[str, Any], *, lang: str = "vi") -> dict[str, str]:
    """The SVG charts of an indicators report (:func:`workflow.reports.indicators`):
    ``groups`` (bars, people by group at the end), ``trend`` (lines, people by group at each
    month end), ``new_cases`` (bars, new cases by month) and ``targets`` (plan vs actual;
    only when the report has targets). Ids are prefixed per chart, so all can share a page."""
    t = TEXTS.get(lang, TEXTS["vi"])
    where = f"{report['unit_label']}, {_day(report['from'])} – {_day(report['to'])}"
    labels = {g["group"]: g["label"] for g in report["groups"]}
    charts = {
        "groups": bar_chart(
            [(g["label"], g["at_end"]) for g in report["groups"]],
            title=f"{t['groups']} — {where}",
            unit=t["people"],
            id_prefix="rf-groups",
            lang=lang,
        ),
        "trend": line_chart(
            [_month(m["month"]) for m in report["trend"]],
            [(labels[g], [m["groups"][g] for m in report["trend"]]) for g in labels],
            title=f"{t['trend']} — {where}",
            id_prefix="rf-trend",
            lang=lang,
        ),
        "new_cases": bar_chart(
            [(_month(m["month"]), m["new_cases"]) for m in report["trend"]],
            title=f"{t['new_cases']} — {where}",
            unit=t["cases"],
            label_width=80,
            id_prefix="rf-new",
            lang=lang,
        ),
    }
    if report.get("targets"):
        charts["targets"] = target_chart(
            [(r["label"], r["plan"], r["actual"]) for r in report["targets"]],
            title=f"{t['targets']} {report['year']} — {where}",
            legend=t["legend"],
            id_prefix="rf-targets",
            lang=lang,
        )
    return charts


def _day(iso: str) -> str:
    y, m, d = iso.split("-")
    return f"{d}/{m}/{y}"
