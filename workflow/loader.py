"""Parse and validate definition YAML into :class:`workflow.definition.Definition`.

Every problem is collected (not only the first) with the line it comes from, so that
``rehabflow definitions validate`` can print ``file:line: key: message`` for each.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from workflow import expressions
from workflow.definition import (
    DURATION_UNITS,
    FIELD_TYPES,
    STATE_KINDS,
    SUBJECT_FIELDS,
    SYSTEM_AGENCY,
    Action,
    Activity,
    AgencyType,
    CaseField,
    Choice,
    DeadlineSpec,
    Definition,
    DocRequirement,
    DocumentType,
    Duration,
    Effects,
    Escalation,
    FieldSpec,
    Guard,
    Label,
    MigrationPlan,
    Notification,
    Parameter,
    Permission,
    Quantity,
    ReportingGroup,
    Role,
    State,
    Transition,
    UnmappedState,
)
from workflow.errors import DefinitionError

KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
DEADLINE_POLICIES = ("recompute", "keep", "cancel")
AGENCY_LEVELS = ("commune", "district", "region", "province", "central", "none")


# --------------------------------------------------------------------------- YAML with lines
class LineDict(dict):
    line: int = 0
    key_lines: dict
    duplicates: list


class LineList(list):
    line: int = 0
    item_lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line, out.key_lines, out.duplicates = node.start_mark.line + 1, {}, []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            out.duplicates.append((key, key_node.start_mark.line + 1))
            loader.duplicates.append((key, key_node.start_mark.line + 1))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line, out.item_lines = node.start_mark.line + 1, [c.start_mark.line + 1 for c in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _line_of(obj: Any, key: Any = None, default: int = 0) -> int:
    if isinstance(obj, LineDict):
        return obj.key_lines.get(key, obj.line) if key is not None else obj.line
    if isinstance(obj, LineList):
        if isinstance(key, int) and key < len(obj.item_lines):
            return obj.item_lines[key]
        return obj.line
    return default


# --------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class _Problems:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Problem] = []

    def add(self, line: int, key: str, message: str) -> None:
        # a line inherited from a parent definition (``extends``) names the parent's file
        self.items.append(Problem(getattr(line, "file", self.file), int(line), key, message))


# --------------------------------------------------------------------------- parser
class _Parser:
    """Builds a Definition from a LineDict, recording problems instead of stopping."""

    def __init__(self, doc: LineDict, problems: _Problems) -> None:
        self.doc = doc
        self.p = problems

    # -- small readers -------------------------------------------------------------------
    def get(
        self,
        d: Any,
        key: str,
        path: str,
        types: type | tuple,
        required: bool = True,
        default: Any = None,
    ) -> Any:
        if not isinstance(d, dict):
            return default
        if key not in d:
            if required:
                self.p.add(_line_of(d), f"{path}.{key}" if path else key, "is required")
            return default
        value = d[key]
        if not isinstance(value, types) or (isinstance(value, bool) and types is int):
            name = (
                types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            )
            self.p.add(
                _line_of(d, key),
                f"{path}.{key}" if path else key,
                f"must be a {name}, got {type(value).__name__}",
            )
            return default
        return value

    def label(self, d: Any, key: str, path: str, required: bool = True) -> Label:
        raw = self.get(d, key, path, (dict, str), required)
        if raw is None:
            return Label("", "")
        if isinstance(raw, str):
            return Label(raw, raw)
        vi = self.get(raw, "vi", f"{path}.{key}", str)
        return Label(
            vi or "", self.get(raw, "en", f"{path}.{key}", str, required=False) or vi or ""
        )

    def ident(self, d: Any, key: str, path: str) -> str:
        value = self.get(d, key, path, str)
        if value is not None and not KEY_RE.match(value):
            self.p.add(
                _line_of(d, key),
                f"{path}.{key}",
                f"{value!r} must be lower_snake_case (a-z, 0-9, _)",
            )
        return value or ""

    def str_list(self, d: Any, key: str, path: str, required: bool = False) -> tuple[str, ...]:
        raw = self.get(d, key, path, (list, str), required, default=[])
        raw = [raw] if isinstance(raw, str) else raw
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                self.p.add(
                    _line_of(raw, i, _line_of(d, key)), f"{path}.{key}[{i}]", "must be a string"
                )
            else:
                out.append(item)
        return tuple(out)

    def items(self, key: str, id_key: str = "key") -> list[tuple[str, LineDict, str]]:
        raw = self.get(
            self.doc, key, "", list, required=key in ("states", "transitions"), default=[]
        )
        seen: dict[str, int] = {}
        out = []
        for i, item in enumerate(raw):
            path = f"{key}[{i}]"
            if not isinstance(item, dict):
                self.p.add(_line_of(raw, i), path, "must be a mapping")
                continue
            ident = self.ident(item, id_key, path)
            if ident:
                path = f"{key}.{ident}"
                if ident in seen:
                    self.p.add(
                        _line_of(item, id_key),
                        path,
                        f"duplicate {id_key} {ident!r} (first on line {seen[ident]})",
                    )
                    continue
                seen[ident] = _line_of(item, id_key)
            out.append((ident, item, path))
        return out

    def mappings(self, d: Any, key: str, path: str, required: bool = False) -> list[tuple]:
        """(index, item) of a list of mappings; any other item is reported and skipped."""
        raw = self.get(d, key, path, list, required=required, default=[])
        out = []
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                out.append((i, item))
            else:
                self.p.add(
                    _line_of(raw, i),
                    f"{path}.{key}[{i}]",
                    f"must be a mapping, got {type(item).__name__}",
                )
        return out

    def quantity(self, raw: Any, line: int, path: str, fields: bool = True) -> Quantity:
        if isinstance(raw, int) and not isinstance(raw, bool):
            if raw < 0:
                self.p.add(line, path, f"must not be negative, got {raw}")
            return Quantity(value=raw)
        if isinstance(raw, dict) and len(raw) == 1:
            ((kind, ref),) = raw.items()
            if kind == "param" and isinstance(ref, str):
                if ref not in self.params:
                    self.p.add(line, path, f"unknown parameter {ref!r}")
                elif not isinstance(self.params[ref].value, int) or isinstance(
                    self.params[ref].value, bool
                ):
                    self.p.add(line, path, f"parameter {ref!r} is not an integer")
                return Quantity(param=ref)
            if kind == "field" and isinstance(ref, str) and fields:
                if not ref.startswith(("form.", "case.")):
                    self.p.add(line, path, f"{ref!r} must be a form.x or case.x field")
                elif ref.startswith("case.") and ref[5:] not in self.case_fields:
                    self.p.add(line, path, f"unknown case field {ref!r}")
                elif ref.startswith("case.") and self.case_fields[ref[5:]].type != "integer":
                    self.p.add(line, path, f"case field {ref!r} is not an integer")
                return Quantity(field=ref)
        self.p.add(
            line,
            path,
            f"must be a non-negative integer, {{param: name}} or {{field: form.x}}, got {raw!r}",
        )
        return Quantity(value=0)

    def duration(self, d: Any, key: str, path: str, required: bool = True) -> Duration | None:
        raw = self.get(d, key, path, dict, required)
        if raw is None:
            return None
        path = f"{path}.{key}"
        if len(raw) != 1 or next(iter(raw)) not in DURATION_UNITS:
            self.p.add(
                _line_of(raw),
                path,
                f"a duration has exactly one unit of {', '.join(DURATION_UNITS)}, "
                f"got {sorted(map(str, raw))}",
            )
            return None
        ((unit, amount),) = raw.items()
        return Duration(self.quantity(amount, _line_of(raw, unit), f"{path}.{unit}"), unit)

    # -- catalogues ----------------------------------------------------------------------
    def parameters(self) -> dict[str, Parameter]:
        raw = self.get(self.doc, "parameters", "", dict, required=False, default={})
        out = {}
        for name, spec in raw.items():
            path = f"parameters.{name}"
            if not isinstance(spec, dict) or "value" not in spec:
                self.p.add(_line_of(raw, name), path, "must be a mapping with a 'value'")
                continue
            verified = self.get(spec, "verified", path, bool, required=False, default=True)
            cite = self.get(spec, "cite", path, str, required=False, default="")
            note = self.get(spec, "note", path, str, required=False, default="")
            if not verified and not note:
                self.p.add(
                    _line_of(spec),
                    path,
                    "an unverified parameter needs a 'note' saying what is uncertain",
                )
            if verified and not cite:
                self.p.add(_line_of(spec), path, "a verified parameter needs its 'cite'")
            out[name] = Parameter(name, spec["value"], verified, cite, note)
        return out

    def catalogue(self) -> None:
        self.documents: dict[str, DocumentType] = {}
        for code, item, path in self.items("document_types", "code"):
            media = self.str_list(item, "media_types", path, required=True)
            size_mb = self.get(item, "max_size_mb", path, int, required=False, default=20)
            if size_mb <= 0:
                self.p.add(_line_of(item, "max_size_mb"), f"{path}.max_size_mb", "must be > 0")
            self.documents[code] = DocumentType(
                code,
                self.label(item, "label", path),
                media,
                size_mb * 1024 * 1024,
                self.get(item, "cite", path, str, required=False, default=""),
            )
        self.agencies: dict[str, AgencyType] = {}
        for code, item, path in self.items("agency_types", "code"):
            level = self.get(item, "level", path, str, required=False, default="commune")
            if level not in AGENCY_LEVELS:
                self.p.add(
                    _line_of(item, "level"),
                    f"{path}.level",
                    f"unknown level {level!r} (use {', '.join(AGENCY_LEVELS)})",
                )
            self.agencies[code] = AgencyType(code, self.label(item, "label", path), level)
        self.roles = {
            code: Role(code, self.label(item, "label", path))
            for code, item, path in self.items("roles", "code")
        }
        self.groups = {
            code: ReportingGroup(code, self.label(item, "label", path))
            for code, item, path in self.items("groups", "code")
        }
        self.case_fields: dict[str, CaseField] = {}
        for name, item, path in self.items("case_fields", "name"):
            ftype = self.get(item, "type", path, str, default="string")
            if ftype not in FIELD_TYPES:
                self.p.add(_line_of(item, "type"), f"{path}.type", f"unknown type {ftype!r}")
            self.case_fields[name] = CaseField(name, ftype, self.label(item, "label", path))

    def ref(self, value: str, known: Iterable[str], what: str, line: int, path: str) -> None:
        if value not in known:
            self.p.add(line, path, f"unknown {what} {value!r}")

    # -- states --------------------------------------------------------------------------
    def states(self) -> dict[str, State]:
        out = {}
        for key, item, path in self.items("states"):
            kind = self.get(item, "kind", path, str, required=False, default="active")
            if kind not in STATE_KINDS:
                self.p.add(
                    _line_of(item, "kind"),
                    f"{path}.kind",
                    f"unknown kind {kind!r} (use {', '.join(STATE_KINDS)})",
                )
            group = self.get(item, "group", path, str, default="")
            if group:
                self.ref(
                    group, self.groups, "reporting group", _line_of(item, "group"), f"{path}.group"
                )
            responsible = self.get(item, "responsible", path, str, required=False)
            if responsible:
                self.ref(
                    responsible,
                    self.agencies,
                    "agency type",
                    _line_of(item, "responsible"),
                    f"{path}.responsible",
                )
            out[key] = State(
                key,
                self.label(item, "label", path),
                kind,
                group,
                responsible,
                self.duration(item, "max_duration", path, required=False),
                self.get(item, "cite", path, str, required=False, default=""),
            )
        initial = [k for k, s in out.items() if s.kind == "initial"]
        if len(initial) != 1:
            self.p.add(
                _line_of(self.doc, "states"),
                "states",
                f"exactly one state must be of kind 'initial', found {len(initial)}"
                + (f" ({', '.join(initial)})" if initial else ""),
            )
        return out

    # -- actions -------------------------------------------------------------------------
    def fields(self, item: Any, path: str) -> tuple[FieldSpec, ...]:
        raw = self.get(item, "fields", path, list, required=False, default=[])
        out, seen = [], set()
        for i, f in enumerate(raw):
            fpath = f"{path}.fields[{i}]"
            if not isinstance(f, dict):
                self.p.add(_line_of(raw, i), fpath, "must be a mapping")
                continue
            name = self.ident(f, "name", fpath)
            fpath = f"{path}.fields.{name}"
            if name in seen:
                self.p.add(_line_of(f, "name"), fpath, f"duplicate field {name!r}")
            seen.add(name)
            ftype = self.get(f, "type", fpath, str, required=False, default="string")
            if ftype not in FIELD_TYPES:
                self.p.add(
                    _line_of(f, "type"),
                    f"{fpath}.type",
                    f"unknown type {ftype!r} (use {', '.join(FIELD_TYPES)})",
                )
            choices = []
            for j, c in enumerate(self.get(f, "choices", fpath, list, required=False, default=[])):
                if isinstance(c, dict):
                    choices.append(
                        Choice(
                            str(
                                self.get(
                                    c, "value", f"{fpath}.choices[{j}]", (str, int), default=""
                                )
                            ),
                            self.label(c, "label", f"{fpath}.choices[{j}]"),
                        )
                    )
                else:
                    choices.append(Choice(str(c), Label(str(c), str(c))))
            if ftype == "enum" and not choices:
                self.p.add(_line_of(f), fpath, "an enum field needs 'choices'")
            lo, hi = (self.get(f, k, fpath, (int, dict), required=False) for k in ("min", "max"))
            bounds = {}
            for k, v in (("min", lo), ("max", hi)):
                if isinstance(v, dict):
                    q = self.quantity(v, _line_of(f, k), f"{fpath}.{k}", fields=False)
                    bounds[k], bounds[f"{k}_param"] = None, q.param
                else:
                    bounds[k], bounds[f"{k}_param"] = v, None
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                self.p.add(_line_of(f, "min"), fpath, f"min {lo} is greater than max {hi}")
            pattern = self.get(f, "pattern", fpath, str, required=False)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    self.p.add(
                        _line_of(f, "pattern"),
                        f"{fpath}.pattern",
                        f"invalid regular expression: {exc}",
                    )
            out.append(
                FieldSpec(
                    name,
                    ftype,
                    self.label(f, "label", fpath),
                    self.get(f, "required", fpath, bool, required=False, default=False),
                    bounds["min"],
                    bounds["max"],
                    pattern,
                    tuple(choices),
                    self.get(f, "max_length", fpath, int, required=False),
                    bounds["min_param"],
                    bounds["max_param"],
                )
            )
        return tuple(out)

    def action(self, key: str, item: LineDict, path: str) -> dict[str, Any]:
        allowed = []
        for i, a in self.mappings(item, "allowed", path, required=True):
            apath = f"{path}.allowed[{i}]"
            agency = self.get(a, "agency", apath, str, default="")
            if agency and agency != SYSTEM_AGENCY:
                self.ref(
                    agency, self.agencies, "agency type", _line_of(a, "agency"), f"{apath}.agency"
                )
            roles = self.str_list(a, "roles", apath, required=agency != SYSTEM_AGENCY)
            for r in roles:
                self.ref(r, self.roles, "role", _line_of(a, "roles"), f"{apath}.roles")
            allowed.append(Permission(agency, roles))
        docs = []
        raw_docs = self.get(item, "documents", path, list, required=False, default=[])
        for i, d in enumerate(raw_docs):
            if not isinstance(d, str | dict):
                self.p.add(
                    _line_of(raw_docs, i),
                    f"{path}.documents[{i}]",
                    "must be a document code or {one_of: [codes]}",
                )
                continue
            codes = (
                (d,)
                if isinstance(d, str)
                else self.str_list(d, "one_of", f"{path}.documents", required=True)
            )
            if not codes:
                continue
            for c in codes:
                self.ref(
                    c, self.documents, "document type", _line_of(raw_docs, i), f"{path}.documents"
                )
            docs.append(DocRequirement(tuple(codes)))
        fields = self.fields(item, path)
        field_names = {f.name for f in fields}
        scope = expressions.Scope(
            form=frozenset(field_names),
            case=frozenset(self.case_fields),
            subject=frozenset(SUBJECT_FIELDS),
            params=frozenset(self.params),
            date_fields=frozenset(f.name for f in fields if f.type == "date"),
        )
        guards = []
        for i, g in self.mappings(item, "guards", path):
            gpath = f"{path}.guards[{i}]"
            gkey = self.ident(g, "key", gpath)
            test = self.get(g, "test", gpath, (dict, bool), default=True)
            for msg in expressions.check_refs(test, scope):
                self.p.add(_line_of(g, "test"), f"{path}.guards.{gkey}", msg)
            guards.append(Guard(gkey, self.label(g, "message", gpath), test))
        effects = self.get(item, "effects", path, dict, required=False, default={})
        set_fields = []
        for name, expr in (
            self.get(effects, "set", f"{path}.effects", dict, required=False, default={}) or {}
        ).items():
            self.ref(
                name,
                self.case_fields,
                "case field",
                _line_of(effects.get("set"), name),
                f"{path}.effects.set",
            )
            for msg in expressions.check_refs(expr, scope):
                self.p.add(_line_of(effects.get("set"), name), f"{path}.effects.set.{name}", msg)
            set_fields.append((name, expr))
        transfer_to = None
        if isinstance(effects, dict) and "transfer_to" in effects:
            transfer_to = effects["transfer_to"]
            line = _line_of(effects, "transfer_to")
            if not (isinstance(transfer_to, dict) and set(transfer_to) == {"field"}):
                self.p.add(
                    line,
                    f"{path}.effects.transfer_to",
                    "must be {field: form.x} or {field: case.x} naming a field of type unit",
                )
                transfer_to = None
            else:
                for msg in expressions.check_refs(transfer_to, scope):
                    self.p.add(line, f"{path}.effects.transfer_to", msg)
                ns, _, name = str(transfer_to["field"]).partition(".")
                ftype = (
                    next((f.type for f in fields if f.name == name), None)
                    if ns == "form"
                    else getattr(self.case_fields.get(name), "type", None)
                )
                if ftype is not None and ftype != "unit":
                    self.p.add(
                        line, f"{path}.effects.transfer_to", f"{name!r} must be of type unit"
                    )
        starts = self.str_list(effects, "start_deadlines", f"{path}.effects")
        cancels = self.str_list(effects, "cancel_deadlines", f"{path}.effects")
        self.pending_deadline_refs += [
            (d, _line_of(effects, "start_deadlines"), f"{path}.effects.start_deadlines", key)
            for d in starts
        ] + [
            (d, _line_of(effects, "cancel_deadlines"), f"{path}.effects.cancel_deadlines", None)
            for d in cancels
        ]
        notify = []
        for i, n in self.mappings(item, "notify", path):
            npath = f"{path}.notify[{i}]"
            agencies = self.str_list(n, "agencies", npath, required=True)
            for a in agencies:
                self.ref(
                    a, self.agencies, "agency type", _line_of(n, "agencies"), f"{npath}.agencies"
                )
            template = self.get(n, "template", npath, str, required=False, default=key)
            notify.append(Notification(agencies, template))
        return dict(
            key=key,
            label=self.label(item, "label", path),
            allowed=tuple(allowed),
            documents=tuple(docs),
            fields=fields,
            guards=tuple(guards),
            effects=Effects(tuple(set_fields), starts, cancels, transfer_to),
            notify=tuple(notify),
            cite=self.get(item, "cite", path, str, required=False, default=""),
        )

    def transitions(self, states: dict[str, State]) -> dict[str, Transition]:
        out = {}
        for key, item, path in self.items("transitions"):
            sources = self.str_list(item, "from", path, required=True)
            for s in sources:
                self.ref(s, states, "state", _line_of(item, "from"), f"{path}.from")
                if s in states and states[s].kind == "terminal":
                    self.p.add(
                        _line_of(item, "from"),
                        f"{path}.from",
                        f"terminal state {s!r} must have no exits",
                    )
            dest = self.get(item, "to", path, str, default="")
            if dest:
                self.ref(dest, states, "state", _line_of(item, "to"), f"{path}.to")
            automatic = self.get(item, "automatic", path, bool, required=False, default=False)
            raw_allowed = item.get("allowed") or []
            agencies = {a.get("agency") for a in raw_allowed if isinstance(a, dict)}
            if automatic and agencies != {SYSTEM_AGENCY}:
                self.p.add(
                    _line_of(item, "allowed"),
                    f"{path}.allowed",
                    "an automatic transition is fired by the system only: "
                    "allowed: [{agency: system}]",
                )
            if not automatic and SYSTEM_AGENCY in agencies:
                self.p.add(
                    _line_of(item, "allowed"),
                    f"{path}.allowed",
                    "only an 'automatic: true' transition may be allowed to the system",
                )
            out[key] = Transition(
                **self.action(key, item, path), sources=sources, dest=dest, automatic=automatic
            )
            self.lines[key] = (_line_of(item), path)
        return out

    def activities(self, states: dict[str, State]) -> dict[str, Activity]:
        out = {}
        for key, item, path in self.items("activities"):
            in_states = self.str_list(item, "states", path, required=True)
            for s in in_states:
                self.ref(s, states, "state", _line_of(item, "states"), f"{path}.states")
            out[key] = Activity(**self.action(key, item, path), states=in_states)
            self.lines[key] = (_line_of(item), path)
        return out

    def deadlines(
        self, actions: dict[str, Action], transitions: dict[str, Transition]
    ) -> dict[str, DeadlineSpec]:
        out = {}
        for key, item, path in self.items("deadlines"):
            duration = self.duration(item, "duration", path)
            anchor = self.get(item, "anchor", path, str, required=False, default="transition")
            if anchor != "transition" and not anchor.startswith("form."):
                self.p.add(
                    _line_of(item, "anchor"),
                    f"{path}.anchor",
                    f"anchor must be 'transition' or 'form.<date field>', got {anchor!r}",
                )
            reminder = self.duration(item, "reminder", path, required=False)
            ladder = []
            for i, e in self.mappings(item, "escalation", path):
                epath = f"{path}.escalation[{i}]"
                after = self.duration(e, "after", epath)
                agencies = self.str_list(e, "notify", epath, required=True)
                for a in agencies:
                    self.ref(
                        a, self.agencies, "agency type", _line_of(e, "notify"), f"{epath}.notify"
                    )
                if after is not None:
                    ladder.append(Escalation(after, agencies, i + 1))
            met_by = self.str_list(item, "met_by", path)
            for m in met_by:
                self.ref(
                    m, actions, "transition or activity", _line_of(item, "met_by"), f"{path}.met_by"
                )
            on_due = self.get(item, "on_due", path, str, required=False)
            if on_due is not None:
                if on_due not in transitions:
                    self.p.add(
                        _line_of(item, "on_due"), f"{path}.on_due", f"unknown transition {on_due!r}"
                    )
                elif not transitions[on_due].automatic:
                    self.p.add(
                        _line_of(item, "on_due"),
                        f"{path}.on_due",
                        f"transition {on_due!r} must be 'automatic: true' to fire on due",
                    )
            during = self.str_list(item, "during", path)
            for st in during:
                self.ref(st, self.state_keys, "state", _line_of(item, "during"), f"{path}.during")
            if during and anchor != "transition":
                self.p.add(
                    _line_of(item, "during"),
                    f"{path}.during",
                    "a schedule (during) starts when the state is entered: "
                    "its anchor must be 'transition'",
                )
            repeat = self.get(item, "repeat", path, bool, required=False, default=False)
            if repeat and not met_by:
                self.p.add(
                    _line_of(item, "repeat"),
                    f"{path}.repeat",
                    "a repeating deadline needs met_by (what starts the next one)",
                )
            if duration is not None:
                out[key] = DeadlineSpec(
                    key,
                    self.label(item, "label", path),
                    duration,
                    anchor,
                    reminder,
                    tuple(ladder),
                    met_by,
                    on_due,
                    self.get(item, "cite", path, str, required=False, default=""),
                    during,
                    repeat,
                )
                self.deadline_lines[key] = (_line_of(item), path)
        return out

    # -- whole document ------------------------------------------------------------------
    def parse(self) -> Definition | None:
        doc = self.doc
        self.lines: dict[str, tuple[int, str]] = {}
        self.deadline_lines: dict[str, tuple[int, str]] = {}
        self.pending_deadline_refs: list[tuple[str, int, str, str | None]] = []
        key = self.ident(doc, "key", "")
        version = self.get(doc, "version", "", int, default=0)
        if isinstance(version, int) and version < 1:
            self.p.add(_line_of(doc, "version"), "version", "must be a positive integer")
        title = self.label(doc, "title", "")
        eff_from = self.get(doc, "effective_from", "", date)
        eff_to = self.get(doc, "effective_to", "", date, required=False)
        if eff_from and eff_to and eff_to < eff_from:
            self.p.add(_line_of(doc, "effective_to"), "effective_to", "is before effective_from")
        basis = self.str_list(doc, "legal_basis", "", required=True)
        self.params = self.parameters()
        self.catalogue()
        states = self.states()
        self.state_keys = states
        transitions = self.transitions(states)
        activities = self.activities(states)
        clash = set(transitions) & set(activities)
        for k in sorted(clash):
            self.p.add(
                self.lines[k][0], self.lines[k][1], f"{k!r} is both a transition and an activity"
            )
        opening = None
        if "opening" in doc:
            raw_opening = self.get(doc, "opening", "", dict, default=None)
            if raw_opening is not None:
                opening = Action(**self.action("open_case", raw_opening, "opening"))
                self.lines["open_case"] = (_line_of(raw_opening), "opening")
        actions = {**transitions, **activities, **({"open_case": opening} if opening else {})}
        deadlines = self.deadlines(actions, transitions)
        self.check_deadline_refs(deadlines, actions)
        self.check_graph(states, transitions)
        migrations = self.migrations(key, version, states, deadlines)
        personal_data = None
        if "personal_data" in doc:
            raw_pd = self.get(doc, "personal_data", "", dict, default={}) or {}
            personal_data = self.str_list(raw_pd, "agencies", "personal_data", required=True)
            for a in personal_data:
                if a != SYSTEM_AGENCY:
                    self.ref(
                        a,
                        self.agencies,
                        "agency type",
                        _line_of(raw_pd, "agencies"),
                        "personal_data.agencies",
                    )
        for name, line in self.duplicates:
            self.p.add(line, str(name), "duplicate key (the later value would silently win)")
        if not key or not isinstance(version, int):
            return None
        return Definition(
            key=key,
            version=version,
            title=title,
            effective_from=eff_from,
            effective_to=eff_to,
            legal_basis=basis,
            parameters=self.params,
            document_types=self.documents,
            agency_types=self.agencies,
            roles=self.roles,
            groups=self.groups,
            case_fields=self.case_fields,
            states=states,
            transitions=transitions,
            activities=activities,
            deadlines=deadlines,
            opening=opening,
            migrations=migrations,
            personal_data=personal_data,
            source=self.p.file,
            raw=dict(doc),
        )

    def migrations(
        self,
        key: str,
        version: Any,
        states: dict[str, State],
        deadlines: dict[str, DeadlineSpec],
    ) -> dict[str, MigrationPlan]:
        """``migrations``: how running cases of older versions move onto this one. What can be
        checked in this file is checked here; that the plan covers every state and deadline of
        its source is checked when the source is loaded too (workflow.registry)."""
        out: dict[str, MigrationPlan] = {}
        for i, m in self.mappings(self.doc, "migrations", ""):
            path = f"migrations[{i}]"
            source = self.get(m, "from", path, str) or ""
            src_key, _, src_version = source.partition("@")
            if not src_version.isdigit() or src_key != key:
                self.p.add(
                    _line_of(m, "from"), f"{path}.from", f"must be {key}@N (an older version)"
                )
                continue
            if isinstance(version, int) and int(src_version) >= version:
                self.p.add(
                    _line_of(m, "from"), f"{path}.from", f"{source} is not older than {version}"
                )
            if source in out:
                self.p.add(_line_of(m, "from"), f"{path}.from", f"second plan from {source}")
            path = f"migrations.{source}"
            mapping: dict[str, str] = {}
            for old in self.str_list(m, "keep", path):
                self.ref(old, states, "state (kept under the same key)", _line_of(m, "keep"), path)
                mapping[old] = old
            raw_map = self.get(m, "map", path, dict, required=False, default={}) or {}
            for old, new in raw_map.items():
                line = _line_of(raw_map, old)
                if not isinstance(new, str):
                    self.p.add(line, f"{path}.map.{old}", "must name a state of this version")
                    continue
                self.ref(new, states, "state", line, f"{path}.map.{old}")
                if old in mapping:
                    self.p.add(line, f"{path}.map.{old}", "is also in keep")
                mapping[str(old)] = new
            unmapped: dict[str, UnmappedState] = {}
            for j, u in self.mappings(m, "unmapped", path):
                upath = f"{path}.unmapped[{j}]"
                state = self.get(u, "state", upath, str) or ""
                if state in mapping:
                    self.p.add(_line_of(u, "state"), upath, f"{state!r} is also mapped")
                unmapped[state] = UnmappedState(state, self.label(u, "reason", upath))
            policies: dict[str, str] = {}
            raw_dl = self.get(m, "deadlines", path, dict, required=False, default={}) or {}
            for name, policy in raw_dl.items():
                line = _line_of(raw_dl, name)
                if policy not in DEADLINE_POLICIES:
                    self.p.add(
                        line,
                        f"{path}.deadlines.{name}",
                        f"must be one of {', '.join(DEADLINE_POLICIES)}",
                    )
                    continue
                if policy != "cancel" and name not in deadlines:
                    self.p.add(
                        line,
                        f"{path}.deadlines.{name}",
                        f"cannot {policy} {name!r}: this version has no such deadline",
                    )
                policies[str(name)] = policy
            out[source] = MigrationPlan(
                source=source,
                states=mapping,
                unmapped=unmapped,
                deadlines=policies,
                cite=self.get(m, "cite", path, str, required=False, default=""),
            )
        return out

    def check_deadline_refs(
        self, deadlines: dict[str, DeadlineSpec], actions: dict[str, Action]
    ) -> None:
        for name, line, path, starter in self.pending_deadline_refs:
            if name not in deadlines:
                if name not in self.deadline_lines:
                    self.p.add(line, path, f"unknown deadline {name!r}")
                continue
            spec = deadlines[name]
            if starter is not None and spec.anchor.startswith("form."):
                f = actions[starter].field(spec.anchor[5:])
                if f is None or f.type != "date":
                    self.p.add(
                        line,
                        path,
                        f"deadline {name!r} is anchored on {spec.anchor!r}, "
                        f"which is not a date field of {starter!r}",
                    )
            q = spec.duration.amount
            if (
                starter is not None
                and q.field
                and q.field.startswith("form.")
                and actions[starter].field(q.field[5:]) is None
            ):
                self.p.add(
                    line,
                    path,
                    f"deadline {name!r} takes its duration from "
                    f"{q.field!r}, not a field of {starter!r}",
                )
        for spec in deadlines.values():
            for q in (spec.duration.amount,):
                if q.field and not (
                    q.field.startswith("form.")
                    or q.field[5:] in self.case_fields
                    and q.field.startswith("case.")
                ):
                    self.p.add(
                        self.deadline_lines[spec.key][0],
                        self.deadline_lines[spec.key][1],
                        f"unknown field {q.field!r} for the duration",
                    )

    def check_graph(self, states: dict[str, State], transitions: dict[str, Transition]) -> None:
        initial = [k for k, s in states.items() if s.kind == "initial"]
        seen, todo = set(initial), deque(initial)
        outgoing: dict[str, list[str]] = {}
        for t in transitions.values():
            for s in t.sources:
                outgoing.setdefault(s, []).append(t.dest)
        while todo:
            for nxt in outgoing.get(todo.popleft(), []):
                if nxt in states and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        state_items = {k: (item, path) for k, item, path in self.items_silent("states")}
        for k, s in states.items():
            item, path = state_items[k]
            if initial and k not in seen:
                self.p.add(
                    _line_of(item),
                    path,
                    f"state {k!r} is unreachable from the initial state {initial[0]!r}",
                )
            if s.kind != "terminal" and not outgoing.get(k):
                self.p.add(
                    _line_of(item),
                    path,
                    f"{s.kind} state {k!r} has no way out (no transition leaves it)",
                )

    def items_silent(self, key: str) -> list[tuple[str, LineDict, str]]:
        out = []
        for _i, item in enumerate(self.doc.get(key) or []):
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                out.append((item["key"], item, f"{key}.{item['key']}"))
        return out


# --------------------------------------------------------------------------- inheritance
EXTENDS_RE = re.compile(r"^([a-z][a-z0-9_]*)@([1-9][0-9]*)$")
KEYED_LISTS = {
    "document_types": "code",
    "agency_types": "code",
    "roles": "code",
    "groups": "code",
    "case_fields": "name",
    "states": "key",
    "transitions": "key",
    "activities": "key",
    "deadlines": "key",
}
# what a child never takes from its parent: its own dates, and the inheritance directives
# (a migration plan belongs to the version that declares it)
NOT_INHERITED = ("extends", "remove", "effective_from", "effective_to", "migrations")


class SrcLine(int):
    """A line number that remembers its file: problems on inherited items name the parent."""

    file: str

    def __new__(cls, line: int, file: str) -> SrcLine:
        obj = super().__new__(cls, line)
        obj.file = file
        return obj


def _tag(obj: Any, file: str) -> None:
    """Mark every line number in a parsed tree as coming from ``file``."""
    if isinstance(obj, LineDict):
        obj.line = SrcLine(obj.line, file)
        obj.key_lines = {k: SrcLine(v, file) for k, v in obj.key_lines.items()}
        for v in obj.values():
            _tag(v, file)
    elif isinstance(obj, LineList):
        obj.line = SrcLine(obj.line, file)
        obj.item_lines = [SrcLine(v, file) for v in obj.item_lines]
        for v in obj:
            _tag(v, file)


_HEAD_RE = re.compile(r"^(key|version):\s*[\"']?([A-Za-z0-9_]+)[\"']?\s*(#.*)?$", re.MULTILINE)


def _head(path: Path) -> tuple[str, int] | None:
    """(key, version) of a definition file, read from its top-level lines without parsing."""
    try:
        found = dict((m[0], m[1]) for m in _HEAD_RE.findall(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return None
    if "key" not in found or not found.get("version", "").isdigit():
        return None
    return found["key"], int(found["version"])


def _find_parent(directory: Path, key: str, version: int) -> Path | None:
    """``<key>.v<version>.yaml`` if it holds key@version, else any ``*.yaml`` that does."""
    conventional = directory / f"{key}.v{version}.yaml"
    candidates = [conventional, *sorted(p for p in directory.glob("*.yaml") if p != conventional)]
    for path in candidates:
        if path.is_file() and _head(path) == (key, version):
            return path
    return None


def _ident(item: Any, id_key: str) -> str | None:
    value = item.get(id_key) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _removals(child: LineDict, parent: LineDict, problems: _Problems) -> dict[str, set[str]]:
    """The ``remove: {section: [key, ...]}`` of a child; every key must exist in the parent."""
    raw = child.get("remove")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(_line_of(child, "remove"), "remove", "must be a mapping: section: [keys]")
        return {}
    out: dict[str, set[str]] = {}
    for section, keys in raw.items():
        path = f"remove.{section}"
        if section != "parameters" and section not in KEYED_LISTS:
            problems.add(
                _line_of(raw, section),
                path,
                f"cannot remove from {section!r} (use parameters, {', '.join(KEYED_LISTS)})",
            )
            continue
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, list):
            problems.add(_line_of(raw, section), path, "must be a list of keys")
            continue
        pvalue = parent.get(section)
        if section == "parameters":
            known = set(pvalue) if isinstance(pvalue, dict) else set()
        else:
            known = {_ident(i, KEYED_LISTS[section]) for i in pvalue or []}
        for i, k in enumerate(keys):
            line = _line_of(keys, i, _line_of(raw, section))
            if not isinstance(k, str):
                problems.add(line, f"{path}[{i}]", "must be a string")
            elif k not in known:
                problems.add(line, path, f"the parent has no {k!r} in {section} to remove")
            else:
                out.setdefault(section, set()).add(k)
    return out


def _merge_list(plist: Any, clist: Any, id_key: str, removed: set[str]) -> LineList:
    """Parent items (less the removed), each replaced by the child's item of the same key;
    the child's new items are appended. Each item keeps the line of the file it comes from."""
    items, lines, pos, replaced = LineList(), [], {}, set()
    if isinstance(plist, list):
        for i, item in enumerate(plist):
            ident = _ident(item, id_key)
            if ident in removed:
                continue
            if ident is not None:
                pos[ident] = len(items)
            items.append(item)
            lines.append(_line_of(plist, i))
    for i, item in enumerate(clist):
        ident = _ident(item, id_key)
        if ident in pos and ident not in replaced:
            replaced.add(ident)
            items[pos[ident]], lines[pos[ident]] = item, _line_of(clist, i)
        else:  # a new key (or a duplicate within the child, which the parser reports)
            items.append(item)
            lines.append(_line_of(clist, i))
    items.line, items.item_lines = _line_of(clist), lines
    return items


