"""State diagrams (workflow.diagram): Mermaid, DOT and the self-drawn SVG."""

from __future__ import annotations

import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import pytest

from workflow.definition import Definition
from workflow.diagram import FORMATS, render
from workflow.loader import load_file, parse_text

SVG = "{http://www.w3.org/2000/svg}"
DRUG_REHAB = Path(__file__).resolve().parents[2] / "definitions" / "drug_rehab.v1.yaml"
TRICKY = 'Hồ sơ <b>&amp; "trích" & </b>'  # every XML special character, and an entity

HEADER = textwrap.dedent("""\
    key: {key}
    version: 1
    title: {{vi: "Quy trình <thử> & \\"kiểm tra\\"", en: Test process}}
    effective_from: 2022-01-01
    legal_basis: ["L 73/2021"]
    agency_types:
      - {{code: police, label: {{vi: Công an, en: Police}}, level: commune}}
    roles:
      - {{code: officer, label: {{vi: Cán bộ, en: Officer}}}}
    groups:
      - {{code: other, label: {{vi: Khác, en: Other}}}}
    """)


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _definition(
    states: list[tuple[str, str, str]],
    transitions: list[tuple[str, str, list[str], str, bool]],
    key: str = "mini",
) -> Definition:
    """Parse a definition made of (key, label, kind) states and (key, label, from, to, auto)."""
    lines = [HEADER.format(key=key), "states:"]
    for skey, label, kind in states:
        lines.append(
            f"  - {{key: {skey}, label: {{vi: {_yaml_str(label)}, en: {_yaml_str(skey.upper())}}}, "
            f"kind: {kind}, group: other}}"
        )
    lines.append("transitions:")
    for tkey, label, sources, dest, auto in transitions:
        allowed = "[{agency: system}]" if auto else "[{agency: police, roles: [officer]}]"
        lines.append(
            f"  - {{key: {tkey}, label: {{vi: {_yaml_str(label)}, en: {_yaml_str(tkey)}}}, "
            f"from: [{', '.join(sources)}], to: {dest}, automatic: {str(auto).lower()}, "
            f"allowed: {allowed}}}"
        )
    definition, problems = parse_text("\n".join(lines) + "\n")
    assert not problems, [str(p) for p in problems]
    assert definition is not None
    return definition


def small() -> Definition:
    return _definition(
        [
            ("start", "Bắt đầu: tiếp nhận", "initial"),
            ("review", TRICKY, "active"),
            ("waiting", "Chờ quyết định của cơ quan có thẩm quyền ở cấp tỉnh", "active"),
            ("done", "Kết thúc", "terminal"),
            ("dropped", "Đình chỉ", "terminal"),
        ],
        [
            ("submit", 'Nộp hồ sơ: "đủ"', ["start"], "review", False),
            ("resubmit", "Nộp lại", ["start"], "review", False),  # parallel to submit
            ("forward", "Chuyển", ["review"], "waiting", False),
            ("send_back", "Trả lại", ["waiting"], "review", False),  # a cycle
            ("amend", "Sửa", ["review"], "review", False),  # a self-loop
            ("decide", "Quyết định", ["waiting"], "done", False),
            ("expire", "Hết hạn", ["start", "review", "waiting"], "dropped", True),
        ],
    )


