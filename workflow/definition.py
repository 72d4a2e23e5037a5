"""Case definitions as frozen data.

A definition describes one version of one process (``drug_rehab@1``): its catalogues (documents,
agency types, roles), states, transitions, activities and deadlines. It is parsed and validated by
:mod:`workflow.loader`; nothing here reads files. The law is in the YAML, not in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

STATE_KINDS = ("initial", "active", "terminal")
DURATION_UNITS = ("working_days", "days", "months")
FIELD_TYPES = ("string", "text", "date", "integer", "enum", "boolean", "unit")
SYSTEM_AGENCY = "system"
SUBJECT_FIELDS = ("full_name", "date_of_birth", "sex", "unit_code", "age")


@dataclass(frozen=True)
class Label:
    vi: str
    en: str

    def get(self, lang: str = "vi") -> str:
        return self.en if lang == "en" and self.en else self.vi


@dataclass(frozen=True)
class Parameter:
    """A named value of the law; ``verified=False`` marks a fact the sources do not confirm."""

    name: str
    value: Any
    verified: bool
    cite: str = ""
    note: str = ""


@dataclass(frozen=True)
class DocumentType:
    code: str
    label: Label
    media_types: tuple[str, ...]
    max_size: int
    cite: str = ""


@dataclass(frozen=True)
class AgencyType:
    code: str
    label: Label
    level: str  # commune | province | central | none


@dataclass(frozen=True)
class Role:
    code: str
    label: Label


@dataclass(frozen=True)
class Quantity:
    """An integer given literally, by a definition parameter or by a form/case field."""

    value: int | None = None
    param: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class Duration:
    amount: Quantity
    unit: str  # one of DURATION_UNITS


@dataclass(frozen=True)
class State:
    key: str
    label: Label
    kind: str
    group: str
    responsible: str | None
    max_duration: Duration | None = None
    cite: str = ""


@dataclass(frozen=True)
class Permission:
    agency: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class DocRequirement:
    """One required document; several codes mean 'any one of these'."""

    any_of: tuple[str, ...]


@dataclass(frozen=True)
class Choice:
    value: str
    label: Label


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    label: Label
    required: bool = False
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    choices: tuple[Choice, ...] = ()
    max_length: int | None = None
    min_param: str | None = None
    max_param: str | None = None


@dataclass(frozen=True)
class Guard:
    key: str
    message: Label
    test: Any  # an expression, see workflow.expressions


@dataclass(frozen=True)
class Notification:
    agencies: tuple[str, ...]
    template: str


@dataclass(frozen=True)
class Effects:
    set_fields: tuple[tuple[str, Any], ...] = ()
    start_deadlines: tuple[str, ...] = ()
    cancel_deadlines: tuple[str, ...] = ()
    # an expression giving the commune code the case moves to (change of residence): the
    # receiving commune takes the case over; the sending one keeps read access to its history
    transfer_to: Any = None


@dataclass(frozen=True)
class Action:
    """What transitions and activities share: who, with which documents, form and guards."""

    key: str
    label: Label
    allowed: tuple[Permission, ...]
    documents: tuple[DocRequirement, ...]
    fields: tuple[FieldSpec, ...]
    guards: tuple[Guard, ...]
    effects: Effects
    notify: tuple[Notification, ...]
    cite: str = ""

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def permits(self, agency_type: str, role: str) -> bool:
        return any(p.agency == agency_type and role in p.roles for p in self.allowed)


@dataclass(frozen=True)
class Transition(Action):
    sources: tuple[str, ...] = ()
    dest: str = ""
    automatic: bool = False


@dataclass(frozen=True)
class Activity(Action):
    states: tuple[str, ...] = ()


@dataclass(frozen=True)
class Escalation:
    after: Duration
    notify: tuple[str, ...]
    level: int = 1


@dataclass(frozen=True)
class DeadlineSpec:
    key: str
    label: Label
    duration: Duration
    anchor: str  # "transition" or "form.<date field>"
    reminder: Duration | None = None
    escalation: tuple[Escalation, ...] = ()
    met_by: tuple[str, ...] = ()
    on_due: str | None = None  # key of an automatic transition fired when due
    cite: str = ""
    # A schedule: started whenever a case enters one of these states, cancelled when it leaves
    # them (e.g. monthly check-ins during post-rehab supervision).
    during: tuple[str, ...] = ()
    # When met, the next one starts at once (anchored on the day it was met).
    repeat: bool = False


@dataclass(frozen=True)
class UnmappedState:
    state: str
    reason: Label


@dataclass(frozen=True)
class MigrationPlan:
    """How running cases of an older version (``source``, e.g. ``drug_rehab@1``) move onto this
    one: every state of the source is mapped to a state here or declared unmapped (its cases
    stay where they are, with the reason); open deadlines are recomputed, kept or cancelled."""

    source: str
    states: dict[str, str]
    unmapped: dict[str, UnmappedState]
    deadlines: dict[str, str]  # deadline key -> recompute | keep | cancel
    cite: str = ""

    @property
    def source_key(self) -> str:
        return self.source.split("@", 1)[0]

    @property
    def source_version(self) -> int:
        return int(self.source.split("@", 1)[1])


@dataclass(frozen=True)
class CaseField:
    name: str
    type: str
    label: Label


@dataclass(frozen=True)
class ReportingGroup:
    code: str
    label: Label


@dataclass(frozen=True, eq=False)
class Definition:
    """One version of one process; compared and hashed by identity (it is loaded once)."""

    key: str
    version: int
    title: Label
    effective_from: date
    effective_to: date | None
    legal_basis: tuple[str, ...]
    parameters: dict[str, Parameter]
    document_types: dict[str, DocumentType]
    agency_types: dict[str, AgencyType]
    roles: dict[str, Role]
    groups: dict[str, ReportingGroup]
    case_fields: dict[str, CaseField]
    states: dict[str, State]
    transitions: dict[str, Transition]
    activities: dict[str, Activity]
    deadlines: dict[str, DeadlineSpec]
    opening: Action | None = None
    migrations: dict[str, MigrationPlan] = field(default_factory=dict)
    # agency types that see the person's identity (name, birth date, ID number, address);
    # None: every agency that sees the case
    personal_data: tuple[str, ...] | None = None
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.key}@{self.version}"

    @cached_property
    def initial_state(self) -> State:
        return next(s for s in self.states.values() if s.kind == "initial")

    def param(self, name: str) -> Any:
        return self.parameters[name].value

    @cached_property
    def _from_index(self) -> dict[str, tuple[Transition, ...]]:
        index: dict[str, list[Transition]] = {k: [] for k in self.states}
        for t in self.transitions.values():
            for s in t.sources:
                index[s].append(t)
        return {k: tuple(v) for k, v in index.items()}

    def transitions_from(self, state: str) -> tuple[Transition, ...]:
        return self._from_index.get(state, ())

    @cached_property
    def _activity_index(self) -> dict[str, tuple[Activity, ...]]:
        return {s: tuple(a for a in self.activities.values() if s in a.states) for s in self.states}

    def activities_in(self, state: str) -> tuple[Activity, ...]:
        return self._activity_index.get(state, ())

    @cached_property
    def _met_by_index(self) -> dict[str, tuple[str, ...]]:
        index: dict[str, list[str]] = {}
        for d in self.deadlines.values():
            for key in d.met_by:
                index.setdefault(key, []).append(d.key)
        return {k: tuple(v) for k, v in index.items()}

    def deadlines_met_by(self, action_key: str) -> tuple[str, ...]:
        return self._met_by_index.get(action_key, ())

    @cached_property
    def _deadline_actors(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        actions = {**self.transitions, **self.activities}
        for spec in self.deadlines.values():
            agencies: list[str] = []
            for key in spec.met_by:
                for p in actions[key].allowed:
                    if p.agency != SYSTEM_AGENCY and p.agency not in agencies:
                        agencies.append(p.agency)
            out[spec.key] = tuple(agencies)
        return out

    def deadline_actors(self, deadline_key: str) -> tuple[str, ...]:
        """Agency types that can meet a deadline: those reminded before it falls due."""
        return self._deadline_actors.get(deadline_key, ())

    @cached_property
    def _agency_states(self) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {code: set() for code in self.agency_types}
        for state in self.states.values():
            if state.responsible in out:
                out[state.responsible].add(state.key)
        for t in self.transitions.values():
            for p in t.allowed:
                if p.agency in out and not t.automatic:
                    out[p.agency].update(t.sources)
            for n in t.notify:
                for agency in n.agencies:
                    if agency in out:
                        out[agency].add(t.dest)
        for a in self.activities.values():
            for p in a.allowed:
                if p.agency in out:
                    out[p.agency].update(a.states)
        return {k: frozenset(v) for k, v in out.items()}

    def states_routed_to(self, agency_type: str) -> frozenset[str]:
        """States in which a case concerns an agency type: it is responsible, may act, or is
        told of the case's arrival there. A province-level agency sees only these cases."""
        return self._agency_states.get(agency_type, frozenset())

    @cached_property
    def scheduled(self) -> tuple[DeadlineSpec, ...]:
        return tuple(d for d in self.deadlines.values() if d.during)

    def shows_person_to(self, agency_type: str) -> bool:
        """Whether an agency of this type sees who the person is (not only the case)."""
        return self.personal_data is None or agency_type in self.personal_data

    def in_force_on(self, day: date) -> bool:
        return self.effective_from <= day and (
            self.effective_to is None or day <= self.effective_to
        )
