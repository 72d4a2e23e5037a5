"""Render a notification (subject, plain text, HTML) from its outbox payload with Jinja.

Templates are ``templates/<topic>.<lang>.{txt,html}``; a topic without its own template uses
``default``; Vietnamese is the default language and English the fallback. Messages carry case
numbers and labels, never personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, TemplateNotFound, select_autoescape

from workflow.calendar import BUSINESS_TZ
from workflow.registry import Registry

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _label(registry: Registry, payload: dict[str, Any], lang: str) -> dict[str, str]:
    """Human labels for the action, states and deadline named in the payload."""
    out = {
        "action": payload.get("action", ""),
        "from_state": payload.get("from_state") or "",
        "to_state": payload.get("to_state") or payload.get("state") or "",
        "deadline": payload.get("deadline") or "",
    }
    ref = payload.get("definition") or ""
    if "@" not in ref:
        return out
    key, version = ref.split("@", 1)
    try:
        d = registry.get(key, int(version))
    except Exception:  # noqa: BLE001 - an unknown definition still gets a plain message
        return out
    action = out["action"].split(":", 1)[-1]
    item = d.transitions.get(action) or d.activities.get(action)
    if item is not None:
        out["action"] = item.label.get(lang)
    for name in ("from_state", "to_state"):
        if out[name] in d.states:
            out[name] = d.states[out[name]].label.get(lang)
    if out["deadline"] in d.deadlines:
        out["deadline"] = d.deadlines[out["deadline"]].label.get(lang)
    return out


def _fmt_date(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(BUSINESS_TZ).strftime("%d/%m/%Y %H:%M")
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    return ""


def _template(topic: str, lang: str, ext: str) -> Any:
    for name in (
        f"{topic}.{lang}.{ext}",
        f"{topic}.en.{ext}",
        f"default.{lang}.{ext}",
        f"default.en.{ext}",
    ):
        try:
            return _env.get_template(name)
        except TemplateNotFound:
            continue
    raise TemplateNotFound(f"{topic}.{lang}.{ext}")


def render(
    topic: str,
    payload: dict[str, Any],
    registry: Registry,
    *,
    lang: str = "vi",
    public_url: str = "",
) -> Rendered:
    ctx = {
        "p": payload,
        "labels": _label(registry, payload, lang),
        "at": _fmt_date(payload.get("at")),
        "due_on": _fmt_date(payload.get("due_on")),
        "url": f"{public_url.rstrip('/')}/cases/{payload.get('case_id')}" if public_url else "",
        "topic": topic,
    }
    subject_tpl = _template(topic, lang, "subject")
    return Rendered(
        subject=subject_tpl.render(ctx).strip(),
        text=_template(topic, lang, "txt").render(ctx),
        html=_template(topic, lang, "html").render(ctx),
    )