def large() -> Definition:
    """20 states and 35 transitions: a main chain with skips, cycles and one many-source exit."""
    n = 18
    states = [("s0", "Tiếp nhận hồ sơ ban đầu", "initial")]
    states += [(f"s{i}", f"Bước xử lý số {i} của hồ sơ cai nghiện", "active") for i in range(1, n)]
    states += [("done", "Hoàn thành", "terminal"), ("cancelled", "Hủy bỏ hồ sơ", "terminal")]
    transitions = [(f"next{i}", f"Tiếp {i}", [f"s{i}"], f"s{i + 1}", False) for i in range(n - 1)]
    transitions.append(("finish", "Hoàn thành", [f"s{n - 1}"], "done", False))
    transitions += [
        (f"back{i}", f"Quay lại {i}", [f"s{i}"], f"s{i - 3}", False) for i in range(4, n, 3)
    ]
    transitions += [(f"skip{i}", f"Bỏ qua {i}", [f"s{i}"], f"s{i + 2}", False) for i in (1, 5, 9)]
    transitions += [
        (f"auto{i}", f"Tự động {i}", [f"s{i}"], "done", True) for i in (3, 6, 9, 12, 15, 16)
    ]
    transitions += [(f"jump{i}", f"Nhảy {i}", [f"s{i}"], f"s{i + 6}", False) for i in (2, 7)]
    transitions.append(("cancel", "Hủy", [f"s{i}" for i in range(0, n, 2)], "cancelled", False))
    assert len(states) == 20 and len(transitions) == 35, (len(states), len(transitions))
    return _definition(states, transitions, key="big")


def edge_pairs(definition: Definition) -> list[tuple[str, str, str]]:
    """(transition, source, dest) for every source of every transition."""
    return [(t.key, s, t.dest) for t in definition.transitions.values() for s in t.sources]


# --------------------------------------------------------------------------- arguments
def test_formats() -> None:
    assert FORMATS == ("mermaid", "dot", "svg")


@pytest.mark.parametrize("fmt", ["png", "SVG", "", "graphviz"])
def test_unknown_format_raises(fmt: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(fmt))):
        render(small(), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_highlight_raises(fmt: str) -> None:
    with pytest.raises(ValueError, match="'nowhere'"):
        render(small(), fmt, highlight="nowhere")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("highlight", [None, "s7", "done"])
def test_deterministic(fmt: str, highlight: str | None) -> None:
    first = render(large(), fmt, highlight=highlight)
    assert render(large(), fmt, highlight=highlight) == first  # a fresh, equal definition
    definition = small()
    again = render(definition, fmt, highlight="review")
    assert render(definition, fmt, highlight="review") == again


# --------------------------------------------------------------------------- mermaid
MERMAID_EDGE = re.compile(r"^    (\w+) --> (\w+) : (.+)$")


@pytest.mark.parametrize("build", [small, large])
def test_mermaid_has_every_state_and_edge(build: Callable[[], Definition]) -> None:
    definition = build()
    text = render(definition, "mermaid")
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    for key in definition.states:
        assert any(re.fullmatch(rf'    state "[^"]*" as {key}', line) for line in lines), key
    assert f"    [*] --> {definition.initial_state.key}" in lines
    terminals = {k for k, s in definition.states.items() if s.kind == "terminal"}
    assert {line[4:-8] for line in lines if line.endswith(" --> [*]")} == terminals
    found = [m.groups() for line in lines if (m := MERMAID_EDGE.match(line))]
    assert {(s, d) for s, d, _ in found} == {(s, d) for _, s, d in edge_pairs(definition)}
    # one line per (source, dest, label): parallel transitions are not merged
    expected = {(s, d, definition.transitions[t].label.vi) for t, s, d in edge_pairs(definition)}
    assert len(found) == len(expected)
    assert "class " not in text and "classDef" not in text


def test_mermaid_escapes_labels() -> None:
    text = render(small(), "mermaid")
    assert 'state "Hồ sơ #lt;b#gt;#amp;amp#59; #quot;trích#quot; #amp; #lt;/b#gt;" as review' in (
        text
    )
    assert "    start --> review : Nộp hồ sơ#58; #quot;đủ#quot;" in text
    assert "    start --> dropped : Hết hạn (tự động)" in text
    for line in text.splitlines():
        if line.startswith("    state "):
            assert line.count('"') == 2, line
        elif " --> " in line:
            assert line.count(":") <= 1, line


def test_mermaid_highlight() -> None:
    lines = render(small(), "mermaid", highlight="waiting").splitlines()
    assert lines[-1] == "    class waiting current"
    assert any(line.startswith("    classDef current fill:") for line in lines)
    assert sum("current" in line for line in lines) == 2


def test_mermaid_reserved_key() -> None:
    definition = _definition(
        [("start", "Đầu", "initial"), ("end", "Cuối", "terminal")],
        [("stop", "Dừng", ["start"], "end", False)],
    )
    text = render(definition, "mermaid", highlight="end")
    assert 'state "Cuối" as end_' in text
    assert "    start --> end_ : Dừng" in text
    assert "    end_ --> [*]" in text
    assert "    class end_ current" in text


# --------------------------------------------------------------------------- dot
DOT_NODE = re.compile(r'^  "([a-z][a-z0-9_]*)" \[(.*)\];$')
DOT_EDGE = re.compile(r'^  "([a-z][a-z0-9_]*)" -> "([a-z][a-z0-9_]*)" \[(.*)\];$')
DOT_DEFAULTS = re.compile(r"^  (graph|node|edge) \[.*\];$")
DOT_STRING = r'"(?:[^"\\]|\\.)*"'
DOT_ATTR = re.compile(rf"([a-z]+)=({DOT_STRING}|[A-Za-z0-9_.]+)")


def _dot_attrs(body: str) -> dict[str, str]:
    attrs = dict(DOT_ATTR.findall(body))
    # every attribute was consumed: only ", " separators remain
    assert DOT_ATTR.sub("", body).replace(", ", "") == "", body
    return attrs


def _parse_dot(text: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, dict]]]:
    """A small structural check of the DOT grammar used by the renderer."""
    assert text.count("{") == text.count("}")
    lines = text.rstrip("\n").split("\n")
    assert re.fullmatch(rf"digraph {DOT_STRING} {{", lines[0]), lines[0]
    assert lines[-1] == "}"
    nodes: dict[str, dict[str, str]] = {}
    edges: list[tuple[str, str, dict]] = []
    for line in lines[1:-1]:
        if m := DOT_EDGE.match(line):
            edges.append((m[1], m[2], _dot_attrs(m[3])))
        elif m := DOT_NODE.match(line):
            nodes[m[1]] = _dot_attrs(m[2])
        else:
            assert DOT_DEFAULTS.match(line), line
            assert "rankdir=" in line or not line.startswith("  graph")
    return nodes, edges


