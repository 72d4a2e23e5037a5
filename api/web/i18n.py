"""Language, dates and the labels of definitions on the pages.

Vietnamese by default, English by the switch in the page header (kept in the session). Every
text of the pages goes through the message catalogues (``translations/``); the labels of states,
transitions, documents and fields come from the definitions, which carry both languages.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import cached_property
from pathlib import Path

from flask import Flask, g, session
from flask_babel import Babel

from workflow import units
from workflow.calendar import BUSINESS_TZ
from workflow.definition import Definition
from workflow.errors import UnknownDefinition
from workflow.registry import Registry

LANGUAGES = ("vi", "en")
TRANSLATIONS = Path(__file__).resolve().parent / "translations"


def current_lang() -> str:
    lang = session.get("lang")
    return lang if lang in LANGUAGES else "vi"


def init_babel(app: Flask) -> None:
    Babel(
        app,
        default_locale="vi",
        default_translation_directories=str(TRANSLATIONS),
        default_timezone="Asia/Ho_Chi_Minh",
        locale_selector=current_lang,
    )
    app.jinja_env.add_extension("jinja2.ext.do")
    app.jinja_env.filters["date"] = format_date
    app.jinja_env.filters["datetime"] = format_datetime
    app.jinja_env.filters["unit"] = units.label


def format_date(value: date | datetime | None) -> str:
    """dd/mm/yyyy (a datetime is first put in Vietnam's time zone)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(BUSINESS_TZ).date()
    return value.strftime("%d/%m/%Y")


def format_datetime(value: datetime | None) -> str:
    """dd/mm/yyyy HH:MM in Asia/Ho_Chi_Minh."""
    if value is None:
        return ""
    return value.astimezone(BUSINESS_TZ).strftime("%d/%m/%Y %H:%M")


class Labels:
    """Labels of a definition's codes in the page's language. With a definition given, its
    labels; else those of the newest loaded definition that knows the code; else the code."""

    def __init__(self, registry: Registry, lang: str) -> None:
        self.registry = registry
        self.lang = lang

    @cached_property
    def _newest_first(self) -> list[Definition]:
        return sorted(self.registry.all(), key=lambda d: (d.key, -d.version))

    def _find(self, attr: str, code: str, d: Definition | None) -> str:
        for candidate in [d] if d is not None else self._newest_first:
            item = getattr(candidate, attr).get(code)
            if item is not None:
                return item.label.get(self.lang)
        if d is not None:
            return self._find(attr, code, None)
        return code

    def definition(self, key: str, version: int) -> Definition | None:
        """The definition version a case follows (None if it is not loaded)."""
        try:
            return self.registry.get(key, version)
        except UnknownDefinition:  # a version no longer loaded only loses its own labels
            return None

    def state(self, code: str, d: Definition | None = None) -> str:
        return self._find("states", code, d)

    def group(self, code: str, d: Definition | None = None) -> str:
        return self._find("groups", code, d)

    def document(self, code: str, d: Definition | None = None) -> str:
        return self._find("document_types", code, d)

    def agency_type(self, code: str | None, d: Definition | None = None) -> str:
        return self._find("agency_types", code, d) if code else ""

    def role(self, code: str | None, d: Definition | None = None) -> str:
        return self._find("roles", code, d) if code else ""

    def transition(self, code: str, d: Definition | None = None) -> str:
        return self._find("transitions", code, d)

    def activity(self, code: str, d: Definition | None = None) -> str:
        return self._find("activities", code, d)

    def deadline(self, code: str, d: Definition | None = None) -> str:
        return self._find("deadlines", code, d)

    def title(self, d: Definition) -> str:
        return d.title.get(self.lang)

    def states(self) -> list[tuple[str, str]]:
        """Every state code of the loaded definitions with its label, for filters."""
        seen: dict[str, str] = {}
        for d in self._newest_first:
            for code in d.states:
                seen.setdefault(code, self.state(code))
        return list(seen.items())

    def groups(self) -> list[tuple[str, str]]:
        seen: dict[str, str] = {}
        for d in self._newest_first:
            for code in d.groups:
                seen.setdefault(code, self.group(code))
        return list(seen.items())


def labels() -> Labels:
    if "web_labels" not in g:
        from api import context as ctx

        g.web_labels = Labels(ctx.services().registry, current_lang())
    return g.web_labels
