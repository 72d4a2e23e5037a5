"""State diagrams of a definition: Mermaid, Graphviz DOT or a self-contained SVG.

``render(definition, fmt)`` draws the states and transitions of one definition version, optionally
highlighting the state a case is in. Mermaid and DOT are text for other tools; the SVG is drawn
here, in pure Python, by a small layered (Sugiyama-style) layout so that no Graphviz binary is
needed:

1. cycles are broken by reversing the back edges of a depth-first search from the initial state;
2. each state's layer is its longest-path depth in that acyclic graph (the flow reads one way and
   terminal states come last);
3. edges spanning several layers are routed through dummy points, bundled per target state (all
   "close the case" edges share one trunk instead of a dozen parallel lines);
4. the order inside each layer is improved by barycenter sweeps and adjacent swaps (fewer
   crossings), and positions are found by repeated averaging with an exact minimum-gap projection.

The layout is laid out both left-to-right and top-to-bottom and the one whose shape is closer to
a 4:3 screen is kept. Everything is deterministic: the same definition gives the same bytes.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from workflow.definition import Definition, Transition

FORMATS = ("mermaid", "dot", "svg")

_TEXTS = {
    "vi": {
        "manual": "chuyển tiếp",
        "automatic": "tự động",
        "initial": "bắt đầu",
        "terminal": "kết thúc",
        "current": "trạng thái hiện tại",
        "summary": "Sơ đồ trạng thái {ref}: {states} trạng thái, {transitions} chuyển tiếp.",
        "current_is": " Trạng thái hiện tại: {label}.",
    },
    "en": {
        "manual": "transition",
        "automatic": "automatic",
        "initial": "initial",
        "terminal": "terminal",
        "current": "current state",
        "summary": "State diagram of {ref}: {states} states, {transitions} transitions.",
        "current_is": " Current state: {label}.",
    },
}

# Colours (Material palette) shared by the DOT and SVG output.
_CURRENT_FILL = "#ffd54f"
_CURRENT_STROKE = "#e65100"
_INITIAL_FILL = "#e3f2fd"
_INITIAL_STROKE = "#1565c0"
_TERMINAL_FILL = "#eceff1"
_NODE_FILL = "#ffffff"
_NODE_STROKE = "#455a64"
_EDGE_STROKE = "#78909c"
_TEXT_FILL = "#212121"


def render(
    definition: Definition, fmt: str, *, highlight: str | None = None, lang: str = "vi"
) -> str:
    """Draw the state graph of a definition.

    Args:
        definition: The definition whose states and transitions are drawn.
        fmt: One of :data:`FORMATS`: ``"mermaid"`` (a ``stateDiagram-v2``), ``"dot"`` (a Graphviz
            digraph) or ``"svg"`` (a self-contained SVG 1.1 document, laid out here).
        highlight: Key of a state to emphasise, typically the state a case is in.
        lang: Language of the labels, ``"vi"`` (default) or ``"en"``.

    Returns:
        The diagram as text; the same arguments always give the same text.

    Raises:
        ValueError: If ``fmt`` is not a known format or ``highlight`` is not a state of the
            definition.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown diagram format {fmt!r} (use one of: {', '.join(FORMATS)})")
    if highlight is not None and highlight not in definition.states:
        raise ValueError(
            f"unknown state {highlight!r} to highlight: not a state of {definition.ref}"
        )
    renderers: dict[str, Callable[[Definition, str | None, str], str]] = {
        "mermaid": _render_mermaid,
        "dot": _render_dot,
        "svg": _render_svg,
    }
    return renderers[fmt](definition, highlight, lang)


# --------------------------------------------------------------------------- shared helpers
@dataclass(frozen=True)
class _Edge:
    """One drawn edge: one source of one transition."""

    transition: Transition
    source: str
    dest: str


def _edges(definition: Definition) -> list[_Edge]:
    """Every (transition, source) pair in definition order, skipping dangling references."""
    out: list[_Edge] = []
    seen: set[tuple[str, str]] = set()
    for t in definition.transitions.values():
        for source in t.sources:
            known = source in definition.states and t.dest in definition.states
            if known and (t.key, source) not in seen:
                seen.add((t.key, source))
                out.append(_Edge(t, source, t.dest))
    return out


def _initial_key(definition: Definition) -> str | None:
    keys = [k for k, s in definition.states.items() if s.kind == "initial"]
    return keys[0] if keys else next(iter(definition.states), None)