@pytest.mark.parametrize("build", [small, large])
def test_dot_has_every_state_and_edge(build: Callable[[], Definition]) -> None:
    definition = build()
    nodes, edges = _parse_dot(render(definition, "dot"))
    assert list(nodes) == list(definition.states)
    assert sorted((s, d) for s, d, _ in edges) == sorted(
        (s, d) for _, s, d in edge_pairs(definition)
    )
    for key, attrs in nodes.items():
        state = definition.states[key]
        assert ("peripheries" in attrs) == (state.kind == "terminal"), key
        assert ("bold" in attrs["style"]) == (state.kind == "initial"), key
        assert "fillcolor" not in attrs
    automatic = {
        (s, d) for t, s, d in edge_pairs(definition) if definition.transitions[t].automatic
    }
    for s, d, attrs in edges:
        if (s, d) in automatic:
            assert attrs.get("style") == "dashed"
        elif not any(p == (s, d) for p in automatic):
            assert "style" not in attrs


def test_dot_highlight_fills_that_node_only() -> None:
    nodes, _ = _parse_dot(render(small(), "dot", highlight="waiting"))
    filled = [k for k, attrs in nodes.items() if "fillcolor" in attrs]
    assert filled == ["waiting"]
    assert "filled" in nodes["waiting"]["style"]


def test_dot_escapes_labels() -> None:
    text = render(small(), "dot")
    nodes, edges = _parse_dot(text)
    assert '\\"trích\\"' in nodes["review"]["label"]
    assert nodes["review"]["label"].replace("\\n", " ").replace('\\"', '"') == f'"{TRICKY}"'
    assert any(attrs["label"] == '"Nộp hồ sơ: \\"đủ\\""' for _, _, attrs in edges)


