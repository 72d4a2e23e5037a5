"""Stateful property test of CaseService: random commands against a model, on a fresh database.

A hypothesis ``RuleBasedStateMachine`` opens a few cases and fires random commands at them:
attach and revoke documents, fire transitions (right or wrong for the state, by the right agency
or not, with valid or broken forms, with a current, stale or no expected version), system-only
automatic transitions, and activities. The machine keeps a small model (state, version, documents,
expected number of audit events and outbox messages) and checks after every step:

* a command either succeeds or raises a ``DomainError``; anything else is a bug;
* a refused command changes nothing (cases, documents, deadlines, audit, outbox, activities,
  idempotency records, blobs);
* every case is in a state of its definition, with the group of that state, and ``closed_at`` is
  set exactly when the state is terminal; no open deadline belongs to a closed case;
* the audit chain verifies and holds exactly one event per successful command (re-revoking a
  revoked document is a successful no-op and writes nothing);
* replaying a case's audit events gives its current state; every transition leaves a source state
  of its definition for its destination, and every transition and activity had each required
  document (one of ``any_of``) attached and not revoked at that moment (by audit order);
* the version grows by exactly one per successful transition or activity, and not otherwise;
* every transition or activity wrote ``len(notify)`` outbox messages, and nothing else did.

Every version of ``drug_rehab`` is exercised: the first case opens in the time of a random
version, and a case opened later may fall under a newer one; each case is checked against its
own version. The clock only moves when the ``time_passes`` rule says so: most commands share one
instant.

SQLite always (a copy of a migrated template per example); PostgreSQL when it answers (the tables
are truncated per example). ``REHABFLOW_SLOW_TESTS=1`` runs the longer variant too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from workflow import schema
from workflow.actors import SYSTEM, Actor
from workflow.calendar import business_date
from workflow.db import make_engine, make_session_factory
from workflow.definition import Action, Definition, Transition
from workflow.errors import DomainError
from workflow.registry import Registry
from workflow.service import CaseService, SubjectData
from workflow.simulate import fake_pdf, fill_form, path_to
from workflow.storage import MemoryBlobStore

from ..conftest import COMMUNE, OTHER_COMMUNE, Actors, _truncate_pg
from .helpers import at

SLOW = os.environ.get("REHABFLOW_SLOW_TESTS") == "1"
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
FAST = settings(
    max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=_HEALTH
)
LONG = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=_HEALTH
)

START = date(2026, 1, 5)
MAX_CASES = 3
BIRTHS = (date(1990, 5, 14), date(2009, 9, 1), date(2016, 3, 3), None)  # adult, minor, child
# form values that satisfy every guard of v1 for an adult (terms, review time, registration)
GUARD_FRIENDLY = {"term_months": 12, "review_days": 15, "registered_by": "self"}
WORLD = (
    "SELECT id, state, state_group, version, fields, closed_at, updated_at, state_entered_at"
    " FROM cases ORDER BY id",
    "SELECT id, revoked_at, revoke_reason FROM documents ORDER BY id",
    "SELECT id, status, closed_at, due_on, next_action_on FROM deadlines ORDER BY id",
    "SELECT seq, hash FROM audit_head ORDER BY id",
    "SELECT (SELECT count(*) FROM audit_events), (SELECT count(*) FROM outbox),"
    " (SELECT count(*) FROM activity_records), (SELECT count(*) FROM idempotency_keys)",
)
BAD_VALUES = (123, -1, 10**12, 1.5, True, "", "   ", "x", "2026-02-30", "a" * 5000, [], {}, None)


# ------------------------------------------------------------------------------- databases
# The directory (agencies and users of every agency type and role) is made once per test and
# kept; everything a case command writes is emptied per example.
DIRECTORY_TABLES = {"agencies", "agency_units", "users", "api_tokens", "audit_head"}


def directory(session_factory: Any, defs: list[Definition]) -> dict[tuple[str, str], Actor]:
    """A user for every (agency type, role) of every version, and an outsider."""
    make = Actors(session_factory)
    combos = {(a, r) for d in defs for a in d.agency_types for r in d.roles}
    people = {(a, r): make.get(a, r) for a, r in sorted(combos)}
    people[("outsider", "")] = make.get("commune_police", "officer", OTHER_COMMUNE)
    return people


class SqliteDatabases:
    """A copy of one migrated template file (directory included) per example."""

    def __init__(self, root: Path, defs: list[Definition]) -> None:
        self.root = root
        self.template = root / "template.db"
        eng = make_engine(f"sqlite:///{self.template}")
        schema.upgrade(eng)
        self.people = directory(make_session_factory(eng), defs)
        eng.dispose()
        self._n = count(1)

    def fresh(self) -> Engine:
        path = self.root / f"example-{next(self._n)}.db"
        shutil.copyfile(self.template, path)
        return make_engine(f"sqlite:///{path}")

    def release(self, engine: Engine) -> None:
        path = Path(engine.url.database or "")
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


class PostgresDatabases:
    """The run's private schema: the case tables are truncated per example."""

    def __init__(self, engine: Engine, defs: list[Definition]) -> None:
        self.engine = engine
        _truncate_pg(engine)
        self.people = directory(make_session_factory(engine), defs)
        names = set(inspect(engine).get_table_names()) - DIRECTORY_TABLES - {"alembic_version"}
        self._truncate = f"TRUNCATE {', '.join(sorted(names))} RESTART IDENTITY"
        # every lane's head back where it starts (at the split: an empty log)
        self._reset_head = "UPDATE audit_head SET seq = base_seq + id - stride, hash = base_hash"

    def fresh(self) -> Engine:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._truncate)
            conn.exec_driver_sql(self._reset_head)
        return self.engine

    def release(self, engine: Engine) -> None:
        pass