def _merge_parameters(pparams: Any, cparams: dict, removed: set[str]) -> LineDict:
    out = LineDict()
    out.line, out.key_lines, out.duplicates = _line_of(cparams), {}, []
    for source in (pparams if isinstance(pparams, dict) else {}, cparams):
        for name, spec in source.items():
            if source is pparams and name in removed:
                continue
            out[name] = spec
            out.key_lines[name] = _line_of(source, name)
    return out


def merge_definitions(parent: LineDict, child: LineDict, problems: _Problems) -> LineDict:
    """The child's document laid over its parent's (both already parsed with lines).

    Top-level values of the child replace the parent's; ``parameters`` merge by name; the keyed
    lists merge by their key; ``remove`` deletes parent items. ``effective_from`` and
    ``effective_to`` are never inherited.
    """
    removals = _removals(child, parent, problems)
    out = LineDict()
    out.line, out.key_lines, out.duplicates = child.line, {}, []
    for k, v in parent.items():
        if k in NOT_INHERITED:
            continue
        if k == "parameters":
            v = _merge_parameters(v, LineDict(), removals.get(k, set()))
            v.line = _line_of(parent, k)
        elif k in KEYED_LISTS and isinstance(v, list):
            v = _merge_list(v, LineList(), KEYED_LISTS[k], removals.get(k, set()))
            v.line = _line_of(parent, k)
        out[k] = v
        out.key_lines[k] = _line_of(parent, k)
    for k, v in child.items():
        if k in ("extends", "remove"):
            continue
        if k == "parameters" and isinstance(v, dict):
            v = _merge_parameters(parent.get(k), v, removals.get(k, set()))
        elif k in KEYED_LISTS and isinstance(v, list):
            v = _merge_list(parent.get(k), v, KEYED_LISTS[k], removals.get(k, set()))
        out[k] = v
        out.key_lines[k] = _line_of(child, k)
    return out