# --------------------------------------------------------------------------- svg
def _svg(definition: Definition, **kwargs) -> tuple[str, ET.Element]:
    text = render(definition, "svg", **kwargs)
    return text, ET.fromstring(text)


def _state_groups(root: ET.Element) -> dict[str, ET.Element]:
    return {
        g.get("id", "")[len("state-") :]: g
        for g in root.iter(f"{SVG}g")
        if g.get("id", "").startswith("state-")
    }


def _edge_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]


def _rect(group: ET.Element) -> tuple[float, float, float, float]:
    rect = group.find(f"{SVG}rect")
    assert rect is not None
    return tuple(float(rect.get(a)) for a in ("x", "y", "width", "height"))  # type: ignore[return-value]


def _ends(path_d: str) -> tuple[tuple[float, float], tuple[float, float]]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path_d)]
    return (numbers[0], numbers[1]), (numbers[-2], numbers[-1])


def _on_border(point: tuple[float, float], rect: tuple[float, float, float, float]) -> bool:
    (px, py), (x, y, w, h) = point, rect
    inside_outer = x - 0.6 <= px <= x + w + 0.6 and y - 0.6 <= py <= y + h + 0.6
    inside_inner = x + 0.6 < px < x + w - 0.6 and y + 0.6 < py < y + h - 0.6
    return inside_outer and not inside_inner


