"""Drive cases through a definition with plausible data (demo data, property tests, benchmarks).

Everything is derived from the definition: which transition leads where, which documents each
needs, and what its form accepts. Nothing here knows the drug-rehab law.
"""

from __future__ import annotations

import random
from collections import deque
from datetime import date, datetime
from typing import Any

from workflow.definition import Action, Definition, FieldSpec
from workflow.forms import bounds

SAMPLE_NAMES = ("Nguyễn Văn Hùng", "Trần Thị Lan", "Lê Văn Nam", "Phạm Thị Hoa", "Hoàng Văn Tú")
SAMPLE_TEXT = ("Đã xác minh tại địa phương.", "Theo đề nghị của Công an xã.", "Gia đình hợp tác.")


def fake_pdf(tag: str) -> bytes:
    """A small but well-formed PDF whose bytes differ per ``tag``."""
    body = f"BT /F1 12 Tf 72 720 Td ({tag}) Tj ET".encode("latin-1", "replace")
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]/Contents 4 0 R>>endobj\n"
        b"4 0 obj<</Length "
        + str(len(body)).encode()
        + b">>stream\n"
        + body
        + b"\nendstream endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def field_value(
    d: Definition, spec: FieldSpec, today: date, rng: random.Random, unit_code: str
) -> Any:
    if spec.type == "date":
        return today.isoformat()
    if spec.type == "integer":
        lo, hi = bounds(d, spec)
        lo = 1 if lo is None else lo
        hi = lo + 10 if hi is None else hi
        return rng.randint(lo, hi)
    if spec.type == "enum":
        return rng.choice(spec.choices).value
    if spec.type == "boolean":
        return rng.random() < 0.2
    if spec.type == "unit":
        return unit_code
    text = rng.choice(SAMPLE_NAMES if "name" in spec.name else SAMPLE_TEXT)
    return text[: spec.max_length] if spec.max_length else text


def fill_form(
    d: Definition, action: Action, today: date, rng: random.Random, unit_code: str
) -> dict[str, Any]:
    """Values for every field (optional ones too, most of the time)."""
    return {
        f.name: field_value(d, f, today, rng, unit_code)
        for f in action.fields
        if f.required or rng.random() < 0.8
    }


def path_to(d: Definition, target: str) -> list[str] | None:
    """Shortest list of manual transition keys from the initial state to ``target``."""
    start = d.initial_state.key
    prev: dict[str, tuple[str, str] | None] = {start: None}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        if state == target:
            break
        for t in d.transitions_from(state):
            if not t.automatic and t.dest not in prev:
                prev[t.dest] = (state, t.key)
                todo.append(t.dest)
    if target not in prev:
        return None
    keys: list[str] = []
    node = target
    while prev[node] is not None:
        node, key = prev[node]
        keys.append(key)
    return keys[::-1]


def required_documents(action: Action, rng: random.Random) -> list[str]:
    return [rng.choice(req.any_of) for req in action.documents]


def as_date(moment: datetime) -> date:
    from workflow.calendar import business_date

    return business_date(moment)