def _texts(lang: str) -> dict[str, str]:
    return _TEXTS["en" if lang == "en" else "vi"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- mermaid
_MERMAID_ENTITIES = {
    "#": "#35;",
    "&": "#amp;",
    '"': "#quot;",
    ":": "#58;",
    ";": "#59;",
    "<": "#lt;",
    ">": "#gt;",
    "{": "#123;",
    "}": "#125;",
}
# Words the stateDiagram grammar reads as keywords; a state with such a key gets a suffix.
_MERMAID_RESERVED = frozenset(
    {"as", "class", "classdef", "click", "direction", "end", "note", "state", "style"}
)


def _mermaid_text(text: str) -> str:
    """Escape a label with Mermaid entity codes (``#quot;``, ``#58;``...), on one line."""
    return "".join(_MERMAID_ENTITIES.get(c, c) for c in _one_line(text))


def _mermaid_id(key: str) -> str:
    return f"{key}_" if key.lower() in _MERMAID_RESERVED else key


def _render_mermaid(definition: Definition, highlight: str | None, lang: str) -> str:
    texts = _texts(lang)
    title = _one_line(f"{definition.title.get(lang)} ({definition.ref})")
    lines = ["stateDiagram-v2", f"    %% {title}"]
    for key, state in definition.states.items():
        lines.append(f'    state "{_mermaid_text(state.label.get(lang))}" as {_mermaid_id(key)}')
    initial = _initial_key(definition)
    if initial is not None:
        lines.append(f"    [*] --> {_mermaid_id(initial)}")
    seen: set[str] = set()
    for e in _edges(definition):
        label = e.transition.label.get(lang)
        if e.transition.automatic:
            label = f"{label} ({texts['automatic']})"
        line = f"    {_mermaid_id(e.source)} --> {_mermaid_id(e.dest)} : {_mermaid_text(label)}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    for key, state in definition.states.items():
        if state.kind == "terminal":
            lines.append(f"    {_mermaid_id(key)} --> [*]")
    if highlight is not None:
        lines.append(
            f"    classDef current fill:{_CURRENT_FILL},stroke:{_CURRENT_STROKE},"
            "stroke-width:3px,color:#000000,font-weight:bold"
        )
        lines.append(f"    class {_mermaid_id(highlight)} current")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- dot
def _dot_quote(lines: Iterable[str]) -> str:
    """A DOT double-quoted string; several lines are joined by DOT's ``\\n`` escape."""
    escaped = (
        _one_line(line).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        for line in lines
    )
    return '"' + "\\n".join(escaped) + '"'


def _render_dot(definition: Definition, highlight: str | None, lang: str) -> str:
    texts = _texts(lang)
    initial = _initial_key(definition)
    title = f"{definition.title.get(lang)} ({definition.ref})"
    out = [
        f"digraph {_dot_quote([definition.ref])} {{",
        f'  graph [rankdir=TB, charset="UTF-8", fontname="sans-serif", labelloc=t, '
        f"label={_dot_quote([title])}];",
        f'  node [shape=box, style=rounded, fontname="sans-serif", fontsize=11, '
        f'color="{_NODE_STROKE}"];',
        f'  edge [fontname="sans-serif", fontsize=9, color="{_EDGE_STROKE}"];',
    ]
    width = _node_width([s.label.get(lang) for s in definition.states.values()])
    for key, state in definition.states.items():
        lines = _wrap(state.label.get(lang), width - 2 * _NODE_PAD, _FONT_SIZE)
        styles = [] if state.kind == "terminal" else ["rounded"]
        attrs = [f"label={_dot_quote(lines)}", f"tooltip={_dot_quote([key])}"]
        if state.kind == "terminal":
            attrs.append("peripheries=2")
        if key == initial:
            styles.append("bold")
            attrs.append(f'color="{_INITIAL_STROKE}"')
        if key == highlight:
            styles += ["filled", "bold"]
            attrs += [
                f'fillcolor="{_CURRENT_FILL}"',
                f'color="{_CURRENT_STROKE}"',
                "penwidth=3",
            ]
        styles = list(dict.fromkeys(styles))
        attrs.insert(1, f'style="{",".join(styles)}"')
        out.append(f"  {_dot_quote([key])} [{', '.join(attrs)}];")
    for e in _edges(definition):
        label = e.transition.label.get(lang)
        lines = _wrap(label, 180, 9)
        if e.transition.automatic:
            lines.append(f"({texts['automatic']})")
        attrs = [f"label={_dot_quote(lines)}", f"tooltip={_dot_quote([label])}"]
        if e.transition.automatic:
            attrs.append("style=dashed")
        out.append(f"  {_dot_quote([e.source])} -> {_dot_quote([e.dest])} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- text metrics
_FONT_SIZE = 13.0
_LINE_HEIGHT = 16.0
_NODE_PAD = 10.0
_NODE_MIN_WIDTH = 120.0
_NODE_MAX_WIDTH = 270.0
_NARROW = frozenset("iljtfrI.,:;'!|()[]{}/\\-")
_WIDE = frozenset("mwMW@%")


def _char_width(char: str) -> float:
    """Advance of one character in em, a little generous for DejaVu Sans / Arial."""
    base = unicodedata.normalize("NFD", char)[:1] or char
    if base == " ":
        return 0.32
    if base in _NARROW:
        return 0.34
    if base in _WIDE:
        return 0.9
    if base.isupper():
        return 0.7
    if base.isdigit():
        return 0.6
    if unicodedata.east_asian_width(base) in ("W", "F"):
        return 1.0
    return 0.56


def _text_width(text: str, size: float) -> float:
    return sum(_char_width(c) for c in text) * size


def _node_width(labels: Iterable[str]) -> float:
    """The node width that shows every label on at most two lines (within the bounds)."""
    need = _NODE_MIN_WIDTH - 2 * _NODE_PAD
    for label in labels:
        words = _one_line(label).split(" ")
        best = _text_width(" ".join(words), _FONT_SIZE)
        for cut in range(1, len(words)):
            first = _text_width(" ".join(words[:cut]), _FONT_SIZE)
            second = _text_width(" ".join(words[cut:]), _FONT_SIZE)
            best = min(best, max(first, second))
        need = max(need, best)
    return min(_NODE_MAX_WIDTH, math.ceil(need + 2 * _NODE_PAD))


def _truncate(text: str, width: float, size: float) -> str:
    if _text_width(text, size) <= width:
        return text
    while text and _text_width(text + "…", size) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _wrap(text: str, width: float, size: float, max_lines: int = 2) -> list[str]:
    """Break a label into at most ``max_lines`` lines of ``width`` pixels, balanced.

    A label that fits on one line stays on one line; one that needs two is cut where the longer
    line is shortest; one that does not fit in two is filled greedily and ends with an ellipsis.
    """
    text = _one_line(text)
    if _text_width(text, size) <= width or max_lines < 2:
        return [_truncate(text, width, size)]
    words = text.split(" ")
    if max_lines == 2:
        cuts = []
        for cut in range(1, len(words)):
            first, second = " ".join(words[:cut]), " ".join(words[cut:])
            longest = max(_text_width(first, size), _text_width(second, size))
            if longest <= width:
                cuts.append((longest, cut, [first, second]))
        if cuts:
            return min(cuts)[2]
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if current and _text_width(candidate, size) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
        lines[-1] = _truncate(lines[-1] + "…", width, size)
    return [_truncate(line, width, size) for line in lines]


# --------------------------------------------------------------------------- layered layout
@dataclass
class _Route:
    """The path of one edge through the layers, from its upper (earlier) state to its lower."""

    edge: _Edge
    nodes: list[str]  # real states at both ends, dummy points in between
    reversed: bool  # True when the arrow points at nodes[0] (a back edge)


@dataclass
class _Graph:
    """Layers, order and routes: everything of the layout but the coordinates."""

    layer: dict[str, int]
    layers: list[list[str]]
    routes: list[_Route]
    loops: list[_Edge]
    up: dict[str, list[str]] = field(default_factory=dict)
    down: dict[str, list[str]] = field(default_factory=dict)

    def is_dummy(self, node: str) -> bool:
        return node.startswith("~")


def _back_edges(keys: list[str], start: str | None, edges: list[_Edge]) -> set[tuple[str, str]]:
    """Edges closing a cycle in a depth-first search from the initial state (definition order)."""
    out: dict[str, list[str]] = {k: [] for k in keys}
    for e in edges:
        if e.source != e.dest and e.dest not in out[e.source]:
            out[e.source].append(e.dest)
    status: dict[str, int] = {}  # 1 on the stack, 2 finished
    back: set[tuple[str, str]] = set()
    roots = ([start] if start else []) + [k for k in keys if k != start]
    for root in roots:
        if root in status:
            continue
        status[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            node, successors = stack[-1]
            nxt = next(successors, None)
            if nxt is None:
                status[node] = 2
                stack.pop()
            elif nxt not in status:
                status[nxt] = 1
                stack.append((nxt, iter(out[nxt])))
            elif status[nxt] == 1:
                back.add((node, nxt))
    return back


def _preorder(keys: list[str], start: str | None, edges: list[_Edge]) -> dict[str, int]:
    """Breadth-first discovery index from the initial state; a stable first guess of the order."""
    out: dict[str, list[str]] = {k: [] for k in keys}
    for e in edges:
        out[e.source].append(e.dest)
    seen: dict[str, int] = {}
    for root in ([start] if start else []) + keys:
        if root in seen:
            continue
        seen[root] = len(seen)
        queue = [root]
        while queue:
            node = queue.pop(0)
            for nxt in out[node]:
                if nxt not in seen:
                    seen[nxt] = len(seen)
                    queue.append(nxt)
    return seen


def _build_graph(definition: Definition, edges: list[_Edge]) -> _Graph:
    keys = list(definition.states)
    start = _initial_key(definition)
    back = _back_edges(keys, start, edges)
    preds: dict[str, list[str]] = {k: [] for k in keys}
    succs: dict[str, list[str]] = {k: [] for k in keys}
    loops: list[_Edge] = []
    oriented: list[tuple[_Edge, str, str, bool]] = []
    for e in edges:
        if e.source == e.dest:
            loops.append(e)
            continue
        rev = (e.source, e.dest) in back
        upper, lower = (e.dest, e.source) if rev else (e.source, e.dest)
        oriented.append((e, upper, lower, rev))
        if upper not in preds[lower]:
            preds[lower].append(upper)
            succs[upper].append(lower)

    # Longest-path layering (Kahn's algorithm, ties broken by definition order).
    index = {k: i for i, k in enumerate(keys)}
    indegree = {k: len(preds[k]) for k in keys}
    ready = sorted((k for k in keys if indegree[k] == 0), key=index.__getitem__)
    layer: dict[str, int] = {}
    while ready:
        node = ready.pop(0)
        layer[node] = max((layer[p] + 1 for p in preds[node]), default=0)
        for s in succs[node]:
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
                ready.sort(key=index.__getitem__)
    for k in keys:  # unreachable in a valid DAG; kept for safety
        layer.setdefault(k, 0)

    # Routes: long edges share one trunk of dummy points per arrow target.
    trunk_span: dict[str, tuple[int, int]] = {}
    trunk_of: list[str | None] = []
    for _e, upper, lower, rev in oriented:
        if layer[lower] - layer[upper] < 2:
            trunk_of.append(None)
            continue
        trunk = f"~{'up' if rev else 'down'}:{upper if rev else lower}"
        lo, hi = trunk_span.get(trunk, (layer[upper] + 1, layer[lower] - 1))
        trunk_span[trunk] = (min(lo, layer[upper] + 1), max(hi, layer[lower] - 1))
        trunk_of.append(trunk)
    routes: list[_Route] = []
    node_layer = dict(layer)
    for (e, upper, lower, rev), trunk in zip(oriented, trunk_of, strict=True):
        nodes = [upper]
        if trunk is not None:
            for j in range(layer[upper] + 1, layer[lower]):
                dummy = f"{trunk}:{j}"
                node_layer[dummy] = j
                nodes.append(dummy)
        nodes.append(lower)
        routes.append(_Route(e, nodes, rev))

    graph = _Graph(node_layer, [], routes, loops)
    for n in node_layer:
        graph.up[n], graph.down[n] = [], []
    for r in routes:
        for a, b in zip(r.nodes, r.nodes[1:], strict=False):
            if b not in graph.down[a]:
                graph.down[a].append(b)
                graph.up[b].append(a)

    pre = _preorder(keys, start, edges)
    guess = {k: float(pre[k]) for k in keys}
    for n in node_layer:
        if graph.is_dummy(n):
            target = n.split(":")[1]
            guess[n] = pre[target] + 0.5
    depth = max(node_layer.values(), default=-1) + 1
    graph.layers = [[] for _ in range(depth)]
    for n in sorted(node_layer, key=lambda n: (guess[n], n)):
        graph.layers[node_layer[n]].append(n)
    _reduce_crossings(graph)
    return graph


def _crossings_between(upper: list[str], graph: _Graph) -> int:
    rank_of_upper = {n: i for i, n in enumerate(upper)}
    lower_layer = next((graph.down[n] for n in upper if graph.down[n]), None)
    if lower_layer is None:
        return 0
    layer_index = graph.layer[lower_layer[0]]
    rank_of_lower = {n: i for i, n in enumerate(graph.layers[layer_index])}
    links = [(rank_of_upper[a], rank_of_lower[b]) for a in upper for b in graph.down[a]]
    count = 0
    for i, (a1, b1) in enumerate(links):
        for a2, b2 in links[i + 1 :]:
            if (a1 - a2) * (b1 - b2) < 0:
                count += 1
    return count


def _total_crossings(graph: _Graph) -> int:
    return sum(_crossings_between(layer, graph) for layer in graph.layers)


def _pair_crossings(graph: _Graph, a: str, b: str, rank: dict[str, int]) -> int:
    """Crossings between the links of ``a`` and ``b`` when ``a`` stands before ``b``."""
    count = 0
    for side in (graph.up, graph.down):
        for x in side[a]:
            for y in side[b]:
                if rank[x] > rank[y]:
                    count += 1
    return count


def _reduce_crossings(graph: _Graph) -> None:
    """Barycenter sweeps up and down plus adjacent swaps; keeps the best order seen."""
    layers = graph.layers
    best = [list(layer) for layer in layers]
    best_count = _total_crossings(graph)
    for sweep in range(16):
        downward = sweep % 2 == 0
        indices = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        for i in indices:
            fixed = {n: j for j, n in enumerate(layers[i - 1 if downward else i + 1])}
            side = graph.up if downward else graph.down

            def barycenter(item: tuple[int, str], fixed: dict = fixed, side: dict = side) -> tuple:
                j, n = item
                ranks = [fixed[m] for m in side[n]]
                return (sum(ranks) / len(ranks) if ranks else float(j), j)

            layers[i] = [n for _j, n in sorted(enumerate(layers[i]), key=barycenter)]
        _transpose(graph)
        count = _total_crossings(graph)
        if count < best_count:
            best, best_count = [list(layer) for layer in layers], count
        if best_count == 0:
            break
    graph.layers = best


def _transpose(graph: _Graph) -> None:
    for _round in range(8):
        improved = False
        rank = {n: j for layer in graph.layers for j, n in enumerate(layer)}
        for layer in graph.layers:
            for j in range(len(layer) - 1):
                a, b = layer[j], layer[j + 1]
                if _pair_crossings(graph, b, a, rank) < _pair_crossings(graph, a, b, rank):
                    layer[j], layer[j + 1] = b, a
                    rank[a], rank[b] = j + 1, j
                    improved = True
        if not improved:
            return


def _project(targets: list[float], offsets: list[float], weights: list[float]) -> list[float]:
    """Closest positions to ``targets`` keeping ``p[i+1] - p[i] >= offsets[i+1] - offsets[i]``.

    Weighted least squares under ordering constraints is isotonic regression of
    ``targets - offsets``, solved exactly by pooling adjacent violators.
    """
    blocks: list[list[float]] = []  # [mean, weight, count]
    for value, weight in zip((t - o for t, o in zip(targets, offsets, strict=True)), weights):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    flat: list[float] = []
    for value, _weight, count in blocks:
        flat += [value] * int(count)
    return [q + o for q, o in zip(flat, offsets, strict=True)]


def _straighten_trunks(graph: _Graph, pos: dict[str, float], offsets: list[list[float]]) -> None:
    """Put all points of a trunk on one line wherever their neighbours leave room for it."""
    trunks: dict[str, list[tuple[int, int]]] = {}
    for i, layer in enumerate(graph.layers):
        for j, n in enumerate(layer):
            if graph.is_dummy(n):
                trunks.setdefault(n.rsplit(":", 1)[0], []).append((i, j))
    for _round in range(2):
        for name in sorted(trunks):
            low, high, current = -math.inf, math.inf, []
            for i, j in trunks[name]:
                layer, offs = graph.layers[i], offsets[i]
                current.append(pos[layer[j]])
                if j > 0:
                    low = max(low, pos[layer[j - 1]] + offs[j] - offs[j - 1])
                if j + 1 < len(layer):
                    high = min(high, pos[layer[j + 1]] - offs[j + 1] + offs[j])
            if low <= high:
                line = min(max(sorted(current)[len(current) // 2], low), high)
                for i, j in trunks[name]:
                    pos[graph.layers[i][j]] = line


@dataclass
class _Geometry:
    """Coordinates of one orientation; (x, y) are node centres and edge polylines."""

    horizontal: bool
    node_w: float
    node_h: float
    center: dict[str, tuple[float, float]]
    width: float
    height: float
    edge_paths: list[tuple[_Edge, str]]


_DUMMY_SIZE = 8.0


def _place(graph: _Graph, horizontal: bool, node_w: float, node_h: float) -> _Geometry:
    """Coordinates for one orientation: ``horizontal`` means layers are columns (left to right)."""
    rank_size, order_size = (node_w, node_h) if horizontal else (node_h, node_w)
    real_gap, dummy_gap = (24.0, 10.0) if horizontal else (30.0, 12.0)
    loop_room = 22.0
    loop_nodes = {e.source for e in graph.loops}

    def size(n: str) -> float:
        return _DUMMY_SIZE if graph.is_dummy(n) else order_size

    offsets: list[list[float]] = []
    pos: dict[str, float] = {}
    for layer in graph.layers:
        acc, offs = 0.0, []
        for j, n in enumerate(layer):
            if j:
                prev = layer[j - 1]
                gap = dummy_gap if graph.is_dummy(prev) or graph.is_dummy(n) else real_gap
                acc += size(prev) / 2 + gap + size(n) / 2
                if n in loop_nodes:
                    acc += loop_room
            offs.append(acc)
        offsets.append(offs)
        for n, o in zip(layer, offs, strict=True):
            pos[n] = o - acc / 2
    for sweep in range(30):
        indices = range(len(graph.layers))
        for i in indices if sweep % 2 == 0 else reversed(indices):
            layer = graph.layers[i]
            targets = []
            for n in layer:
                neighbours = graph.up[n] + graph.down[n]
                if graph.is_dummy(n):  # a trunk is pulled straight by its own points only
                    trunk = n.rsplit(":", 1)[0] + ":"
                    neighbours = [m for m in neighbours if m.startswith(trunk)] or neighbours
                targets.append(
                    sum(pos[m] for m in neighbours) / len(neighbours) if neighbours else pos[n]
                )
            weights = [4.0 if graph.is_dummy(n) else 1.0 for n in layer]
            for n, p in zip(layer, _project(targets, offsets[i], weights), strict=True):
                pos[n] = p

    _straighten_trunks(graph, pos, offsets)

    # Along the layers: each gap grows with the number of links crossing it.
    links = [0] * len(graph.layers)
    for layer in graph.layers:
        for n in layer:
            links[graph.layer[n]] += len(graph.down[n])
    rank_start, acc = [], 0.0
    base_gap = 70.0 if horizontal else 56.0
    for i in range(len(graph.layers)):
        rank_start.append(acc)
        acc += rank_size + base_gap + min(40.0, 3.0 * max(0, links[i] - 4))

    low = min(
        (pos[n] - size(n) / 2 - (loop_room if n in loop_nodes else 0) for n in pos), default=0
    )
    for n in pos:
        pos[n] -= low
    order_extent = max((pos[n] + size(n) / 2 for n in pos), default=0.0)
    rank_extent = (rank_start[-1] + rank_size) if rank_start else 0.0

    def xy(rank: float, order: float) -> tuple[float, float]:
        return (rank, order) if horizontal else (order, rank)

    # Ports: where edges meet a node's two sides, spread in the order of their other ends.
    ports: dict[tuple[int, str], float] = {}
    for end, side in ((0, "out"), (-1, "in")):
        slots: dict[str, dict[object, float]] = {}
        for k, r in enumerate(graph.routes):
            node, neighbour = r.nodes[end], r.nodes[1 if end == 0 else -2]
            slot = neighbour if graph.is_dummy(neighbour) else (neighbour, k)
            slots.setdefault(node, {})[slot] = pos[neighbour]
        for node, by_slot in slots.items():
            ordered = sorted(by_slot, key=lambda s, b=by_slot: (b[s], str(s)))
            count = len(ordered)
            step = min(16.0 if not horizontal else 9.0, order_size * 0.7 / max(1, count - 1))
            where = {s: pos[node] + (j - (count - 1) / 2) * step for j, s in enumerate(ordered)}
            for k, r in enumerate(graph.routes):
                if r.nodes[end] == node:
                    neighbour = r.nodes[1 if end == 0 else -2]
                    slot = neighbour if graph.is_dummy(neighbour) else (neighbour, k)
                    ports[(k, side)] = where[slot]

    edge_paths: list[tuple[_Edge, str]] = []
    for k, r in enumerate(graph.routes):
        first, last = r.nodes[0], r.nodes[-1]
        points = [(rank_start[graph.layer[first]] + rank_size, ports[(k, "out")])]
        for d in r.nodes[1:-1]:
            start = rank_start[graph.layer[d]]
            points += [(start, pos[d]), (start + rank_size, pos[d])]
        points.append((rank_start[graph.layer[last]], ports[(k, "in")]))
        if r.reversed:
            points.reverse()
        d_attr = [f"M{_pt(xy(*points[0]))}"]
        for j in range(1, len(points)):
            (r0, o0), (r1, o1) = points[j - 1], points[j]
            if j % 2 == 1:  # between two layers: an S-curve along the layer axis
                mid = (r0 + r1) / 2
                d_attr.append(f"C{_pt(xy(mid, o0))} {_pt(xy(mid, o1))} {_pt(xy(r1, o1))}")
            else:  # across a layer, next to its nodes
                d_attr.append(f"L{_pt(xy(r1, o1))}")
        edge_paths.append((r.edge, " ".join(d_attr)))
    for e in graph.loops:
        r0 = rank_start[graph.layer[e.source]]
        o0 = pos[e.source] - order_size / 2
        a, b = r0 + rank_size * 0.62, r0 + rank_size * 0.38
        d_attr = (
            f"M{_pt(xy(a, o0))} C{_pt(xy(a + 6, o0 - loop_room))} "
            f"{_pt(xy(b - 6, o0 - loop_room))} {_pt(xy(b, o0))}"
        )
        edge_paths.append((e, d_attr))

    center = {
        n: xy(rank_start[graph.layer[n]] + rank_size / 2, pos[n])
        for n in pos
        if not graph.is_dummy(n)
    }
    width, height = xy(rank_extent, order_extent)
    return _Geometry(horizontal, node_w, node_h, center, width, height, edge_paths)


def _num(value: float) -> str:
    rounded = round(value, 1)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.1f}"


def _pt(point: tuple[float, float]) -> str:
    return f"{_num(point[0])},{_num(point[1])}"


# --------------------------------------------------------------------------- svg
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    """Escape text for XML content and double- or single-quoted attributes."""
    text = _XML_INVALID.sub("", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


_MARGIN = 24.0
_TITLE_SIZE = 16.0
_LEGEND_HEIGHT = 40.0


def _render_svg(definition: Definition, highlight: str | None, lang: str) -> str:
    texts = _texts(lang)
    edges = _edges(definition)
    initial = _initial_key(definition)
    labels = {k: s.label.get(lang) for k, s in definition.states.items()}
    node_w = _node_width(labels.values())
    node_h = 2 * _LINE_HEIGHT + 14
    graph = _build_graph(definition, edges)
    candidates = [_place(graph, horizontal, node_w, node_h) for horizontal in (False, True)]
    geo = min(
        candidates,
        key=lambda g: abs(math.log(max(g.width, 1.0) / max(g.height, 1.0) / (4 / 3))),
    )

    prefix = f"diagram-{definition.key}-{definition.version}"
    title = f"{definition.title.get(lang)} ({definition.ref})"
    title_width = max(geo.width, 480.0)
    title_lines = _wrap(title, title_width, _TITLE_SIZE, max_lines=3)
    title_h = len(title_lines) * (_TITLE_SIZE + 4) + 14
    legend_items = [("manual", "line"), ("automatic", "dashed"), ("initial", "initial")]
    legend_items.append(("terminal", "terminal"))
    if highlight is not None:
        legend_items.append(("current", "current"))
    legend_width = sum(46 + _text_width(texts[k], 12) + 20 for k, _ in legend_items)
    width = math.ceil(max(geo.width, title_width, legend_width) + 2 * _MARGIN)
    height = math.ceil(geo.height + title_h + _LEGEND_HEIGHT + 2 * _MARGIN)
    ox = _MARGIN + (width - 2 * _MARGIN - geo.width) / 2
    oy = _MARGIN + title_h

    summary = texts["summary"].format(
        ref=definition.ref, states=len(definition.states), transitions=len(definition.transitions)
    )
    if highlight is not None:
        summary += texts["current_is"].format(label=labels[highlight])
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{prefix}-title {prefix}-desc" font-family="sans-serif">',
        f'<title id="{prefix}-title">{_xml(title)}</title>',
        f'<desc id="{prefix}-desc">{_xml(summary)}</desc>',
        "<defs>",
        f'<marker id="{prefix}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        f'markerHeight="8" markerUnits="userSpaceOnUse" orient="auto">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{_EDGE_STROKE}"/></marker>',
        f'<marker id="{prefix}-arrow-current" viewBox="0 0 10 10" refX="9" refY="5" '
        f'markerWidth="10" markerHeight="10" markerUnits="userSpaceOnUse" orient="auto">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{_CURRENT_STROKE}"/></marker>',
        "<style>.edge:hover .line{stroke:#d84315;stroke-width:2.5}</style>",
        "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for j, line in enumerate(title_lines):
        out.append(
            f'<text x="{_num(_MARGIN)}" y="{_num(_MARGIN + _TITLE_SIZE + j * (_TITLE_SIZE + 4))}" '
            f'font-size="{_num(_TITLE_SIZE)}" font-weight="bold" fill="{_TEXT_FILL}">'
            f"{_xml(line)}</text>"
        )
    out.append(f'<g transform="translate({_num(ox)},{_num(oy)})">')

    out.append('<g class="edges">')
    # Edges leaving the highlighted state come last, so that they are drawn on top.
    for e, d_attr in sorted(geo.edge_paths, key=lambda item: item[0].source == highlight):
        t = e.transition
        tip = f"{t.label.get(lang)} ({t.key}): {labels[e.source]} → {labels[e.dest]}"
        if t.automatic:
            tip += f" — {texts['automatic']}"
        from_current = e.source == highlight
        stroke = _CURRENT_STROKE if from_current else _EDGE_STROKE
        marker = f"{prefix}-arrow-current" if from_current else f"{prefix}-arrow"
        dash = ' stroke-dasharray="6 4"' if t.automatic else ""
        out.append(
            f'<g class="edge" id="edge-{t.key}-{e.source}-{e.dest}" data-transition="{t.key}" '
            f'data-source="{e.source}" data-dest="{e.dest}">'
            f"<title>{_xml(tip)}</title>"
            f'<path d="{d_attr}" fill="none" stroke="#000000" stroke-opacity="0" '
            f'stroke-width="10"/>'
            f'<path class="line" d="{d_attr}" fill="none" stroke="{stroke}" '
            f'stroke-width="{"2" if from_current else "1.4"}"{dash} '
            f'marker-end="url(#{marker})"/></g>'
        )
    out.append("</g>")

    out.append('<g class="states">')
    for key, state in definition.states.items():
        cx, cy = geo.center[key]
        out.append(
            _svg_node(
                key,
                labels[key],
                state.kind,
                (cx, cy),
                (node_w, node_h),
                initial=key == initial,
                current=key == highlight,
                tip=f"{labels[key]} ({key})",
            )
        )
    out.append("</g>")
    out.append("</g>")
    out += _svg_legend(legend_items, texts, _MARGIN, height - _MARGIN - 14)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _node_style(kind: str, initial: bool, current: bool) -> tuple[str, str, float]:
    """Fill, stroke and stroke width of a state box."""
    if current:
        return _CURRENT_FILL, _CURRENT_STROKE, 3.5
    if initial:
        return _INITIAL_FILL, _INITIAL_STROKE, 2.5
    if kind == "terminal":
        return _TERMINAL_FILL, _NODE_STROKE, 1.4
    return _NODE_FILL, _NODE_STROKE, 1.4


def _svg_node(
    key: str,
    label: str,
    kind: str,
    center: tuple[float, float],
    box: tuple[float, float],
    *,
    initial: bool,
    current: bool,
    tip: str,
) -> str:
    (cx, cy), (w, h) = center, box
    fill, stroke, stroke_width = _node_style(kind, initial, current)
    x, y = cx - w / 2, cy - h / 2
    attrs = 'class="current" aria-current="step"' if current else 'class="state"'
    parts = [
        f'<g id="state-{key}" {attrs} data-kind="{_xml(kind)}">',
        f"<title>{_xml(tip)}</title>",
        f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" rx="8" ry="8" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="{_num(stroke_width)}"/>',
    ]
    if kind == "terminal":
        parts.append(
            f'<rect x="{_num(x + 4)}" y="{_num(y + 4)}" width="{_num(w - 8)}" '
            f'height="{_num(h - 8)}" rx="5" ry="5" fill="none" stroke="{stroke}" '
            f'stroke-width="1.2"/>'
        )
    lines = _wrap(label, w - 2 * _NODE_PAD, _FONT_SIZE)
    weight = ' font-weight="bold"' if current or initial else ""
    parts.append(
        f'<text text-anchor="middle" font-size="{_num(_FONT_SIZE)}" fill="{_TEXT_FILL}"{weight}>'
    )
    first = cy - (len(lines) - 1) * _LINE_HEIGHT / 2 + _FONT_SIZE * 0.35
    for j, line in enumerate(lines):
        parts.append(
            f'<tspan x="{_num(cx)}" y="{_num(first + j * _LINE_HEIGHT)}">{_xml(line)}</tspan>'
        )
    parts.append("</text></g>")
    return "".join(parts)


def _svg_legend(
    items: list[tuple[str, str]], texts: dict[str, str], x: float, y: float
) -> list[str]:
    """A one-row legend: line styles, then the box styles."""
    out = ['<g class="legend" font-size="12" aria-hidden="true">']
    for key, sample in items:
        if sample in ("line", "dashed"):
            dash = ' stroke-dasharray="6 4"' if sample == "dashed" else ""
            out.append(
                f'<path d="M{_num(x)},{_num(y)} L{_num(x + 34)},{_num(y)}" stroke="{_EDGE_STROKE}" '
                f'stroke-width="1.4"{dash}/>'
                f'<path d="M{_num(x + 30)},{_num(y - 4)} L{_num(x + 38)},{_num(y)} '
                f'L{_num(x + 30)},{_num(y + 4)} z" fill="{_EDGE_STROKE}"/>'
            )
        else:
            fill, stroke, stroke_width = _node_style(
                "terminal" if sample == "terminal" else "active",
                sample == "initial",
                sample == "current",
            )
            out.append(
                f'<rect x="{_num(x)}" y="{_num(y - 9)}" width="38" height="18" rx="4" '
                f'fill="{fill}" stroke="{stroke}" stroke-width="{_num(stroke_width)}"/>'
            )
            if sample == "terminal":
                out.append(
                    f'<rect x="{_num(x + 3)}" y="{_num(y - 6)}" width="32" height="12" rx="2" '
                    f'fill="none" stroke="{stroke}" stroke-width="1"/>'
                )
        out.append(
            f'<text x="{_num(x + 46)}" y="{_num(y + 4)}" fill="{_TEXT_FILL}">'
            f"{_xml(texts[key])}</text>"
        )
        x += 46 + _text_width(texts[key], 12) + 20
    out.append("</g>")
    return out
