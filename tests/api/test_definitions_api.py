"""/api/v1/definitions: versions in force, and each transition's and activity's form published
as JSON Schema (2020-12) generated from the same field spec the engine validates with."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from workflow.forms import validate_form
from workflow.simulate import fill_form

from ..conftest import COMMUNE
from .conftest import (
    FIXED_NOW,
    ApiUsers,
    Clock,
    assert_problem,
    definition,
    doc_bytes,
    open_case,
)

jsonschema = pytest.importorskip("jsonschema")

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


@pytest.fixture
def detail(app: Flask, users: ApiUsers) -> dict[str, Any]:
    r = users.officer().get("/api/v1/definitions/drug_rehab/1")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_list_shows_the_version_in_force(users: ApiUsers) -> None:
    r = users.officer().get("/api/v1/definitions")
    assert r.status_code == 200
    listed = {(d["key"], d["version"]): d for d in r.get_json()}
    assert {("drug_rehab", 1), ("drug_rehab", 2), ("drug_rehab", 3)} <= set(listed)
    v1 = listed[("drug_rehab", 1)]
    assert v1["effective_from"] == "2022-01-01"
    assert v1["title"]["vi"] and v1["title"]["en"]
    # on the injected date (02/06/2025) new cases get v2; exactly one version is in force
    assert [v for (k, v), d in listed.items() if k == "drug_rehab" and d["in_force"]] == [2]
    assert listed[("drug_rehab", 3)]["effective_from"] == "2026-07-01"


def test_in_force_follows_the_clock(make_app: Callable[..., Flask], clock: Clock) -> None:
    clock.now = FIXED_NOW.replace(year=2021)  # before drug_rehab v1 took effect
    app = make_app()
    listed = ApiUsers(app).officer().get("/api/v1/definitions").get_json()
    assert {(d["key"], d["version"]): d["in_force"] for d in listed}[("drug_rehab", 1)] is False


def test_unknown_definition_is_404(users: ApiUsers) -> None:
    officer = users.officer()
    assert_problem(officer.get("/api/v1/definitions/drug_rehab/99"), 404)
    assert_problem(officer.get("/api/v1/definitions/nope/1"), 404)


def test_detail_lists_states_transitions_activities_deadlines(
    app: Flask, detail: dict[str, Any]
) -> None:
    d = definition(app)
    assert detail["key"] == "drug_rehab" and detail["version"] == 1
    assert [s["key"] for s in detail["states"]] == list(d.states)
    assert [t["key"] for t in detail["transitions"]] == list(d.transitions)
    assert [a["key"] for a in detail["activities"]] == list(d.activities)
    assert [x["key"] for x in detail["deadlines"]] == list(d.deadlines)
    assert {t["code"] for t in detail["document_types"]} == set(d.document_types)
    assert {a["code"] for a in detail["agency_types"]} == set(d.agency_types)
    for t in detail["transitions"]:
        spec = d.transitions[t["key"]]
        assert (t["from"], t["to"], t["automatic"]) == (
            list(spec.sources),
            spec.dest,
            spec.automatic,
        )
        assert t["required_documents"] == [list(r.any_of) for r in spec.documents]
        assert t["allowed"] == [{"agency": p.agency, "roles": list(p.roles)} for p in spec.allowed]
    for a in detail["activities"]:
        assert a["states"] == list(d.activities[a["key"]].states)
    ctypes = {t["code"]: t for t in detail["document_types"]}
    assert ctypes["citizen_id_copy"]["max_size"] == 10 * 1024 * 1024
    assert "application/pdf" in ctypes["citizen_id_copy"]["media_types"]


def _actions(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return detail["transitions"] + detail["activities"]


def test_every_form_is_a_2020_12_schema_matching_the_field_spec(
    app: Flask, detail: dict[str, Any]
) -> None:
    d = definition(app)
    checked = 0
    for item in _actions(detail):
        action = d.transitions.get(item["key"]) or d.activities[item["key"]]
        form = item["form"]
        assert form["$schema"] == DRAFT_2020_12, item["key"]
        assert form["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(form)
        assert set(form["properties"]) == {f.name for f in action.fields}, item["key"]
        assert sorted(form["required"]) == sorted(f.name for f in action.fields if f.required)
        assert form["additionalProperties"] is False
        checked += 1
    assert checked == len(d.transitions) + len(d.activities)


def test_real_forms_validate_and_invalid_ones_do_not(app: Flask, detail: dict[str, Any]) -> None:
    """The published schema and the engine agree, on valid and on broken forms."""
    d = definition(app)
    today = FIXED_NOW.date()
    rng = random.Random(4)
    for item in _actions(detail):
        action = d.transitions.get(item["key"]) or d.activities[item["key"]]
        validator = jsonschema.Draft202012Validator(
            item["form"], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        for _ in range(5):
            data = fill_form(d, action, today, rng, COMMUNE)
            errors = [e.message for e in validator.iter_errors(data)]
            assert errors == [], (item["key"], data, errors)
            assert validate_form(d, action, data)[1] == {}, (item["key"], data)

        broken = [dict(data, unexpected_field="x")]  # never declared
        required = [f for f in action.fields if f.required]
        if required:
            broken.append({k: v for k, v in data.items() if k != required[0].name})
        for f in action.fields:
            if f.type == "enum":
                broken.append(dict(data, **{f.name: "not-a-choice"}))
            if f.type == "integer":
                broken.append(dict(data, **{f.name: "12"}))  # a string is not an integer
                item_schema = item["form"]["properties"][f.name]
                prop = item_schema.get("anyOf", [item_schema])[0]
                if "maximum" in prop:
                    broken.append(dict(data, **{f.name: prop["maximum"] + 1}))
            if f.type == "date":
                broken.append(dict(data, **{f.name: "02/06/2025"}))
            if f.type == "boolean":
                broken.append(dict(data, **{f.name: "maybe"}))
        for bad in broken:
            assert not validator.is_valid(bad), (item["key"], bad)
            assert validate_form(d, action, bad)[1] != {}, (item["key"], bad)


def test_a_published_form_is_what_the_api_accepts(users: ApiUsers, detail: dict[str, Any]) -> None:
    """End to end: a form valid under the published schema is accepted by the transition."""
    officer = users.officer()
    case_id = open_case(officer)
    item = next(t for t in detail["transitions"] if t["key"] == "request_determination")
    reason = item["form"]["properties"]["reason"]["enum"][0]
    data = {"request_date": "2025-06-02", "reason": reason}
    jsonschema.validate(data, item["form"], cls=jsonschema.Draft202012Validator)
    assert officer.upload(case_id, "determination_request", doc_bytes("r")).status_code == 201
    r = officer.fire(case_id, "request_determination", data)
    assert r.status_code == 200, r.get_json()


@pytest.mark.parametrize("empty", ["", "   "], ids=["empty", "blank"])
def test_schema_refuses_an_empty_required_text_like_the_engine(
    app: Flask, detail: dict[str, Any], empty: str
) -> None:
    """A required text field left empty: the engine refuses it (it strips strings and reads ""
    as missing), so the published schema must refuse it too, or forms generated from it let it
    through and the user only learns it from a 422."""
    d = definition(app)
    today = FIXED_NOW.date()
    drift = []
    for item in _actions(detail):
        action = d.transitions.get(item["key"]) or d.activities[item["key"]]
        validator = jsonschema.Draft202012Validator(item["form"])
        data = fill_form(d, action, today, random.Random(1), COMMUNE)
        for f in action.fields:
            if f.required and f.type in ("text", "string"):
                form = dict(data, **{f.name: empty})
                assert validate_form(d, action, form)[1], (item["key"], f.name)
                if validator.is_valid(form):
                    drift.append(f"{item['key']}.{f.name}")
    assert drift == [], f"the schema accepts {empty!r} where the engine refuses it: {drift}"