# ----------------------------------------------------------------------------------- model
@dataclass
class DocModel:
    type: str
    revoked: bool = False


@dataclass
class CaseModel:
    id: int
    d: Definition  # the version the case was opened under
    state: str
    version: int
    docs: dict[int, DocModel] = field(default_factory=dict)

    def active_types(self) -> set[str]:
        return {d.type for d in self.docs.values() if not d.revoked}


def notifications(action: Action) -> int:
    """Outbox messages of a successful action: one per notify entry, for both communes when it
    hands the case over (effects.transfer_to)."""
    return len(action.notify) * (2 if action.effects.transfer_to is not None else 1)


def mutate(form: dict, action: Action | None, how: str, draw: Any) -> Any:
    """Break a valid form in one way (or not at all)."""
    fields = list(action.fields) if action is not None else []
    if how == "unknown_field":
        return {**form, "bogus_field": "x"}
    if how in ("drop", "drop_required"):
        required = [f.name for f in fields if f.required]
        if required:
            name = draw(st.sampled_from(required))
            return {k: v for k, v in form.items() if k != name}
        return form
    if how == "bad_value" and fields:
        name = draw(st.sampled_from([f.name for f in fields]))
        return {**form, name: draw(st.sampled_from(BAD_VALUES))}
    if how == "empty":
        return {}
    if how == "not_a_mapping":
        return draw(st.sampled_from([["x"], "form", 7]))
    return form


