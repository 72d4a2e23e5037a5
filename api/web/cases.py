"""The case page and its forms: transitions, activities, uploads, revocations; a new case.

Views translate form posts to :class:`~workflow.service.CaseService` calls and its answers to
pages: a success redirects (303) to the case page; a refusal re-renders the case page (422, or
409 when the case changed meanwhile) with the errors next to the form and the typed values kept.

A transition or activity form is one multipart form: a file input per missing required
document, uploaded first (each through ``attach_document``, its own transaction), then the
command fired, in one POST. A refused file stops the command; the files accepted stay attached
and the re-rendered page says so.
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import filetype
from flask import Response, current_app, flash, render_template, request, send_file, url_for
from flask import redirect as flask_redirect
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.datastructures import FileStorage

from api import context as ctx
from api.web.auth import worklist
from api.web.blueprint import bp
from api.web.errors import document_error, friendly, translate
from api.web.formspec import Widget, coerce, commune_choices, display_value, parse_date, widgets
from api.web.i18n import current_lang, labels
from workflow import diagram
from workflow.calendar import business_date
from workflow.definition import Action, Definition, Transition
from workflow.errors import (
    GuardFailed,
    InvalidDocument,
    MissingDocuments,
    OutOfJurisdiction,
    StaleCase,
    TransitionNotAvailable,
    TransitionRefused,
    UnknownDefinition,
    ValidationFailed,
)
from workflow.service import SubjectData

REFUSALS = (ValidationFailed, MissingDocuments, GuardFailed, TransitionRefused)
STYLE_RE = re.compile(r"<style>.*?</style>", re.S)


def redirect(location: str) -> Response:
    return flask_redirect(location, code=303)


# --------------------------------------------------------------------------- view models
@dataclass
class DocCheck:
    """One required document of a form: ticked when an unrevoked one is attached; else the
    form has a file input for it (``doc-<index>``, and ``doc-<index>-type`` to choose among
    alternatives)."""

    codes: tuple[str, ...]
    labels: list[str]
    attached: bool
    index: int = 0
    media_types: tuple[str, ...] = ()
    max_size: int = 0

    @property
    def choices(self) -> list[tuple[str, str]]:
        return list(zip(self.codes, self.labels))

    @property
    def name(self) -> str:
        return f"doc-{self.index}"

    @property
    def accept(self) -> str:
        return ",".join(self.media_types)

    @property
    def kinds(self) -> str:
        return ", ".join(t.split("/")[-1].upper() for t in self.media_types)

    @property
    def max_mb(self) -> int:
        return max(1, round(self.max_size / 1024 / 1024))


@dataclass
class ActionForm:
    """A transition or activity form of the case page."""

    kind: str  # transition | activity
    key: str
    label: str
    anchor: str
    widgets: list[Widget]
    documents: list[DocCheck]
    dest: str | None = None
    blocked_by_guards: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # refusals of the last submission
    attached: list[str] = field(default_factory=list)  # documents it attached nonetheless

    @property
    def missing(self) -> list[DocCheck]:
        return [c for c in self.documents if not c.attached]


@dataclass
class Submitted:
    """What a refused post left to show on the re-rendered page."""

    form: str = ""  # anchor of the form it came from
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notice: str | None = None
    attached: list[str] = field(default_factory=list)  # documents its uploads attached


def _doc_labels(codes: Any, d: Definition) -> str:
    """'A' or 'A hoặc B' for a missing document (a code or a list of alternatives)."""
    L = labels()
    if isinstance(codes, str):
        return L.document(codes, d)
    return _(" or ").join(L.document(c, d) for c in codes)


def problems_of(exc: Exception, d: Definition) -> list[str]:
    """The refusal of a transition or activity in the page's language: missing documents
    named, unmet guards with the definition's message."""
    details: dict[str, Any] = getattr(exc, "details", {})
    out = []
    missing = details.get("missing_documents") or []
    if missing:
        out.append(
            _(
                "Missing required documents: %(documents)s.",
                documents="; ".join(_doc_labels(m, d) for m in missing),
            )
        )
    for g in details.get("unmet_guards") or []:
        out.append(g.get("message") or g.get("key"))
    if details.get("errors"):
        out.append(_("Some fields are not valid; see below."))
    return out


