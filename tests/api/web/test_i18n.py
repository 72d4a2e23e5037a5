"""The message catalogues: every text of the pages is a message, translated into Vietnamese,
and the compiled catalogue is the one the .po file describes."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

import api.web

WEB = Path(api.web.__file__).resolve().parent
PO = WEB / "translations" / "vi" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
# the names of the two languages, each written in its own language (the switch)
ALLOWED_WORDS = {"rehabflow", "English", "Tiếng", "Việt", "KB"}


def _catalogue():  # noqa: ANN202
    with PO.open("rb") as f:
        return read_po(f, locale="vi")


def _extracted() -> set[str | tuple[str, ...]]:
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    options = {"**/templates/**.html": {"extensions": "jinja2.ext.do"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None}
    found: set[str | tuple[str, ...]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(WEB), method_map, options, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def test_every_message_of_the_pages_is_translated() -> None:
    catalogue = _catalogue()
    known = {m.id if isinstance(m.id, str) else tuple(m.id): m for m in catalogue if m.id}
    missing = sorted(str(m) for m in _extracted() if m not in known)
    assert missing == [], "run pybabel extract/update (api/web/babel.cfg): " + ", ".join(missing)
    untranslated = [
        str(m.id)
        for m in known.values()
        if m.fuzzy or not (m.string if isinstance(m.string, str) else all(m.string))
    ]
    assert untranslated == []


def test_compiled_catalogue_matches_the_po_file() -> None:
    with MO.open("rb") as f:
        compiled = read_mo(f)

    def pairs(catalogue) -> set[tuple]:  # noqa: ANN001
        def key(x) -> tuple | str:  # noqa: ANN001
            return x if isinstance(x, str) else tuple(x)

        return {(key(m.id), key(m.string)) for m in catalogue if m.id}

    source, built = pairs(_catalogue()), pairs(compiled)
    assert built == source, "recompile: pybabel compile -d api/web/translations"


def test_translations_keep_their_placeholders() -> None:
    for m in _catalogue():
        if not m.id:
            continue
        ids = [m.id] if isinstance(m.id, str) else list(m.id)
        strings = [m.string] if isinstance(m.string, str) else list(m.string)
        wanted = set(re.findall(r"%\(\w+\)s", ids[-1]))
        for s in strings:
            assert set(re.findall(r"%\(\w+\)s", s)) == wanted, m.id


def test_templates_have_no_text_outside_the_catalogue() -> None:
    offenders = []
    for path in sorted((WEB / "templates").rglob("*.html")):
        src = path.read_text(encoding="utf-8")
        src = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", src, flags=re.S)
        for attr in re.findall(r'\b(?:aria-label|title|placeholder|alt)="([^"]*)"', src):
            if re.search(r"[^\W\d_]", attr):
                offenders.append(f"{path.name}: attribute {attr!r}")
        words = re.sub(r"<[^>]*>", " ", src)
        # attributes written by macros outside a tag (aria-invalid="true" ...) are not text
        words = re.sub(r'[\w-]+="[^"]*"|\brequired\b', " ", words)
        for word in re.findall(r"[^\W\d_][\w'-]*", words):
            if word not in ALLOWED_WORDS:
                offenders.append(f"{path.name}: {word!r}")
    assert offenders == []
