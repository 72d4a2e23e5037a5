"""Admin API for migrating running cases, and transfers of cases between communes over HTTP."""

from __future__ import annotations

from flask import Flask

from workflow.migration import run_queued

from ..conftest import COMMUNE, OTHER_COMMUNE
from .conftest import (
    ApiUsers,
    Clock,
    assert_problem,
    attach_required,
    definition,
    error_fields,
    fire_valid,
    open_case,
)


def test_dry_run_queue_and_worker_moves_the_cases(
    app: Flask, users: ApiUsers, clock: Clock
) -> None:
    officer, admin = users.officer(), users.admin()
    ids = [open_case(officer) for _ in range(2)]
    body = {"from": "drug_rehab@1", "to": "drug_rehab@3", "where": {"state": ["detected"]}}

    dry = admin.post("/api/v1/migrations", body)
    assert dry.status_code == 200, dry.get_json()
    report = dry.get_json()
    assert (report["from"], report["to"], report["cases"], report["movable"]) == (
        "drug_rehab@1",
        "drug_rehab@3",
        2,
        2,
    )
    assert report["states"] == [
        {"from_state": "detected", "to_state": "detected", "cases": 2, "reason": None}
    ]
    for cid in ids:  # a dry run changes nothing
        assert officer.get(f"/api/v1/cases/{cid}").get_json()["definition"]["version"] == 1

    queued = admin.post("/api/v1/migrations", body | {"dry_run": False})
    assert queued.status_code == 202, queued.get_json()
    run = queued.get_json()
    assert run["status"] == "queued" and run["where"] == {"state": ["detected"]}
    location = queued.headers["Location"]
    assert location.endswith(f"/api/v1/migrations/{run['id']}")

    # the worker's tick does the work, as the administrator who asked
    services = app.extensions["rehabflow"]
    assert run_queued(services.cases, clock) == 2
    done = admin.get(location).get_json()
    assert (done["status"], done["moved"], done["skipped"]) == ("finished", 2, 0)
    for cid in ids:
        case = officer.get(f"/api/v1/cases/{cid}").get_json()
        assert case["definition"] == {"key": "drug_rehab", "version": 3}
        audit = officer.get(f"/api/v1/cases/{cid}/audit").get_json()
        last = audit[-1]
        assert (last["action"], last["actor"], last["definition"]) == (
            "migration",
            admin.username,
            "drug_rehab@3",
        )
        assert last["extra"]["migration"]["from"] == "drug_rehab@1"
    assert [r["id"] for r in admin.get("/api/v1/migrations").get_json()] == [run["id"]]
    # nothing left: a second queued run is refused, saying why
    again = admin.post("/api/v1/migrations", body | {"dry_run": False})
    assert assert_problem(again, 422)["errors"]["where"] == ["matches no case"]


def test_only_administrators(users: ApiUsers) -> None:
    body = {"from": "drug_rehab@1", "to": "drug_rehab@3"}
    assert_problem(users.officer().post("/api/v1/migrations", body), 403)
    assert_problem(users.officer().get("/api/v1/migrations"), 403)


def test_bad_requests_name_the_field(users: ApiUsers) -> None:
    admin = users.admin()
    bad = admin.post("/api/v1/migrations", {"from": "drug_rehab", "to": "drug_rehab@3"})
    assert error_fields(assert_problem(bad, 422)["errors"]) == {"from"}
    where = admin.post(
        "/api/v1/migrations",
        {"from": "drug_rehab@1", "to": "drug_rehab@3", "where": {"colour": ["red"]}},
    )
    assert error_fields(assert_problem(where, 422)["errors"]) == {"where.colour"}
    # v1 declares no plan from v3: there is no way back
    back = admin.post("/api/v1/migrations", {"from": "drug_rehab@3", "to": "drug_rehab@1"})
    assert_problem(back, 404, "unknown_definition")
    assert_problem(admin.get("/api/v1/migrations/999"), 404)


def test_transfer_over_http_switches_jurisdiction(users: ApiUsers, clock: Clock) -> None:
    old, new = users.officer(COMMUNE), users.officer(OTHER_COMMUNE)
    cid = open_case(old)
    start = definition(old.app).transitions["start_illegal_use_management"]
    attach_required(old, cid, start)
    r = fire_valid(users.get("commune_pc", "head"), cid, start, clock.today)
    assert r.status_code == 200, r.get_json()
    today = clock.today.isoformat()
    r = old.activity(cid, "change_residence", {"moved_date": today, "new_unit": OTHER_COMMUNE})
    assert r.status_code == 200, r.get_json()
    # the receiving commune has the case; the sending one gets 404 for it and for new actions
    assert new.get(f"/api/v1/cases/{cid}").get_json()["unit_code"] == OTHER_COMMUNE
    assert_problem(old.get(f"/api/v1/cases/{cid}"), 404)
    assert_problem(
        old.activity(cid, "movement_report", {"report_date": today, "movement": "x"}), 404
    )
    # ... but keeps its history, up to the hand-over
    history = old.get(f"/api/v1/cases/{cid}/audit")
    assert history.status_code == 200
    events = history.get_json()
    assert events[-1]["action"] == "activity:change_residence"
    assert events[-1]["extra"]["transfer"] == {
        "from_unit": COMMUNE,
        "from_province": "40",
        "to_unit": OTHER_COMMUNE,
        "to_province": "40",
    }
    r = new.activity(cid, "movement_report", {"report_date": today, "movement": "đã đến"})
    assert r.status_code == 200, r.get_json()
    assert len(new.get(f"/api/v1/cases/{cid}/audit").get_json()) == len(events) + 1
    assert len(old.get(f"/api/v1/cases/{cid}/audit").get_json()) == len(events)