def _checks(action: Action, present: set[str], d: Definition) -> list[DocCheck]:
    L = labels()
    out = []
    for i, req in enumerate(action.documents):
        specs = [d.document_types[c] for c in req.any_of if c in d.document_types]
        media = tuple(dict.fromkeys(m for spec in specs for m in spec.media_types))
        out.append(
            DocCheck(
                req.any_of,
                [L.document(c, d) for c in req.any_of],
                bool(present.intersection(req.any_of)),
                i,
                media,
                max((spec.max_size for spec in specs), default=0),
            )
        )
    return out


def _forms(details: dict[str, Any], d: Definition, sub: Submitted) -> tuple[list, list]:
    lang = current_lang()
    L = labels()
    present = {doc["type"] for doc in details["documents"] if not doc["revoked"]}
    transitions = []
    for a in details["available_transitions"]:
        t = d.transitions[a["key"]]
        guard_msgs = {g.key: g.message.get(lang) for g in t.guards}
        form = ActionForm(
            "transition",
            t.key,
            L.transition(t.key, d),
            f"t-{t.key}",
            widgets(d, t, lang),
            _checks(t, present, d),
            dest=L.state(t.dest, d),
            blocked_by_guards=[guard_msgs.get(k, k) for k in a["unmet_guards"]],
        )
        transitions.append(form)
    activities = []
    for key in details["available_activities"]:
        act = d.activities[key]
        activities.append(
            ActionForm(
                "activity",
                key,
                L.activity(key, d),
                f"a-{key}",
                widgets(d, act, lang),
                _checks(act, present, d),
            )
        )
    for form in transitions + activities:
        if form.anchor == sub.form:
            form.values, form.errors, form.problems = sub.values, sub.errors, sub.problems
            form.attached = sub.attached
    return transitions, activities


def _diagram(d: Definition, state: str) -> Markup:
    svg = diagram.render(d, "svg", highlight=state, lang=current_lang())
    # the page's Content-Security-Policy allows no inline <style>; app.css has the rule
    return Markup(STYLE_RE.sub("", svg))  # noqa: S704 - our own renderer escapes its text


def _field_values(details: dict[str, Any], d: Definition) -> list[tuple[str, str]]:
    lang = current_lang()
    out = []
    for name, value in details["fields"].items():
        spec = d.case_fields.get(name)
        label = spec.label.get(lang) if spec else name
        if name == "closure_reason" and isinstance(value, str):
            value = value.replace("_", " ")
        out.append((label, display_value(None, value, lang)))
    return out


def render_case(case_id: int, sub: Submitted | None = None, status: int = 200) -> Any:
    sub = sub or Submitted()
    actor, now = ctx.actor(), ctx.now()
    details = ctx.services().cases.get_case(case_id, actor, now)
    registry = ctx.services().registry
    d = registry.get(details["definition"]["key"], details["definition"]["version"])
    transitions, activities = _forms(details, d, sub)
    timeline = list(reversed(worklist().timeline(case_id, actor)))
    page = render_template(
        "web/case.html",
        c=details,
        d=d,
        transitions=transitions,
        activities=activities,
        timeline=timeline,
        timeline_text=timeline_text,
        diagram=_diagram(d, details["state"]),
        case_fields=_field_values(details, d),
        sub=sub,
        idem=uuid.uuid4().hex,
        doc_types=[(code, labels().document(code, d)) for code in d.document_types],
        registry=registry,
        communes=commune_choices(frozenset({details["province_code"]})),
    )
    return page, status


def timeline_text(entry: Any, registry: Any) -> str:
    """What happened, in words, from an audit event."""
    L = labels()
    d = _definition_of_event(entry, registry)
    action = entry.action
    kind, _sep, key = action.partition(":")
    if kind == "transition":
        return L.transition(key, d)
    if kind == "activity":
        return L.activity(key, d)
    docs = ", ".join(L.document(x.get("type", ""), d) for x in entry.documents)
    deadline = L.deadline(entry.extra.get("deadline", ""), d)
    texts = {
        "case.opened": _("Case opened"),
        "document.attached": _("Document attached: %(documents)s", documents=docs),
        "document.revoked": _("Document revoked: %(documents)s", documents=docs),
        "deadline.reminder": _("Reminder: %(deadline)s", deadline=deadline),
        "deadline.escalated": _("Deadline escalated: %(deadline)s", deadline=deadline),
    }
    return texts.get(action, action)