@pytest.mark.parametrize("build", [small, large])
def test_svg_structure(build: Callable[[], Definition]) -> None:
    definition = build()
    text, root = _svg(definition)
    assert root.tag == f"{SVG}svg"
    assert root.get("version") == "1.1"
    assert root.get("role") == "img"
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == f"{definition.title.vi} ({definition.ref})"
    assert title.get("id") in root.get("aria-labelledby", "").split()
    assert root.find(f"{SVG}defs/{SVG}marker") is not None
    assert "<script" not in text and "href=" not in text.replace("url(#", "")  # self-contained

    groups = _state_groups(root)
    assert list(groups) == list(definition.states)
    for key, group in groups.items():
        tip = group.find(f"{SVG}title")
        assert tip is not None and key in tip.text and definition.states[key].label.vi in tip.text
        text_el = group.find(f"{SVG}text")
        assert text_el is not None and 1 <= len(text_el.findall(f"{SVG}tspan")) <= 2
        assert text_el.get("font-size") and root.get("font-family") == "sans-serif"
    assert len({g.get("id") for g in root.iter() if g.get("id")}) == sum(
        1 for g in root.iter() if g.get("id")
    )

    edges = _edge_groups(root)
    found = sorted(
        (g.get("data-transition"), g.get("data-source"), g.get("data-dest")) for g in edges
    )
    assert found == sorted(edge_pairs(definition))
    offset = next(
        g.get("transform") for g in root.iter(f"{SVG}g") if g.get("transform", "").startswith("tr")
    )
    ox, oy = (float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", offset))
    for g in edges:
        tip = g.find(f"{SVG}title")
        t = definition.transitions[g.get("data-transition")]
        assert tip is not None and t.label.vi in tip.text
        line = next(p for p in g.findall(f"{SVG}path") if p.get("class") == "line")
        assert line.get("marker-end", "").startswith("url(#")
        assert (line.get("stroke-dasharray") is not None) == t.automatic
        start, end = _ends(line.get("d"))
        assert _on_border(start, _rect(groups[g.get("data-source")])), (g.get("id"), start)
        assert _on_border(end, _rect(groups[g.get("data-dest")])), (g.get("id"), end)
    # every box lies inside the canvas and no two boxes overlap
    rects = {k: _rect(g) for k, g in groups.items()}
    for x, y, w, h in rects.values():
        assert x + ox >= 0 and y + oy >= 0 and x + ox + w <= width and y + oy + h <= height
    for (a, (ax, ay, aw, ah)), (b, (bx, by, bw, bh)) in combinations(rects.items(), 2):
        assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, (a, b)


def test_svg_size_is_reasonable_for_twenty_states() -> None:
    _, root = _svg(large())
    width, height = float(root.get("width")), float(root.get("height"))
    assert 400 <= width <= 3000 and 400 <= height <= 3000, (width, height)
    assert 0.25 <= width / height <= 4


def test_svg_highlight() -> None:
    text, root = _svg(small(), highlight="waiting")
    current = [g for g in root.iter() if g.get("class") == "current"]
    assert [g.get("id") for g in current] == ["state-waiting"]
    assert current[0].get("aria-current") == "step"
    assert text.count('aria-current="step"') == 1
    styles = {k: g.find(f"{SVG}rect").attrib for k, g in _state_groups(root).items()}
    assert styles["waiting"]["fill"] != styles["review"]["fill"]
    assert float(styles["waiting"]["stroke-width"]) > float(styles["review"]["stroke-width"])
    assert "Chờ quyết định của cơ quan" in root.find(f"{SVG}desc").text

    _, plain = _svg(small())
    assert not [g for g in plain.iter() if g.get("class") == "current"]
    assert 'aria-current="step"' not in render(small(), "svg")


def test_svg_escapes_xml() -> None:
    text, root = _svg(small())
    assert TRICKY not in text  # never written raw
    assert "Hồ sơ &lt;b&gt;&amp;amp; &quot;trích&quot; &amp; &lt;/b&gt;" in text
    review = _state_groups(root)["review"]
    assert review.find(f"{SVG}title").text == f"{TRICKY} (review)"
    assert " ".join(t.text for t in review.iter(f"{SVG}tspan")) == TRICKY
    title = root.find(f"{SVG}title").text
    assert title == 'Quy trình <thử> & "kiểm tra" (mini@1)'


def test_svg_wraps_long_labels_on_two_lines() -> None:
    _, root = _svg(small())
    waiting = _state_groups(root)["waiting"]
    lines = [t.text for t in waiting.iter(f"{SVG}tspan")]
    assert len(lines) == 2
    assert " ".join(lines) == "Chờ quyết định của cơ quan có thẩm quyền ở cấp tỉnh"
    start = [t.text for t in _state_groups(root)["start"].iter(f"{SVG}tspan")]
    assert start == ["Bắt đầu: tiếp nhận"]


def test_svg_english_labels() -> None:
    _, root = _svg(small(), lang="en")
    groups = _state_groups(root)
    assert [t.text for t in groups["waiting"].iter(f"{SVG}tspan")] == ["WAITING"]
    assert root.find(f"{SVG}title").text == "Test process (mini@1)"


def test_svg_initial_and_terminal_styles() -> None:
    _, root = _svg(small())
    groups = _state_groups(root)
    assert len(groups["done"].findall(f"{SVG}rect")) == 2  # double border
    assert len(groups["review"].findall(f"{SVG}rect")) == 1
    start = groups["start"].find(f"{SVG}rect").attrib
    assert float(start["stroke-width"]) > float(
        groups["review"].find(f"{SVG}rect").get("stroke-width")
    )


# --------------------------------------------------------------------------- shipped definition
@pytest.mark.skipif(not DRUG_REHAB.exists(), reason="definitions/drug_rehab.v1.yaml not written")
def test_smoke_drug_rehab() -> None:
    definition = load_file(DRUG_REHAB)
    state = next(k for k, s in definition.states.items() if s.kind == "active")
    for fmt in FORMATS:
        text = render(definition, fmt, highlight=state)
        for key in definition.states:
            assert key in text
    _, root = _svg(definition, highlight=state)
    assert len(_state_groups(root)) == len(definition.states)
    assert len(_edge_groups(root)) == len(edge_pairs(definition))