class CaseServiceMachine(RuleBasedStateMachine):
    def __init__(self, registry: Registry, databases: Any) -> None:
        super().__init__()
        self.registry = registry
        self.versions = registry.versions("drug_rehab")
        self.transition_keys = sorted({k for d in self.versions for k in d.transitions})
        self.activity_keys = sorted({k for d in self.versions for k in d.activities})
        self.databases = databases
        self.people: dict[tuple[str, str], Actor] = databases.people
        self.engine = databases.fresh()
        self.blobs = MemoryBlobStore()
        self.service = CaseService(
            make_session_factory(self.engine), registry, secret_key="test-secret", blobs=self.blobs
        )
        self.now = at(START)
        self.cases: dict[int, CaseModel] = {}
        self.audit_expected = 0
        self.outbox_expected = 0
        self.outcomes: Counter[str] = Counter()
        self.uploads = count(1)

    def teardown(self) -> None:
        self.databases.release(self.engine)

    # ---------------------------------------------------------------- helpers
    def tick(self) -> Any:
        """The time of the next command: the clock only moves in ``time_passes``, so many
        commands share one instant (as in a batch import or a sweep), which is the harder case
        for optimistic versions (an update that changes no value must still bump them)."""
        return self.now

    def actor(self, draw: Any) -> Actor:
        """Anyone: every agency type and role of the definition, the system, an outsider."""
        choice = draw(st.sampled_from([*sorted(self.people), ("system", "")]))
        return SYSTEM if choice == ("system", "") else self.people[choice]

    def permitted_actor(self, action: Action, draw: Any) -> Actor:
        agency, role = draw(
            st.sampled_from([(p.agency, r) for p in action.allowed for r in p.roles or ("",)])
        )
        return SYSTEM if agency == "system" else self.people[(agency, role)]

    def pick_case(self, draw: Any) -> CaseModel:
        return self.cases[draw(st.sampled_from(sorted(self.cases)))]

    def form(self, case: CaseModel, action: Action | None, draw: Any) -> Any:
        if action is None:
            return {}
        rng = random.Random(draw(st.integers(0, 2**32 - 1)))
        form = fill_form(case.d, action, business_date(self.now), rng, COMMUNE)
        # a place named in a form is another commune (a change of residence can then succeed)
        return form | {f.name: OTHER_COMMUNE for f in action.fields if f.type == "unit"}

    def opened(self, case_id: int, state: str, version: int, now: Any) -> CaseModel:
        """Model a case just opened: under the version in force on the day it was opened."""
        with self.service.uow(read_only=True) as uow:
            d = self.service.definition_of(uow.get_case(case_id))
        assert d is self.registry.in_force("drug_rehab", business_date(now))
        assert state == d.initial_state.key and case_id not in self.cases
        case = self.cases[case_id] = CaseModel(case_id, d, state, version)
        self.audit_expected += 1
        self.outbox_expected += len(d.opening.notify) if d.opening else 0
        return case

    def world(self) -> tuple:
        """Everything a command may write (not the directory and the access log)."""
        with self.service.uow(read_only=True) as uow:
            conn = uow.session.connection()
            rows = [conn.exec_driver_sql(sql).all() for sql in WORLD]
        return (*(tuple(tuple(r) for r in part) for part in rows), len(self.blobs.blobs))

    def run(self, kind: str, command: Any) -> Any:
        """Run one command: a result, or None when refused (then nothing may have changed)."""
        before = self.world()
        try:
            result = command()
        except DomainError as exc:
            after = self.world()
            assert after == before, f"refused {kind} ({exc.code}) but the database changed"
            self.outcomes[f"{kind}: {exc.code}"] += 1
            event(f"{kind}: refused")
            note(f"{kind} refused: {exc.code} {exc.message}")
            return None
        self.outcomes[f"{kind}: ok"] += 1
        event(f"{kind}: ok")
        return result

    # ---------------------------------------------------------------- commands
    def do_attach(self, case: CaseModel, doc_type: str, actor: Actor, draw: Any) -> None:
        media = draw(st.sampled_from(["application/pdf"] * 6 + ["image/png", "text/html"]))
        empty = draw(st.integers(0, 9)) == 0
        content = b"" if empty else fake_pdf(f"{case.id}-{doc_type}-{next(self.uploads)}")
        now = self.tick()
        doc = self.run(
            "attach",
            lambda: self.service.attach_document(
                case.id, doc_type, content, actor, now, filename=f"{doc_type}.pdf", media_type=media
            ),
        )
        if doc is not None:
            assert doc.case_id == case.id and doc.type == doc_type and doc.id not in case.docs
            case.docs[doc.id] = DocModel(doc_type)
            self.audit_expected += 1

    def do_advance(
        self, case: CaseModel, key: str, data: Any, actor: Actor, expected: int | None
    ) -> None:
        now = self.tick()
        result = self.run(
            "advance",
            lambda: self.service.advance(case.id, key, data, actor, now, expected_version=expected),
        )
        if result is None:
            return
        t = case.d.transitions[key]
        note(f"case {case.id}: {case.state} --{key}--> {t.dest}")
        assert case.state in t.sources
        assert (result.from_state, result.state) == (case.state, t.dest)
        assert result.version == case.version + 1, "a transition bumps the version by one"
        assert expected in (None, case.version)
        assert t.automatic == actor.is_system
        case.state, case.version = t.dest, result.version
        self.audit_expected += 1
        self.outbox_expected += notifications(t)

    def do_activity(
        self, case: CaseModel, key: str, data: Any, actor: Actor, expected: int | None
    ) -> None:
        now = self.tick()
        result = self.run(
            "activity",
            lambda: self.service.record_activity(
                case.id, key, data, actor, now, expected_version=expected
            ),
        )
        if result is None:
            return
        act = case.d.activities[key]
        assert case.state in act.states and result.state == case.state
        assert result.version == case.version + 1, "an activity bumps the version by one"
        assert expected in (None, case.version)
        case.version = result.version
        self.audit_expected += 1
        self.outbox_expected += notifications(act)

    def attach_missing(
        self, case: CaseModel, action: Action, actor: Actor, draw: Any, *, all_of: bool = False
    ) -> None:
        """Attach what ``action`` still lacks (all, or mostly: sometimes leave one out)."""
        uploader = actor if not actor.is_system else self.people[("commune_police", "officer")]
        for req in action.documents:
            if not case.active_types() & set(req.any_of) and (all_of or draw(st.integers(0, 9))):
                self.do_attach(case, draw(st.sampled_from(req.any_of)), uploader, draw)

    def expected_version(self, case: CaseModel, draw: Any) -> int | None:
        return draw(st.sampled_from([None] * 4 + [case.version] * 4 + [case.version - 1]))

    # ------------------------------------------------------------------- rules
    @initialize(born=st.sampled_from(BIRTHS), data=st.data())
    def first_case(self, born: date | None, data: st.DataObject) -> None:
        """Start in the time of a random version (later cases may fall under a newer one)."""
        starts = sorted({d.effective_from for d in self.versions})
        self.now = at(data.draw(st.sampled_from(starts)) + timedelta(days=35))
        subject = SubjectData("Trần Văn Bình", COMMUNE, born, "male", "040094001234")
        officer = self.people[("commune_police", "officer")]
        now = self.tick()
        result = self.service.open_case(subject, officer, now)
        self.opened(result.case_id, result.state, result.version, now)

    @precondition(lambda self: len(self.cases) < MAX_CASES)
    @rule(data=st.data())
    def open_case(self, data: st.DataObject) -> None:
        draw = data.draw
        subject = SubjectData(
            full_name=draw(st.sampled_from(["Trần Văn Bình"] * 8 + ["", " "])),
            unit_code=draw(st.sampled_from([COMMUNE] * 12 + [OTHER_COMMUNE, "99999", "40"])),
            date_of_birth=draw(st.sampled_from(BIRTHS)),
            sex=draw(st.sampled_from(["male", "female", None] * 4 + ["x"])),
            national_id=draw(st.sampled_from(["040094001234", None] * 6 + ["12ab"])),
        )
        opener = draw(
            st.sampled_from(
                [self.people[("commune_police", "officer")]] * 4
                + [SYSTEM, self.people[("outsider", "")]]
            )
        )
        now = self.tick()
        result = self.run("open", lambda: self.service.open_case(subject, opener, now))
        if result is None:
            return
        assert opener.is_system or subject.unit_code in opener.units, "opened out of jurisdiction"
        self.opened(result.case_id, result.state, result.version, now)

    @precondition(lambda self: len(self.cases) < MAX_CASES)
    @rule(data=st.data())
    def open_case_and_walk_to_a_state(self, data: st.DataObject) -> None:
        """A new adult's case walked along the shortest path to a random state, with forms
        that satisfy the guards, so that deep states (court, rehab, supervision) are reached."""
        draw = data.draw
        subject = SubjectData("Lê Thị Cúc", COMMUNE, date(1988, 11, 2), "female", None)
        officer = self.people[("commune_police", "officer")]
        now = self.tick()
        opened = self.run("open", lambda: self.service.open_case(subject, officer, now))
        assert opened is not None, "a valid case must open"
        case = self.opened(opened.case_id, opened.state, opened.version, now)
        target = draw(st.sampled_from(sorted(case.d.states)))
        for key in path_to(case.d, target) or []:
            t = case.d.transitions[key]
            actor = self.permitted_actor(t, draw)
            self.attach_missing(case, t, actor, draw, all_of=True)
            form = self.form(case, t, draw)
            form.update({k: v for k, v in GUARD_FRIENDLY.items() if t.field(k) is not None})
            state = case.state
            self.do_advance(case, key, form, actor, case.version)
            if case.state == state:
                break

    @precondition(lambda self: self.cases)
    @rule(data=st.data())
    def attach_document(self, data: st.DataObject) -> None:
        case = self.pick_case(data.draw)
        doc_type = data.draw(st.sampled_from([*sorted(case.d.document_types), "no_such_type"]))
        if data.draw(st.booleans()):
            actor = self.people[("commune_police", "officer")]
        else:
            actor = self.actor(data.draw)
        self.do_attach(case, doc_type, actor, data.draw)

    @precondition(lambda self: any(c.docs for c in self.cases.values()))
    @rule(data=st.data())
    def revoke_document(self, data: st.DataObject) -> None:
        draw = data.draw
        case = self.cases[
            draw(st.sampled_from(sorted(c.id for c in self.cases.values() if c.docs)))
        ]
        others = [i for c in self.cases.values() if c is not case for i in c.docs]
        doc_id = draw(st.sampled_from([*sorted(case.docs)] * 3 + [*others, 10**6]))
        reason = draw(st.sampled_from(["bản sao không hợp lệ"] * 4 + ["", "   "]))
        actor = (
            draw(st.sampled_from([self.people[("commune_police", "officer")]] * 3 + [SYSTEM]))
            if draw(st.booleans())
            else self.actor(draw)
        )
        now = self.tick()
        doc = self.run(
            "revoke", lambda: self.service.revoke_document(case.id, doc_id, reason, actor, now)
        )
        if doc is None:
            return
        assert doc_id in case.docs and doc.revoked_at is not None
        if not case.docs[doc_id].revoked:  # re-revoking is a no-op: no new audit event
            case.docs[doc_id].revoked = True
            case.version += 1  # a revocation changes the case: a command read before is stale
            self.audit_expected += 1

    def progress(self, case: CaseModel, draw: Any, *, valid: bool) -> None:
        """A manual transition out of the current state (rarely one that closes the case),
        documents attached first, by an agency that may fire it, with a valid form (or not)."""
        options = [t for t in case.d.transitions_from(case.state) if not t.automatic]
        if not options:
            return
        onward = [t for t in options if case.d.states[t.dest].kind != "terminal"]
        if onward and draw(st.integers(0, 9)) > 0:
            options = onward
        t: Transition = case.d.transitions[draw(st.sampled_from([t.key for t in options]))]
        actor = self.permitted_actor(t, draw)
        self.attach_missing(case, t, actor, draw, all_of=valid)
        how = "valid" if valid else draw(st.sampled_from(["valid"] * 8 + ["bad_value", "drop"]))
        form = mutate(self.form(case, t, draw), t, how, draw)
        expected = draw(st.sampled_from([None, case.version])) if valid else None
        self.do_advance(case, t.key, form, actor, expected)

    @precondition(lambda self: self.cases)
    @rule(data=st.data())
    def fire_transition_leaving_the_state(self, data: st.DataObject) -> None:
        """Biased toward progress (see ``progress``), sometimes with a broken form."""
        case = self.pick_case(data.draw)
        self.progress(case, data.draw, valid=False)

    @precondition(lambda self: self.cases)
    @rule(data=st.data(), steps=st.integers(1, 8))
    def walk_forward(self, data: st.DataObject, steps: int) -> None:
        """Several valid steps in a row on one case, so that 30 steps reach deep states, with
        now and then an activity of the state on the way (so every run records some)."""
        case = self.pick_case(data.draw)
        for _ in range(steps):
            if data.draw(st.integers(0, 2)) == 0:  # the work done in a state, between its steps
                self.activity_of_the_state(case, data.draw, valid=True)
            self.progress(case, data.draw, valid=True)

    @precondition(lambda self: self.cases)
    @rule(data=st.data())
    def fire_any_transition(self, data: st.DataObject) -> None:
        """Any transition key (or an unknown one), by anyone, with any form."""
        draw = data.draw
        case = self.pick_case(draw)
        key = draw(st.sampled_from([*self.transition_keys, "no_such_transition"]))
        t = case.d.transitions.get(key)
        how = draw(
            st.sampled_from(
                ["valid"] * 4
                + ["unknown_field", "drop_required", "bad_value", "empty", "not_a_mapping"]
            )
        )
        form = mutate(self.form(case, t, draw), t, how, draw)
        self.do_advance(case, key, form, self.actor(draw), self.expected_version(case, draw))

    @precondition(lambda self: self.cases)
    @rule(data=st.data())
    def fire_automatic_as_system(self, data: st.DataObject) -> None:
        draw = data.draw
        case = self.pick_case(draw)
        automatic = sorted(k for k, t in case.d.transitions.items() if t.automatic)
        key = draw(st.sampled_from(automatic))
        form = draw(st.sampled_from([{}, {}, {"bogus_field": 1}]))
        self.do_advance(case, key, form, SYSTEM, self.expected_version(case, draw))

    def activity_of_the_state(self, case: CaseModel, draw: Any, *, valid: bool) -> None:
        """One of the activities the case's state offers, by an agency that may record it, its
        documents (mostly) attached, with a valid form (or, when not ``valid``, sometimes not)."""
        options = case.d.activities_in(case.state)
        if not options:
            return
        act = case.d.activities[draw(st.sampled_from([a.key for a in options]))]
        actor = self.permitted_actor(act, draw)
        self.attach_missing(case, act, actor, draw, all_of=valid)
        how = (
            "valid"
            if valid
            else draw(st.sampled_from(["valid"] * 8 + ["bad_value", "unknown_field"]))
        )
        form = mutate(self.form(case, act, draw), act, how, draw)
        expected = case.version if valid else self.expected_version(case, draw)
        self.do_activity(case, act.key, form, actor, expected)

    @precondition(lambda self: any(c.d.activities_in(c.state) for c in self.cases.values()))
    @rule(data=st.data())
    def record_activity_of_the_state(self, data: st.DataObject) -> None:
        draw = data.draw
        ready = sorted(c.id for c in self.cases.values() if c.d.activities_in(c.state))
        self.activity_of_the_state(self.cases[draw(st.sampled_from(ready))], draw, valid=False)

    @precondition(lambda self: self.cases)
    @rule(data=st.data())
    def record_any_activity(self, data: st.DataObject) -> None:
        draw = data.draw
        case = self.pick_case(draw)
        key = draw(st.sampled_from([*self.activity_keys, "no_such_activity"]))
        act = case.d.activities.get(key)
        how = draw(st.sampled_from(["valid"] * 3 + ["bad_value", "empty", "not_a_mapping"]))
        form = mutate(self.form(case, act, draw), act, how, draw)
        self.do_activity(case, key, form, self.actor(draw), self.expected_version(case, draw))

    @rule(
        step=st.sampled_from(
            [timedelta(microseconds=1), timedelta(minutes=5), timedelta(days=1), timedelta(days=45)]
        )
    )
    def time_passes(self, step: timedelta) -> None:
        self.now += step

    # -------------------------------------------------------------- invariants
    @invariant()
    def database_matches_the_model(self) -> None:
        verdict = self.service.verify_audit()
        assert verdict.ok, verdict
        assert verdict.checked == self.audit_expected, "one audit event per successful command"
        with self.service.uow(read_only=True) as uow:
            conn = uow.session.connection()
            cases = conn.exec_driver_sql(
                "SELECT id, state, state_group, version, closed_at FROM cases"
            ).all()
            docs = conn.exec_driver_sql(
                "SELECT id, case_id, type, revoked_at IS NOT NULL FROM documents"
            ).all()
            open_on_closed = conn.exec_driver_sql(
                "SELECT d.id, d.key, c.state FROM deadlines d JOIN cases c ON c.id = d.case_id"
                " WHERE d.status = 'open' AND c.closed_at IS NOT NULL"
            ).all()
            messages = Counter(conn.exec_driver_sql("SELECT audit_seq FROM outbox").scalars())
            events = conn.exec_driver_sql(
                "SELECT seq, case_id, action, from_state, to_state, documents"
                " FROM audit_events ORDER BY seq"
            ).all()
        assert messages.total() == self.outbox_expected, "notifications only from commands"
        assert {c.id: (c.state, c.version) for c in cases} == {
            c.id: (c.state, c.version) for c in self.cases.values()
        }
        for c in cases:
            states = self.cases[c.id].d.states
            assert c.state in states and c.state_group == states[c.state].group
            terminal = states[c.state].kind == "terminal"
            assert (c.closed_at is not None) == terminal, f"case {c.id}: closed_at vs state"
        assert {d[0]: (d[1], d[2], bool(d[3])) for d in docs} == {
            i: (c.id, m.type, m.revoked) for c in self.cases.values() for i, m in c.docs.items()
        }
        assert not open_on_closed, f"open deadlines on closed cases: {open_on_closed}"
        self.replay(events, messages)

    def replay(self, events: list[Any], messages: Counter[int]) -> None:
        """Walk the audit trail: states follow the definition, documents were there."""
        state: dict[int, str] = {}
        attached: dict[int, tuple[int, str]] = {}  # doc id -> (case id, type)
        revoked: set[int] = set()
        for seq, cid, what, from_state, to_state, documents in events:
            if isinstance(documents, str):  # SQLite hands JSON back as text
                documents = json.loads(documents)
            docs = {x["id"]: x["type"] for x in documents or []}
            if what == "case.opened":
                d = self.cases[cid].d
                assert cid not in state and to_state == d.initial_state.key
                state[cid] = to_state
                assert messages[seq] == (len(d.opening.notify) if d.opening else 0)
                continue
            assert cid in state, f"event {seq} for a case never opened"
            if what == "document.attached":
                ((doc_id, doc_type),) = docs.items()
                assert doc_id not in attached
                attached[doc_id] = (cid, doc_type)
            elif what == "document.revoked":
                ((doc_id, _),) = docs.items()
                assert attached.get(doc_id, (None,))[0] == cid and doc_id not in revoked
                revoked.add(doc_id)
            elif what.startswith(("transition:", "activity:")):
                kind, key = what.split(":", 1)
                if kind == "transition":
                    t = self.cases[cid].d.transitions[key]
                    assert from_state == state[cid] and from_state in t.sources, what
                    assert to_state == t.dest
                    action: Action = t
                    state[cid] = t.dest
                else:
                    action = self.cases[cid].d.activities[key]
                    assert from_state == to_state == state[cid] and to_state in action.states
                for doc_id, doc_type in docs.items():
                    assert attached.get(doc_id) == (cid, doc_type), f"{what}: unknown document"
                    assert doc_id not in revoked, f"{what} (event {seq}) used a revoked document"
                for req in action.documents:
                    assert set(docs.values()) & set(req.any_of), (
                        f"{what} (event {seq}) without any of {req.any_of}"
                    )
                assert messages[seq] == notifications(action)
                continue
            else:
                raise AssertionError(f"unexpected audit action {what!r}")
            assert messages[seq] == 0
        assert state == {cid: c.state for cid, c in self.cases.items()}


def run_machine(registry: Registry, databases: Any, config: settings) -> None:
    totals: Counter[str] = Counter()

    def factory() -> CaseServiceMachine:
        machine = CaseServiceMachine(registry, databases)
        machine.outcomes = totals
        return machine

    run_state_machine_as_test(factory, settings=config)
    # progress, not only refusals: some transitions and activities must have gone through
    assert totals["advance: ok"] > 0 and totals["activity: ok"] > 0, dict(totals)


def databases_for(
    backend: str, registry: Registry, request: pytest.FixtureRequest, tmp_path: Path
) -> Any:
    defs = registry.versions("drug_rehab")
    if backend == "sqlite":
        return SqliteDatabases(tmp_path, defs)
    return PostgresDatabases(request.getfixturevalue("pg_engine"), defs)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_commands_keep_every_invariant(
    backend: str, registry: Registry, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run_machine(registry, databases_for(backend, registry, request, tmp_path), FAST)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="set REHABFLOW_SLOW_TESTS=1 for the long run")
@pytest.mark.parametrize("backend", BACKENDS)
def test_random_commands_keep_every_invariant_long(
    backend: str, registry: Registry, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run_machine(registry, databases_for(backend, registry, request, tmp_path), LONG)