def _definition_of_event(entry: Any, registry: Any) -> Definition | None:
    ref = getattr(entry, "definition", None)
    if not ref or "@" not in ref:
        return None
    key, _sep, version = ref.partition("@")
    return labels().definition(key, int(version)) if version.isdigit() else None


# --------------------------------------------------------------------------- case page
@bp.route("/cases/<int:case_id>")
def case_page(case_id: int) -> Any:
    try:
        return render_case(case_id)
    except OutOfJurisdiction:
        return render_history(case_id)


def render_history(case_id: int) -> Any:
    """A case this commune handed over: its history up to the hand-over, read-only (any
    other case outside the jurisdiction stays a 404: the service raises again)."""
    actor = ctx.actor()
    timeline = worklist().timeline(case_id, actor, ctx.now())
    registry = ctx.services().registry
    d = next(
        (x for e in reversed(timeline) if (x := _definition_of_event(e, registry)) is not None),
        None,
    )
    moved = next((e.extra["transfer"] for e in reversed(timeline) if "transfer" in e.extra), {})
    return render_template(
        "web/case_history.html",
        case_id=case_id,
        d=d,
        timeline=list(reversed(timeline)),
        timeline_text=timeline_text,
        registry=registry,
        moved_to=moved.get("to_unit"),
    )


def _posted() -> dict[str, str]:
    skip = {"csrf_token", "version", "idem"}
    return {k: v for k, v in request.form.items() if k not in skip}


def _expected_version() -> int | None:
    raw = request.form.get("version", "")
    return int(raw) if raw.isdigit() else None


def _idempotency_key() -> str | None:
    raw = request.form.get("idem", "")
    return f"web-{raw}" if re.fullmatch(r"[0-9a-f]{32}", raw) else None


def _attach(case_id: int, doc_type: str, upload: FileStorage | None, note: str | None) -> Any:
    """Attach an uploaded file (its real type sniffed from its first bytes)."""
    content = upload.read() if upload is not None else b""
    kind = filetype.guess(content[:8192])
    return ctx.services().cases.attach_document(
        case_id,
        doc_type,
        content,
        ctx.actor(),
        ctx.now(),
        filename=((upload.filename if upload else None) or "file")[:255],
        media_type=kind.mime if kind else "application/octet-stream",
        note=note,
    )


