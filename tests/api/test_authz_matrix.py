"""The authorisation matrix, generated from the definition, over HTTP.

For every transition (and activity) x every agency type x every role of the definition:
the combinations the definition allows succeed (given the documents and a valid form), the
others get 403 problem+json and change nothing. A user outside the case's jurisdiction gets 404
on every case endpoint, indistinguishable from a case that does not exist.

Cases are driven to a source state through the service as the permitted users (fast); the probes
themselves (documents, transitions, activities) go through the API. The denied combinations of a
transition are all tried on one case in its source state with the documents attached and a valid
form (a 403 changes nothing); then every allowed combination fires it, each on a case of its own.

Run time: a request costs ~10 ms of CPU (~15 on PostgreSQL), and transitions x agency types x
roles is ~3,300 denied combinations. SQLite gets all of them; PostgreSQL gets the near misses
(an allowed agency type with another role, an allowed role in another agency type, and every
agency type and role at least once: ~1/3 of them), and so do activities on both databases.
``REHABFLOW_API_FULL_MATRIX=1`` runs every combination everywhere.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from workflow.actors import Actor
from workflow.definition import Action, Definition, Transition
from workflow.errors import GuardFailed
from workflow.registry import Registry
from workflow.service import SubjectData

from ..conftest import COMMUNE, DEFINITIONS, PROVINCE
from .conftest import (
    DB_PARAMS,
    OTHER_COMMUNE,
    OTHER_PROVINCE,
    PDF,
    PROBLEM,
    ApiUsers,
    Caller,
    Clock,
    assert_problem,
    attach_required,
    build_app,
    doc_bytes,
    fire_valid,
    form_for,
    truncate_all,
)

D: Definition = Registry.from_directory(DEFINITIONS).get("drug_rehab", 1)
COMBOS = [(agency, role) for agency in D.agency_types for role in D.roles]
MINOR_ONLY = {"open_minor_dossier"}
ADULT_ONLY = {"open_compulsory_dossier"}
PROBE_THREADS = 4
FULL_MATRIX = os.environ.get("REHABFLOW_API_FULL_MATRIX") == "1"


def permitted(action: Action, agency: str, role: str) -> bool:
    """The oracle, read from the definition's ``allowed`` lists (not the engine's own check)."""
    if isinstance(action, Transition) and action.automatic:
        return False
    return any(p.agency == agency and role in p.roles for p in action.allowed)


def near_misses(action: Action) -> list[tuple[str, str]]:
    """The denied combinations a faulty check is most likely to let through -- an allowed agency
    type with another role, an allowed role in another agency type -- plus every other agency
    type and every role at least once."""
    agencies = {p.agency for p in action.allowed}
    roles = {r for p in action.allowed for r in p.roles}
    out = [
        (a, r) for a, r in COMBOS if not permitted(action, a, r) and (a in agencies or r in roles)
    ]
    all_roles = list(D.roles)
    for i, agency in enumerate(D.agency_types):
        if all(a != agency for a, _ in out):
            role = next(
                r
                for r in all_roles[i % len(all_roles) :] + all_roles
                if not permitted(action, agency, r)
            )
            out.append((agency, role))
    for role in all_roles:
        if all(r != role for _, r in out):
            out.append((next(a for a in D.agency_types if not permitted(action, a, role)), role))
    return out


def path_to(target: str, *, minor: bool) -> list[str] | None:
    """Shortest list of manual transitions from the initial state to ``target`` for an adult
    (or a minor) subject: age-specific transitions of the other age are not taken."""
    avoid = ADULT_ONLY if minor else MINOR_ONLY
    start = D.initial_state.key
    prev: dict[str, tuple[str, str] | None] = {start: None}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        for t in D.transitions_from(state):
            if not t.automatic and t.key not in avoid and t.dest not in prev:
                prev[t.dest] = (state, t.key)
                todo.append(t.dest)
    if target not in prev:
        return None
    keys: list[str] = []
    node = target
    while (step := prev[node]) is not None:
        node, key = step
        keys.append(key)
    return keys[::-1]


def source_of(states: tuple[str, ...], *, minor: bool) -> str:
    """The cheapest state to reach among ``states``."""
    reachable = [(len(p), s) for s in states if (p := path_to(s, minor=minor)) is not None]
    assert reachable, f"none of {states} is reachable"
    return min(reachable)[1]


class World:
    """One app and database for the whole module (per database), with cached cases."""

    def __init__(self, app: Flask, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        self.today: date = clock.today
        self.users = ApiUsers(app)
        self.service = app.extensions["rehabflow"].cases
        self.officer = self.users.officer()
        self._base: dict[tuple[str, bool], int] = {}
        self._attached: dict[int, set[str]] = {}
        self._actors: dict[str, Actor] = {}
        # PostgreSQL answers several requests at once; SQLite serialises writers (and every
        # request here starts a write transaction), so threads there only add contention
        engine = app.extensions["rehabflow"].engine
        self.probe_threads = PROBE_THREADS if engine.dialect.name == "postgresql" else 1
        self.exhaustive = FULL_MATRIX or engine.dialect.name == "sqlite"

    def actor(self, caller: Caller) -> Actor:
        if caller.username not in self._actors:
            self._actors[caller.username] = self.users.actor(caller)
        return self._actors[caller.username]

    def actor_for(self, action: Action) -> Actor:
        p = action.allowed[0]
        return self.actor(self.users.get(p.agency, p.roles[0]))

    def expect_403(
        self,
        combos: list[tuple[str, str]],
        call: Callable[[Caller], TestResponse],
        state: str,
    ) -> list[str]:
        """Send ``call`` as a user of every combination (a few at a time: a 403 changes
        nothing); returns the combinations that did not get a 403 problem.

        A province-wide agency sees a case only when it is routed to it (its state concerns the
        agency type, or the agency acted on it before): where the state does not concern it, a
        404 that does not reveal the case is right too."""
        callers = [self.users.get(agency, role) for agency, role in combos]  # made in order

        def probe(caller: Caller) -> str | None:
            r = call(caller)
            body = r.get_json(silent=True) or {}
            hidden = caller.unit == PROVINCE and state not in D.states_routed_to(caller.agency_type)
            if (
                hidden
                and r.status_code == 404
                and r.mimetype == PROBLEM
                and str(body.get("type", "")).endswith("/case_not_found")
            ):
                return None
            if (
                r.status_code == 403
                and r.mimetype == PROBLEM
                and body.get("status") == 403
                and str(body.get("type", "")).endswith("/not_permitted")
                and body.get("title")
                and body.get("detail")
            ):
                return None
            return f"{caller.agency_type}/{caller.role}: {r.status_code} {r.get_data(True)[:200]}"

        with ThreadPoolExecutor(max_workers=self.probe_threads) as pool:
            return [w for w in pool.map(probe, callers) if w is not None]

    def attach(self, case_id: int, action: Action) -> None:
        done = self._attached.setdefault(case_id, set())
        officer = self.actor(self.officer)
        for req in action.documents:
            if done.intersection(req.any_of):
                continue
            code = req.any_of[0]
            self.service.attach_document(
                case_id, code, doc_bytes(code), officer, self.clock(),
                filename=f"{code}.pdf", media_type=PDF,
            )  # fmt: skip
            done.add(code)

    def case_at(self, state: str, *, minor: bool = False) -> int:
        """A new case driven to ``state`` through the service by the permitted users."""
        born = date(self.today.year - 15, 1, 10) if minor else date(1990, 5, 14)
        opened = self.service.open_case(
            SubjectData("Nguyễn Văn Thử", COMMUNE, born, "male"),
            self.actor(self.officer),
            self.clock(),
            version=1,
        )
        path = path_to(state, minor=minor)
        assert path is not None
        for key in path:
            t = D.transitions[key]
            self.attach(opened.case_id, t)
            for seed in range(30):
                try:
                    data = form_for(D, t, self.today, seed)
                    self.service.advance(opened.case_id, key, data, self.actor_for(t), self.clock())
                    break
                except GuardFailed:
                    continue
            else:
                pytest.fail(f"no random form passes the guards of {key}")
        return opened.case_id

    def base_case(self, state: str, *, minor: bool = False) -> int:
        if (state, minor) not in self._base:
            self._base[(state, minor)] = self.case_at(state, minor=minor)
        return self._base[(state, minor)]

    def get_case(self, case_id: int) -> dict[str, Any]:
        r = self.officer.get(f"/api/v1/cases/{case_id}")
        assert r.status_code == 200, r.get_json()
        return r.get_json()


@pytest.fixture(scope="module", params=DB_PARAMS)
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    registry: Registry,
) -> Iterator[World]:
    clock = Clock()
    kw: dict[str, Any] = {}
    if request.param == "sqlite":
        kw["sqlite_template"] = request.getfixturevalue("sqlite_template")
    else:
        kw["pg_url"] = request.getfixturevalue("api_pg_url")
        truncate_all(kw["pg_url"])
    data: Path = tmp_path_factory.mktemp(f"matrix-{request.param}")
    app = build_app(request.param, data, registry, clock, **kw)
    yield World(app, clock)
    app.extensions["rehabflow"].engine.dispose()


def _fail_if(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{what}:\n  " + "\n  ".join(problems[:40]))


# ----------------------------------------------------------------------------- transitions
@pytest.mark.parametrize("key", list(D.transitions))
def test_transition_matrix(world: World, key: str) -> None:
    t = D.transitions[key]
    minor = key in MINOR_ONLY
    source = source_of(t.sources, minor=minor)
    allowed = [(a, r) for a, r in COMBOS if permitted(t, a, r)]
    denied = [(a, r) for a, r in COMBOS if not permitted(t, a, r)]
    if not world.exhaustive:
        denied = near_misses(t)
    if t.automatic:
        assert not allowed, "an automatic transition is fired by the system only"
    else:
        assert allowed, f"{key}: the definition allows nobody (the matrix would be vacuous)"

    # every other agency type x role: 403 on a case in the source state with the transition's
    # documents attached and a valid form; nothing changes
    first = world.case_at(source, minor=minor)
    attach_required(world.officer, first, t)
    before = world.get_case(first)
    assert before["state"] == source
    data = form_for(D, t, world.today)
    wrong = world.expect_403(denied, lambda caller: caller.fire(first, key, data), source)
    _fail_if(wrong, f"{key}: denied combinations that did not get 403")
    after = world.get_case(first)
    assert (after["state"], after["version"]) == (before["state"], before["version"])

    # every allowed combination succeeds, each on a case of its own (the first one reuses the
    # case above)
    for n, (agency, role) in enumerate(allowed):
        caller = world.users.get(agency, role)
        case_id = first
        if n:
            case_id = world.case_at(source, minor=minor)
            attach_required(world.officer, case_id, t)
        seen = caller.get(f"/api/v1/cases/{case_id}")
        assert seen.status_code == 200, (agency, role, seen.get_json())
        offered = {a["key"]: a for a in seen.get_json()["available_transitions"]}
        assert key in offered, (agency, role, sorted(offered))
        assert offered[key]["missing_documents"] == [], (agency, role, offered[key])
        r = fire_valid(caller, case_id, t, world.today)
        assert r.status_code == 200, (agency, role, r.status_code, r.get_json())
        body = r.get_json()
        assert (body["from_state"], body["state"]) == (source, t.dest), (agency, role, body)
        assert r.headers["ETag"] == f'"{body["version"]}"'
        last = caller.get(f"/api/v1/cases/{case_id}/audit").get_json()[-1]
        assert (last["action"], last["actor"], last["agency"]) == (
            f"transition:{key}",
            caller.username,
            agency,
        )


# ----------------------------------------------------------------------------- activities
@pytest.mark.parametrize("key", list(D.activities))
def test_activity_matrix(world: World, key: str) -> None:
    act = D.activities[key]
    state = source_of(act.states, minor=False)
    allowed = [(a, r) for a, r in COMBOS if permitted(act, a, r)]
    assert allowed, f"{key}: the definition allows nobody"
    case_id = world.base_case(state)
    world.attach(case_id, act)
    data = form_for(D, act, world.today)
    version = world.get_case(case_id)["version"]
    denied = [(a, r) for a, r in COMBOS if not permitted(act, a, r)]
    if not FULL_MATRIX:
        denied = near_misses(act)
    wrong = world.expect_403(denied, lambda c: c.activity(case_id, key, data), state)
    _fail_if(wrong, f"{key}: denied combinations that did not get 403")
    assert world.get_case(case_id)["version"] == version
    moves = act.effects.transfer_to is not None  # a hand-over: the case leaves the commune
    for agency, role in allowed:
        if moves:
            case_id = world.case_at(state)
            world.attach(case_id, act)
            data = data | {"new_unit": OTHER_COMMUNE}
        r = world.users.get(agency, role).activity(case_id, key, data)
        assert r.status_code == 200, (agency, role, r.get_json())
        assert r.get_json()["action"] == f"activity:{key}"
        assert r.get_json()["state"] == state


# ----------------------------------------------------------------------------- jurisdiction
def _normalise_404(body: dict[str, Any], case_id: int) -> dict[str, Any]:
    """The body with the requested case id taken out (it is the caller's own input)."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False)
    text = re.sub(rf"/api/v1/cases/{case_id}(?=[/\"])", "/api/v1/cases/{id}", text)
    text = re.sub(rf"\bcase {case_id}\b", "case {id}", text)
    text = re.sub(rf"\"case_id\": {case_id}\b", '"case_id": "{id}"', text)
    return json.loads(text)


def test_other_jurisdiction_gets_404_on_every_case_endpoint(world: World) -> None:
    users = world.users
    officer = world.officer
    t = D.transitions["open_compulsory_dossier"]  # commune police officers may fire it here
    case_id = world.case_at("addicted")
    attach_required(officer, case_id, t)
    doc = officer.upload(case_id, "written_statement", doc_bytes("written_statement")).get_json()
    number = world.get_case(case_id)["number"]
    missing = 10**9
    form = form_for(D, t, world.today)
    activity_form = form_for(D, D.activities["movement_report"], world.today)
    pdf = doc_bytes("citizen_id_copy")

    def requests(cid: int) -> list[tuple[str, Any]]:
        base = f"/api/v1/cases/{cid}"
        return [
            ("GET case", lambda c: c.get(base)),
            ("GET audit", lambda c: c.get(f"{base}/audit")),
            ("POST document", lambda c: c.upload(cid, "citizen_id_copy", pdf)),
            ("GET document", lambda c: c.get(f"{base}/documents/{doc['id']}/content")),
            (
                "POST revoke",
                lambda c: c.post(f"{base}/documents/{doc['id']}/revoke", {"reason": "sai"}),
            ),
            ("POST activity", lambda c: c.activity(cid, "movement_report", activity_form)),
            ("POST transition", lambda c: c.fire(cid, t.key, form)),
        ]

    strangers = [
        users.officer(OTHER_COMMUNE),  # same agency type and role, next commune
        users.get("commune_police", "head", OTHER_COMMUNE),
        users.get("provincial_police", "head", OTHER_PROVINCE),  # another province
        users.get("court", "judge", OTHER_COMMUNE),
    ]
    for stranger in strangers:
        for (name, call), (_, call_missing) in zip(requests(case_id), requests(missing)):
            real = call(stranger)
            ghost = call_missing(stranger)
            body = assert_problem(real, 404)
            ghost_body = assert_problem(ghost, 404)
            assert _normalise_404(body, case_id) == _normalise_404(ghost_body, missing), (
                stranger.username,
                name,
                body,
                ghost_body,
            )
            skip = {"Content-Length"}
            assert {k: v for k, v in real.headers if k not in skip} == {
                k: v for k, v in ghost.headers if k not in skip
            }, (stranger.username, name)
        listed = stranger.get("/api/v1/cases?limit=200").get_json()["items"]
        assert case_id not in {c["id"] for c in listed}
        assert stranger.get(f"/api/v1/cases?q={number}").get_json()["items"] == []

    # nothing the strangers did left a trace
    audit = officer.get(f"/api/v1/cases/{case_id}/audit").get_json()
    stranger_names = {s.username for s in strangers}
    assert not stranger_names.intersection(e["actor"] for e in audit)
    case = world.get_case(case_id)
    assert case["state"] == "addicted"
    assert [d["revoked"] for d in case["documents"] if d["id"] == doc["id"]] == [False]

    # a province-level agency of the case's own province sees it when it is routed to it:
    # the rehab facility may admit an addicted person to voluntary rehab, the provincial
    # police has nothing to do with it yet
    assert "addicted" in D.states_routed_to("rehab_facility")
    assert "addicted" not in D.states_routed_to("provincial_police")
    seen = users.get("rehab_facility", "staff", PROVINCE).get(f"/api/v1/cases/{case_id}")
    assert seen.status_code == 200, seen.get_json()
    unseen = users.get("provincial_police", "head", PROVINCE).get(f"/api/v1/cases/{case_id}")
    assert unseen.status_code == 404, unseen.get_json()

    # and the very same requests succeed for the commune's own officer
    head = users.get("commune_police", "head")
    for name, call in requests(case_id):
        r = call(head)
        assert r.status_code in (200, 201), (name, r.status_code, r.get_json())
    assert world.get_case(case_id)["state"] == t.dest


def test_fire_valid_is_not_vacuous(world: World) -> None:
    """The allowed probes really use the form: an empty form is refused with field errors."""
    case_id = world.case_at("detected")
    t = D.transitions["request_determination"]
    attach_required(world.officer, case_id, t)
    body = assert_problem(world.officer.fire(case_id, t.key, {}), 422)
    assert set(body["errors"]) == {f.name for f in t.fields if f.required}
    assert fire_valid(world.officer, case_id, t, world.today).status_code == 200
