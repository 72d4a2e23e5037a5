"""HTML forms from a definition's field spec, and the posted strings back to form data.

The engine validates (``workflow.forms``); this module only chooses the widget of each field
type and turns what a browser posts (always strings) into the JSON-like values the engine
expects: ``dd/mm/yyyy`` dates to ISO dates, digits to integers, ``true``/``false`` to booleans.
What cannot be read is passed on unchanged so that the engine reports it (a date that cannot be
read gets our own message, since the engine's mentions the ISO format).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask_babel import gettext as _

from workflow import units
from workflow.definition import Action, Definition, FieldSpec
from workflow.forms import bounds

DATE_RE = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})\s*$")
ISO_RE = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")
INT_RE = re.compile(r"^\s*[-+]?\d{1,12}\s*$")


@dataclass(frozen=True)
class Widget:
    """One field of a page's form: what the template needs to draw it."""

    name: str
    label: str
    kind: str  # text | textarea | date | number | select | unit
    required: bool
    choices: tuple[tuple[str, str], ...] = ()
    max_length: int | None = None
    min: int | None = None
    max: int | None = None


def widgets(d: Definition, action: Action, lang: str) -> list[Widget]:
    return [widget(d, spec, lang) for spec in action.fields]


def widget(d: Definition, spec: FieldSpec, lang: str) -> Widget:
    label = spec.label.get(lang)
    if spec.type == "enum":
        choices = tuple((c.value, c.label.get(lang)) for c in spec.choices)
        return Widget(spec.name, label, "select", spec.required, choices)
    if spec.type == "boolean":
        choices = (("true", _("Yes")), ("false", _("No")))
        return Widget(spec.name, label, "select", spec.required, choices)
    if spec.type == "date":
        return Widget(spec.name, label, "date", spec.required)
    if spec.type == "integer":
        lo, hi = bounds(d, spec)
        return Widget(spec.name, label, "number", spec.required, min=lo, max=hi)
    if spec.type == "unit":
        return Widget(spec.name, label, "unit", spec.required)
    kind = "textarea" if spec.type == "text" else "text"
    return Widget(spec.name, label, kind, spec.required, max_length=spec.max_length)


def parse_date(raw: str) -> date | None:
    """``dd/mm/yyyy`` (also ``d/m/yyyy``, ``dd.mm.yyyy``) or ISO ``yyyy-mm-dd``."""
    m = DATE_RE.match(raw)
    try:
        if m:
            return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        m = ISO_RE.match(raw)
        if m:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None
    return None


def coerce(action: Action, posted: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The form data for the engine, and our own errors (dates that cannot be read)."""
    data: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for spec in action.fields:
        raw = (posted.get(spec.name) or "").strip()
        if raw == "":
            continue  # a required one is reported by the engine ("required")
        if spec.type == "date":
            day = parse_date(raw)
            if day is None:
                errors[spec.name] = [_("Enter a date as dd/mm/yyyy, e.g. 25/11/2026.")]
                data[spec.name] = raw
            else:
                data[spec.name] = day.isoformat()
        elif spec.type == "integer":
            data[spec.name] = int(raw) if INT_RE.match(raw) else raw
        elif spec.type == "boolean":
            data[spec.name] = {"true": True, "false": False}.get(raw, raw)
        elif spec.type == "unit":
            data[spec.name] = raw.split(" ", 1)[0]
        else:
            data[spec.name] = raw
    return data, errors


def display_value(spec: FieldSpec | None, value: Any, lang: str) -> str:
    """A stored form or case value as the pages show it."""
    if value is None:
        return ""
    if spec is not None and spec.type == "enum":
        for c in spec.choices:
            if c.value == value:
                return c.label.get(lang)
    if isinstance(value, bool):
        return _("Yes") if value else _("No")
    if spec is not None and spec.type == "unit":
        return units.label(str(value))
    if isinstance(value, str) and ISO_RE.match(value):
        day = parse_date(value)
        return day.strftime("%d/%m/%Y") if day else value
    return str(value)


def commune_choices(actor_units: frozenset[str]) -> list[tuple[str, str]]:
    """The communes and wards an agency covers (all of a province's), with their names."""
    out: dict[str, str] = {}
    for code in sorted(actor_units):
        unit = units.get(code)
        if unit is None:
            continue
        if unit.level == "commune":
            out[unit.code] = units.label(unit.code)
        else:
            for c in sorted(units.communes_of(unit.code), key=lambda u: u.name):
                out[c.code] = units.label(c.code)
    return list(out.items())