def _upload_documents(
    case_id: int, action: Action, d: Definition
) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Attach the files chosen in a form's document inputs, each in its own transaction.

    Returns the documents attached, the errors by input and the refusals naming the document.
    """
    L = labels()
    attached: list[str] = []
    errors: dict[str, list[str]] = {}
    problems: list[str] = []
    for i, req in enumerate(action.documents):
        name = f"doc-{i}"
        upload = request.files.get(name)
        if upload is None or not upload.filename:  # no file chosen (an empty part)
            continue
        code = req.any_of[0] if len(req.any_of) == 1 else request.form.get(f"{name}-type", "")
        if code not in req.any_of:
            errors[name] = [_("Choose which document this file is.")]
            problems.append(errors[name][0])
            continue
        label = L.document(code, d)
        try:
            _attach(case_id, code, upload, None)
        except InvalidDocument as exc:
            errors[name] = [document_error(exc)]
            problems.append(_("%(document)s: %(error)s", document=label, error=errors[name][0]))
            continue
        attached.append(label)
    return attached, errors, problems


def _form_command(case_id: int, kind: str, key: str) -> Any:
    svc = ctx.services().cases
    actor, now, lang = ctx.actor(), ctx.now(), current_lang()
    d = worklist().definition_for(case_id, actor)
    action = (d.transitions if kind == "transition" else d.activities).get(key)
    posted = _posted()
    data, local = coerce(action, posted) if action is not None else ({}, {})
    command = svc.advance if kind == "transition" else svc.record_activity
    anchor = f"{'t' if kind == 'transition' else 'a'}-{key}"
    idem = _idempotency_key()
    attached: list[str] = []
    # a form sent twice (a double click) made its uploads the first time
    if action is not None and not (idem and worklist().already_done(actor, idem)):
        attached, doc_errors, doc_problems = _upload_documents(case_id, action, d)
        if doc_errors:
            sub = Submitted(anchor, posted, doc_errors | local, doc_problems, attached=attached)
            return render_case(case_id, sub, 422)
    try:
        result = command(
            case_id,
            key,
            data,
            actor,
            now,
            expected_version=_expected_version(),
            idempotency_key=idem,
            lang=lang,
        )
    except REFUSALS as exc:
        errors = dict(exc.details.get("errors") or {}) | local
        sub = Submitted(anchor, posted, errors, problems_of(exc, d), attached=attached)
        return render_case(case_id, sub, 422)
    except (StaleCase, TransitionNotAvailable) as exc:
        status, _title, message = friendly(exc)
        sub = Submitted(anchor, posted, notice=message, attached=attached)
        return render_case(case_id, sub, status)
    L = labels()
    if attached:
        flash(_("Uploaded: %(document)s.", document="; ".join(attached)), "success")
    if kind == "transition" and isinstance(action, Transition):
        flash(
            _(
                "Done: %(action)s. The case is now: %(state)s.",
                action=L.transition(key, d),
                state=L.state(result.state, d),
            ),
            "success",
        )
    else:
        flash(_("Recorded: %(action)s.", action=L.activity(key, d)), "success")
    return redirect(url_for("web.case_page", case_id=case_id) + "#timeline")


def _files_room(registry: Any, kind: str, key: str) -> int:
    """The most bytes of files the form of a transition or activity may carry: the largest
    allowed file of each of its required documents, added up (in any version)."""
    largest = 0
    for d in registry.all():
        action = (d.transitions if kind == "transition" else d.activities).get(key)
        if action is None:
            continue
        total = 0
        for req in action.documents:
            sizes = [d.document_types[c].max_size for c in req.any_of if c in d.document_types]
            total += max(sizes, default=0)
        largest = max(largest, total)
    return largest


@bp.before_app_request
def _room_for_the_files() -> None:
    """A transition or activity form carries a file per missing document: it may be larger
    than the app's limit for one upload (this runs before the CSRF check reads the form)."""
    kinds = {"web.fire_transition": "transition", "web.record_activity": "activity"}
    kind = kinds.get(request.endpoint or "")
    if kind is None:
        return
    key = (request.view_args or {}).get("key", "")
    room = _files_room(ctx.services().registry, kind, key) + 64 * 1024
    request.max_content_length = max(current_app.config.get("MAX_CONTENT_LENGTH") or 0, room)


@bp.route("/cases/<int:case_id>/transitions/<key>", methods=["POST"])
def fire_transition(case_id: int, key: str) -> Any:
    return _form_command(case_id, "transition", key)


@bp.route("/cases/<int:case_id>/activities/<key>", methods=["POST"])
def record_activity(case_id: int, key: str) -> Any:
    return _form_command(case_id, "activity", key)


# --------------------------------------------------------------------------- documents
def _back_to(case_id: int) -> str:
    """The case page at the form the upload came from (its transition or activity)."""
    anchor = request.form.get("form", "").split("--", 1)[0]
    anchor = anchor if re.fullmatch(r"[a-z0-9_-]{1,80}", anchor) else "documents"
    return url_for("web.case_page", case_id=case_id) + f"#{anchor}"


@bp.route("/cases/<int:case_id>/documents", methods=["POST"])
def upload_document(case_id: int) -> Any:
    form_id = request.form.get("form", "documents")
    doc_type = request.form.get("type", "")
    upload = request.files.get("file")
    kept = {"type": doc_type, "note": request.form.get("note", "")}
    if upload is None or not upload.filename:
        sub = Submitted(f"upload:{form_id}", kept, {"file": [_("Choose a file to upload.")]})
        return render_case(case_id, sub, 422)
    try:
        doc = _attach(case_id, doc_type, upload, request.form.get("note") or None)
    except InvalidDocument as exc:
        sub = Submitted(f"upload:{form_id}", kept, {"file": [document_error(exc)]})
        return render_case(case_id, sub, 422)
    d = worklist().definition_for(case_id, ctx.actor())
    flash(_("Uploaded: %(document)s.", document=labels().document(doc.type, d)), "success")
    return redirect(_back_to(case_id))