def resolve_extends(
    doc: LineDict,
    duplicates: list,
    file: Path,
    problems: _Problems,
    _stack: tuple[Path, ...] = (),
) -> tuple[LineDict | None, list]:
    """Merge a definition that says ``extends: key@version`` on top of its parent.

    The parent is looked up in the directory of ``file`` (``<key>.v<version>.yaml``, else any
    ``*.yaml`` holding that key and version) and may itself extend another. Returns the merged
    document, still to be validated like any definition, and the duplicate keys of all files;
    or None when the parent cannot be used (the problems say why).
    """
    if "extends" not in doc:
        if "remove" in doc:
            problems.add(
                _line_of(doc, "remove"), "remove", "only a definition that 'extends' may remove"
            )
        return doc, duplicates
    raw, line = doc["extends"], _line_of(doc, "extends")
    match = EXTENDS_RE.match(raw) if isinstance(raw, str) else None
    if match is None:
        problems.add(line, "extends", f"must be 'key@version', e.g. drug_rehab@1, got {raw!r}")
        return None, duplicates
    pkey, pversion = match[1], int(match[2])
    key, version = doc.get("key"), doc.get("version")
    ok = True
    if isinstance(key, str) and key != pkey:
        problems.add(
            line, "extends", f"parent {raw} is of a different key than {key!r}: extend {key}@N"
        )
        ok = False
    if "version" not in doc:
        problems.add(doc.line, "version", f"is required (greater than the parent's {pversion})")
        ok = False
    elif isinstance(version, int) and not isinstance(version, bool) and version <= pversion:
        problems.add(
            _line_of(doc, "version"),
            "version",
            f"must be greater than the parent's version ({raw}), got {version}",
        )
        ok = False
    if file.name == "<string>" or not file.parent.is_dir():
        problems.add(line, "extends", "a definition that extends another must be read from a file")
        return None, duplicates
    here = file.resolve()
    parent_path = _find_parent(file.parent, pkey, pversion)
    if parent_path is None:
        problems.add(
            line,
            "extends",
            f"unknown parent {raw}: no {pkey}.v{pversion}.yaml nor any *.yaml with "
            f"key {pkey} and version {pversion} in {file.parent}",
        )
        return None, duplicates
    if parent_path.resolve() in (*_stack, here):
        chain = " -> ".join(p.name for p in (*_stack, here, parent_path))
        problems.add(line, "extends", f"inheritance cycle: {chain}")
        return None, duplicates
    if not ok:
        return None, duplicates
    parent_problems = _Problems(str(parent_path))
    pdoc, pdups = _read_yaml(parent_path.read_text(encoding="utf-8"), parent_problems)
    if pdoc is not None:
        _tag(pdoc, str(parent_path))
        pdups = [(k, SrcLine(n, str(parent_path))) for k, n in pdups]
        pdoc, pdups = resolve_extends(pdoc, pdups, parent_path, parent_problems, (*_stack, here))
    if pdoc is None or parent_problems.items:
        problems.items.extend(parent_problems.items)
        problems.add(line, "extends", f"parent {raw} ({parent_path}) cannot be loaded")
        return None, duplicates
    return merge_definitions(pdoc, doc, problems), pdups + duplicates


def _read_yaml(text: str, problems: _Problems) -> tuple[LineDict | None, list]:
    try:
        loader = _Loader(text)
        loader.duplicates = []
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.add(mark.line + 1 if mark else 0, "yaml", str(exc).replace("\n", " "))
        return None, []
    if not isinstance(doc, dict):
        problems.add(1, "definition", "the file must hold a mapping")
        return None, []
    return doc, loader.duplicates


def parse_text(text: str, file: str = "<string>") -> tuple[Definition | None, list[Problem]]:
    """Parse definition YAML; returns the definition (or None) and every problem found.

    A definition with ``extends: key@version`` is merged on top of its parent, looked up in
    the directory of ``file`` (see :func:`resolve_extends`), before it is validated.
    """
    problems = _Problems(file)
    doc, duplicates = _read_yaml(text, problems)
    if doc is None:
        return None, problems.items
    if "extends" in doc or "remove" in doc:
        doc, duplicates = resolve_extends(doc, duplicates, Path(file), problems)
        if doc is None:
            return None, problems.items
    parser = _Parser(doc, problems)
    parser.duplicates = duplicates
    definition = parser.parse()
    return (definition if not problems.items else None), problems.items


def load_file(path: str | Path) -> Definition:
    """Load one definition file; raise DefinitionError listing every problem."""
    path = Path(path)
    definition, problems = parse_text(path.read_text(encoding="utf-8"), str(path))
    if problems or definition is None:
        raise DefinitionError(
            f"{path}: {len(problems)} problem(s)", errors=[str(p) for p in problems]
        )
    return definition


def check_migrations(definitions: Iterable[Definition]) -> list[Problem]:
    """Every migration plan against its source version (when that version is loaded): each
    state of the source is mapped or declared unmapped exactly once, and names only states and
    deadlines the source has."""
    by_ref = {d.ref: d for d in definitions}
    problems: list[Problem] = []
    for d in by_ref.values():
        for ref, plan in d.migrations.items():
            src = by_ref.get(ref)
            path = f"migrations.{ref}"
            line = _line_of(d.raw.get("migrations"))
            if src is None:
                continue  # checked when both versions are loaded together
            covered = set(plan.states) | set(plan.unmapped)
            for state in sorted(covered - set(src.states)):
                problems.append(Problem(d.source, line, path, f"{ref} has no state {state!r}"))
            for state in sorted(set(src.states) - covered):
                problems.append(
                    Problem(
                        d.source,
                        line,
                        path,
                        f"state {state!r} of {ref} is neither mapped "
                        "(keep/map) nor declared unmapped",
                    )
                )
            for name in sorted(set(plan.deadlines) - set(src.deadlines) - set(d.deadlines)):
                problems.append(
                    Problem(d.source, line, f"{path}.deadlines", f"unknown deadline {name!r}")
                )
    return problems