@bp.route("/cases/<int:case_id>/documents/<int:doc_id>")
def download_document(case_id: int, doc_id: int) -> Response:
    doc, content = ctx.services().cases.read_document(case_id, doc_id, ctx.actor(), ctx.now())
    resp = send_file(
        io.BytesIO(content),
        mimetype=doc.media_type,
        as_attachment=True,
        download_name=doc.filename or f"document-{doc.id}",
    )
    resp.headers["X-Content-SHA256"] = doc.sha256
    return resp


@bp.route("/cases/<int:case_id>/documents/<int:doc_id>/revoke", methods=["POST"])
def revoke_document(case_id: int, doc_id: int) -> Any:
    reason = request.form.get("reason", "").strip()
    form = f"revoke-{doc_id}"
    if not reason:
        errors = {"reason": [_("Give the reason for revoking the document.")]}
        return render_case(case_id, Submitted(form, {"reason": ""}, errors), 422)
    if len(reason) > 1000:
        errors = {"reason": [_("At most 1000 characters.")]}
        return render_case(case_id, Submitted(form, {"reason": reason}, errors), 422)
    doc = ctx.services().cases.revoke_document(case_id, doc_id, reason, ctx.actor(), ctx.now())
    d = worklist().definition_for(case_id, ctx.actor())
    flash(_("Revoked: %(document)s.", document=labels().document(doc.type, d)), "success")
    return redirect(url_for("web.case_page", case_id=case_id) + "#documents")


# --------------------------------------------------------------------------- new case
SUBJECT_FIELDS = ("full_name", "date_of_birth", "sex", "national_id", "address", "unit_code")


def _new_case_page(values: dict[str, str], errors: dict[str, list[str]], status: int) -> Any:
    registry = ctx.services().registry
    today = business_date(ctx.now())
    actor = ctx.actor()
    definitions = []
    for key in registry.keys():  # noqa: SIM118 - Registry is not a mapping
        # a process with no version in force today is not offered
        with contextlib.suppress(UnknownDefinition):
            definitions.append(registry.in_force(key, today))
    chosen = next(
        (d for d in definitions if d.key == values.get("definition")),
        definitions[0] if definitions else None,
    )
    opening = widgets(chosen, chosen.opening, current_lang()) if chosen and chosen.opening else []
    page = render_template(
        "web/case_new.html",
        values=values,
        errors=errors,
        definitions=definitions,
        chosen=chosen,
        opening=opening,
        communes=commune_choices(actor.units),
        idem=values.get("idem") or uuid.uuid4().hex,
        sexes=[("male", _("Male")), ("female", _("Female")), ("other", _("Other"))],
    )
    return page, status


@bp.route("/cases/new", methods=["GET", "POST"])
def new_case() -> Any:
    if request.method == "GET":
        return _new_case_page({}, {}, 200)
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    errors: dict[str, list[str]] = {}
    born: date | None = None
    raw_born = values.get("date_of_birth", "").strip()
    if raw_born:
        born = parse_date(raw_born)
        if born is None:
            errors["date_of_birth"] = [_("Enter a date as dd/mm/yyyy, e.g. 25/11/2026.")]
    sex = values.get("sex") or None
    if errors:
        return _new_case_page(values, errors, 422)
    registry = ctx.services().registry
    key = values.get("definition") or "drug_rehab"
    d = registry.in_force(key, business_date(ctx.now()))
    data, local = coerce(d.opening, values) if d.opening else ({}, {})
    if local:
        return _new_case_page(values, local, 422)
    try:
        result = ctx.services().cases.open_case(
            SubjectData(
                full_name=values.get("full_name", ""),
                unit_code=values.get("unit_code", ""),
                date_of_birth=born,
                sex=sex,
                national_id=(values.get("national_id") or "").strip() or None,
                address=(values.get("address") or "").strip() or None,
            ),
            ctx.actor(),
            ctx.now(),
            definition_key=key,
            data=data,
            idempotency_key=_idempotency_key(),
            lang=current_lang(),
        )
    except ValidationFailed as exc:
        raw = exc.details.get("errors") or {}
        errors = {k: [translate(m) for m in v] for k, v in (raw.get("subject") or {}).items()}
        errors |= {k: v for k, v in raw.items() if k != "subject"}
        return _new_case_page(values, errors, 422)
    flash(_("Case %(number)s opened.", number=result.number), "success")
    return redirect(url_for("web.case_page", case_id=result.case_id))
