"""/api/v1/cases over HTTP, on SQLite and PostgreSQL: create, read, list, transitions with
documents, optimistic concurrency, idempotency, audit trail, audit verification, access log."""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import select, text, update
from werkzeug.test import TestResponse

from workflow.model import (
    ActivityRecord,
    AuditEvent,
    Case,
    Deadline,
    Document,
    IdempotencyRecord,
    OutboxMessage,
    Subject,
)

from ..conftest import COMMUNE, PROVINCE
from .conftest import (
    FIXED_NOW,
    OTHER_COMMUNE,
    SUBJECT,
    ApiUsers,
    Caller,
    Clock,
    assert_problem,
    count_rows,
    definition,
    doc_bytes,
    error_fields,
    open_case,
)

TABLES = (Case, Subject, AuditEvent, OutboxMessage, Deadline, Document, ActivityRecord)
TABLES += (IdempotencyRecord,)
TODAY = "2025-06-02"
DETERMINATION = {"request_date": TODAY, "reason": "own_request"}


def case_row(app: Flask, case_id: int) -> tuple[Any, ...]:
    with app.extensions["rehabflow"].session_factory() as s:
        c = s.get(Case, case_id)
        return (c.state, c.group, c.version, c.updated_at, c.state_entered_at, dict(c.fields))


def audit_actions(app: Flask, case_id: int) -> list[str]:
    with app.extensions["rehabflow"].session_factory() as s:
        q = select(AuditEvent.action).where(AuditEvent.case_id == case_id)
        return list(s.execute(q.order_by(AuditEvent.seq)).scalars())


def determination_case(officer: Caller) -> int:
    """A case in ``detected`` with the document request_determination needs."""
    case_id = open_case(officer)
    r = officer.upload(case_id, "determination_request", doc_bytes("determination_request"))
    assert r.status_code == 201, r.get_json()
    return case_id


def version_of(caller: Caller, case_id: int) -> int:
    r = caller.get(f"/api/v1/cases/{case_id}")
    assert r.status_code == 200
    return r.get_json()["version"]


# ----------------------------------------------------------------------------- create / read
def test_create_returns_201_location_and_etag(users: ApiUsers) -> None:
    officer = users.officer()
    r = officer.post("/api/v1/cases", {"subject": SUBJECT})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["state"] == "detected" and body["action"] == "case.opened"
    assert body["from_state"] is None
    case_id, version = body["case_id"], body["version"]
    assert isinstance(version, int)
    assert r.headers["ETag"] == f'"{version}"'
    assert urlsplit(r.headers["Location"]).path == f"/api/v1/cases/{case_id}"
    assert re.fullmatch(rf"{COMMUNE}-2025-0*{case_id}", body["number"])

    got = officer.get(r.headers["Location"])
    assert got.status_code == 200
    assert got.headers["ETag"] == f'"{version}"'
    case = got.get_json()
    assert (case["id"], case["number"], case["version"]) == (case_id, body["number"], version)
    # the version defaults to the newest in force on the (injected) date: 02/06/2025 falls
    # under drug_rehab@2 (in force from 01/03/2025)
    assert case["definition"] == {"key": "drug_rehab", "version": 2}
    assert case["opened_at"] == FIXED_NOW.isoformat()


def test_subject_validation_errors_name_the_fields_and_write_nothing(
    app: Flask, users: ApiUsers
) -> None:
    officer = users.officer()
    before = count_rows(app, *TABLES)

    # rules of the service (the schema accepts the shapes)
    bad = {
        "full_name": "   ",
        "unit_code": "99999",
        "date_of_birth": "2999-01-01",
        "national_id": "12345",
    }
    body = assert_problem(officer.post("/api/v1/cases", {"subject": bad}), 422)
    names = {f.removeprefix("subject.") for f in error_fields(body["errors"])}
    assert names == {"full_name", "unit_code", "date_of_birth", "national_id"}, body["errors"]

    # rules of the request schema
    bad = {"full_name": "", "unit_code": COMMUNE, "sex": "x", "date_of_birth": "14/05/1990"}
    body = assert_problem(officer.post("/api/v1/cases", {"subject": bad}), 422)
    names = {f.removeprefix("subject.") for f in error_fields(body["errors"])}
    assert names == {"full_name", "sex", "date_of_birth"}, body["errors"]

    body = assert_problem(officer.post("/api/v1/cases", {"definition": "drug_rehab"}), 422)
    assert error_fields(body["errors"]) == {"subject"}

    assert count_rows(app, *TABLES) == before


def test_get_case_shape(app: Flask, users: ApiUsers) -> None:
    officer = users.officer()
    d = definition(app)
    case_id = determination_case(officer)
    r = officer.fire(case_id, "request_determination", DETERMINATION)
    assert r.status_code == 200, r.get_json()

    got = officer.get(f"/api/v1/cases/{case_id}")
    assert got.status_code == 200
    case = got.get_json()
    assert case["state"] == "addiction_determination"
    assert case["group"] == "determination"
    assert got.headers["ETag"] == f'"{case["version"]}"'
    assert case["definition"] == {"key": "drug_rehab", "version": 1}
    assert case["subject"]["full_name"] == SUBJECT["full_name"]
    assert case["subject"]["national_id"] == SUBJECT["national_id"]

    # the determination deadline: 5 days from the request (Sat 7 June) -> next working day
    (deadline,) = case["deadlines"]
    assert deadline["key"] == "determination"
    assert deadline["due_on"] == "2025-06-09"
    assert deadline["overdue"] is False
    assert isinstance(deadline["working_days_left"], int)
    assert deadline["label"]

    (doc,) = case["documents"]
    assert doc["type"] == "determination_request"
    assert doc["media_type"] == "application/pdf"
    assert re.fullmatch(r"[0-9a-f]{64}", doc["sha256"])
    assert doc["size"] == len(doc_bytes("determination_request"))
    assert doc["revoked"] is False

    # what this officer may do next, and what each still lacks
    expected = {
        t.key
        for t in d.transitions_from("addiction_determination")
        if not t.automatic and t.permits("commune_police", "officer")
    }
    assert expected == {"record_addiction_result", "record_not_addicted"}
    offered = {a["key"]: a for a in case["available_transitions"]}
    assert set(offered) == expected
    for a in offered.values():
        assert a["missing_documents"] == ["addiction_result"]
        assert a["ready"] is False
        assert a["to"] == d.transitions[a["key"]].dest

    # another agency sees its own options: the commune chairman may close, guard judged on submit
    head = users.get("commune_pc", "head")
    offered = {
        a["key"]: a
        for a in head.get(f"/api/v1/cases/{case_id}").get_json()["available_transitions"]
    }
    assert set(offered) == {"close_case"}
    assert offered["close_case"]["missing_documents"] == []
    assert offered["close_case"]["form_guards"] == ["note_for_other"]
    assert offered["close_case"]["ready"] is True


# ----------------------------------------------------------------------------- list
def ids(resp: TestResponse) -> list[int]:
    assert resp.status_code == 200, resp.get_json()
    return [c["id"] for c in resp.get_json()["items"]]


def test_list_filters(users: ApiUsers, clock: Clock) -> None:
    officer = users.officer()
    a = open_case(officer)  # Trần Văn Bình, 040094001234
    b = open_case(officer, full_name="Nguyễn Thị Lan", national_id="040195002345", sex="female")
    c = open_case(officer, full_name="Lê Văn Nam", national_id=None)
    other = users.officer(OTHER_COMMUNE)
    d = open_case(other, full_name="Trần Thị Bình", unit_code=OTHER_COMMUNE, national_id=None)
    r = officer.upload(b, "determination_request", doc_bytes("determination_request"))
    assert r.status_code == 201
    assert officer.fire(b, "request_determination", DETERMINATION).status_code == 200
    number_b = officer.get(f"/api/v1/cases/{b}").get_json()["number"]

    def q(caller: Caller = officer, **params: Any) -> list[int]:
        return ids(caller.get("/api/v1/cases", query_string=params))

    assert q() == [c, b, a]  # newest first; the other commune's case is not there
    assert q(state="addiction_determination") == [b]
    assert q(state="detected") == [c, a]
    assert q(group="determination") == [b]
    assert q(group="other") == [c, a]
    # names, folded: case and diacritics do not matter
    assert q(q="tran van binh") == [a]
    assert q(q="TRẦN VĂN") == [a]
    assert q(q="bình") == [a]
    assert q(q="nguyen thi") == [b]
    assert q(q="Lê") == [c]
    # case number
    assert q(q=number_b) == [b]
    # national ID: exact match only
    assert q(q="040094001234") == [a]
    assert q(q="040195002345") == [b]
    for partial in ("04009400123", "040094001", "0400940012", "001234", "4009400123"):
        assert q(q=partial) == [], partial
    # overdue: none today; the determination deadline (9 June) is overdue from 10 June
    assert q(overdue="true") == []
    clock.advance(days=8)  # Tuesday 10 June
    assert q(overdue="true") == [b]
    assert q(overdue="false") == [c, b, a]
    # unit: an agency covering the whole province sees the cases of both communes routed to
    # it (police work: every one of these) and can narrow to one commune
    police = users.get("commune_police", "head", PROVINCE)
    assert q(police) == [d, c, b, a]
    assert q(police, unit=COMMUNE) == [c, b, a]
    assert q(police, unit=OTHER_COMMUNE) == [d]
    assert q(police, unit=PROVINCE) == [d, c, b, a]
    assert q(police, q="bình") == [d, a]
    # the unit filter never widens one's jurisdiction
    assert q(unit=OTHER_COMMUNE) == []
    assert q(other) == [d]


def walk(caller: Caller, url: str) -> list[list[int]]:
    pages: list[list[int]] = []
    while url:
        r = caller.get(url)
        pages.append(ids(r))
        url = r.get_json()["next"]
        assert len(pages) < 50, "the pagination does not end"
    return pages


def test_keyset_pagination(users: ApiUsers) -> None:
    officer = users.officer()
    made = [open_case(officer, full_name=f"Người Số {i}") for i in range(7)]
    pages = walk(officer, "/api/v1/cases?limit=3")
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat))
    assert flat == sorted(made, reverse=True)
    assert walk(officer, "/api/v1/cases?limit=3") == pages  # stable

    # the next link keeps the filters
    first = officer.get("/api/v1/cases", query_string={"limit": 2, "q": "nguoi so"})
    nxt = first.get_json()["next"]
    query = parse_qs(urlsplit(nxt).query)
    assert query["q"] == ["nguoi so"] and query["limit"] == ["2"] and query["cursor"]

    # a case created while paging neither shows up later nor shifts the pages (keyset)
    r = officer.get("/api/v1/cases?limit=3")
    seen = ids(r)
    late = open_case(officer)
    rest = [i for p in walk(officer, r.get_json()["next"]) for i in p]
    assert late not in rest
    assert seen + rest == flat

    # limits
    for bad in ("201", "0", "-1", "abc"):
        body = assert_problem(officer.get(f"/api/v1/cases?limit={bad}"), 422)
        assert "limit" in error_fields(body["errors"]), body
    assert ids(officer.get("/api/v1/cases?limit=200"))[:1] == [late]
    body = assert_problem(officer.get("/api/v1/cases?cursor=not-a-cursor!"), 422)
    assert "cursor" in error_fields(body["errors"])


# ----------------------------------------------------------------------------- transitions
def test_missing_documents_422_names_exactly_the_missing_codes(app: Flask, users: ApiUsers) -> None:
    officer = users.officer()
    head = users.get("commune_pc", "head")
    case_id = open_case(officer)
    form = {"decision_date": TODAY}
    before = (count_rows(app, *TABLES), case_row(app, case_id), audit_actions(app, case_id))

    body = assert_problem(head.fire(case_id, "start_illegal_use_management", form), 422)
    assert body["type"].endswith("/missing_documents")
    assert body["missing_documents"] == ["positive_test_result", "management_decision"]
    assert (count_rows(app, *TABLES), case_row(app, case_id), audit_actions(app, case_id)) == before

    assert officer.upload(case_id, "positive_test_result", doc_bytes("x")).status_code == 201
    before = (count_rows(app, *TABLES), case_row(app, case_id), audit_actions(app, case_id))
    body = assert_problem(head.fire(case_id, "start_illegal_use_management", form), 422)
    assert body["missing_documents"] == ["management_decision"]
    assert (count_rows(app, *TABLES), case_row(app, case_id), audit_actions(app, case_id)) == before

    assert officer.upload(case_id, "management_decision", doc_bytes("y")).status_code == 201
    r = head.fire(case_id, "start_illegal_use_management", form)
    assert r.status_code == 200, r.get_json()
    assert count_rows(app, OutboxMessage)["outbox"] > before[0]["outbox"]


def test_missing_alternative_documents_are_listed_as_alternatives(users: ApiUsers) -> None:
    officer = users.officer()
    case_id = determination_case(officer)
    assert officer.fire(case_id, "request_determination", DETERMINATION).status_code == 200
    assert (
        officer.upload(case_id, "addiction_result", doc_bytes("addiction_result")).status_code
        == 201
    )
    r = officer.fire(case_id, "record_addiction_result", {"result_date": TODAY})
    assert r.status_code == 200, r.get_json()
    pc = users.get("commune_pc", "officer")
    form = {"registration_date": TODAY, "registered_by": "self"}
    body = assert_problem(pc.fire(case_id, "register_voluntary_home", form), 422)
    assert body["missing_documents"] == [
        "voluntary_registration_form",
        ["citizen_id_copy", "passport_copy", "birth_certificate"],
    ]
    # one of the alternatives is enough
    assert officer.upload(case_id, "passport_copy", doc_bytes("passport")).status_code == 201
    body = assert_problem(pc.fire(case_id, "register_voluntary_home", form), 422)
    assert body["missing_documents"] == ["voluntary_registration_form"]


def test_if_match_stale_412(app: Flask, users: ApiUsers) -> None:
    officer = users.officer()
    case_id = determination_case(officer)
    got = officer.get(f"/api/v1/cases/{case_id}")
    version = got.get_json()["version"]
    assert got.headers["ETag"] == f'"{version}"'
    before = (count_rows(app, *TABLES), case_row(app, case_id))

    stale = {"If-Match": f'"{version - 1}"'}
    body = assert_problem(
        officer.fire(case_id, "request_determination", DETERMINATION, headers=stale), 412
    )
    assert body["current_version"] == version
    assert (count_rows(app, *TABLES), case_row(app, case_id)) == before

    body = assert_problem(
        officer.fire(case_id, "request_determination", DETERMINATION, headers={"If-Match": "x"}),
        422,
    )
    assert "If-Match" in body["errors"]

    r = officer.fire(
        case_id, "request_determination", DETERMINATION, headers={"If-Match": f'W/"{version}"'}
    )
    assert r.status_code == 200, r.get_json()
    assert r.headers["ETag"] == f'"{r.get_json()["version"]}"' != f'"{version}"'

    # the ETag read before the transition is now stale for the next command
    head = users.get("commune_pc", "head")
    close = {"close_date": TODAY, "reason": "moved_away"}
    assert_problem(
        head.fire(case_id, "close_case", close, headers={"If-Match": f'"{version}"'}), 412
    )


def race(*calls: Any) -> list[TestResponse]:
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - reported below
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a request hangs"
    for o in out:
        if isinstance(o, BaseException):
            raise o
    return out


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_requests_with_the_same_if_match(
    app: Flask, users: ApiUsers, round_: int
) -> None:
    officer, chief = users.officer(), users.get("commune_police", "head")
    case_id = determination_case(officer)
    version = version_of(officer, case_id)
    match = {"If-Match": f'"{version}"'}
    # each caller has its own test client
    responses = race(
        lambda: officer.fire(case_id, "request_determination", DETERMINATION, headers=match),
        lambda: chief.fire(case_id, "request_determination", DETERMINATION, headers=match),
    )
    codes = sorted(r.status_code for r in responses)
    assert codes[0] == 200 and codes[1] in (409, 412), [r.get_json() for r in responses]
    loser = next(r for r in responses if r.status_code != 200)
    assert_problem(loser, loser.status_code)
    assert audit_actions(app, case_id).count("transition:request_determination") == 1
    assert version_of(officer, case_id) == version + 1


def test_idempotent_retry(app: Flask, users: ApiUsers) -> None:
    officer = users.officer()
    case_id = determination_case(officer)
    key = {"Idempotency-Key": "f2b6c1de-retry-1"}
    first = officer.fire(case_id, "request_determination", DETERMINATION, headers=key)
    assert first.status_code == 200, first.get_json()
    rows = count_rows(app, *TABLES)
    again = officer.fire(case_id, "request_determination", DETERMINATION, headers=key)
    assert again.status_code == first.status_code
    assert again.get_json() == first.get_json()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert count_rows(app, *TABLES) == rows
    assert audit_actions(app, case_id).count("transition:request_determination") == 1

    # the same key with another body
    other = dict(DETERMINATION, reason="other")
    body = assert_problem(officer.fire(case_id, "request_determination", other, headers=key), 422)
    assert body["type"].endswith("/idempotency_conflict")
    assert count_rows(app, *TABLES) == rows

    # keys belong to their user: another user's same key is a new request
    chief = users.get("commune_police", "head")
    assert_problem(chief.fire(case_id, "request_determination", DETERMINATION, headers=key), 409)


def test_idempotent_case_creation(app: Flask, users: ApiUsers) -> None:
    officer = users.officer()
    key = {"Idempotency-Key": "open-once"}
    first = officer.post("/api/v1/cases", {"subject": SUBJECT}, headers=key)
    again = officer.post("/api/v1/cases", {"subject": SUBJECT}, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.get_json() == again.get_json()
    assert first.headers["Location"] == again.headers["Location"]
    assert count_rows(app, Case)["cases"] == 1
    changed = {"subject": SUBJECT | {"full_name": "Trần Văn Khác"}}
    assert_problem(officer.post("/api/v1/cases", changed, headers=key), 422)
    assert count_rows(app, Case)["cases"] == 1


def test_transition_not_available_from_the_state_409(app: Flask, users: ApiUsers) -> None:
    officer = users.officer()
    d = definition(app)
    case_id = open_case(officer)
    before = (count_rows(app, *TABLES), case_row(app, case_id))
    # the officer may record results, but not while the case is only detected
    body = assert_problem(
        officer.fire(case_id, "record_addiction_result", {"result_date": TODAY}), 409
    )
    assert body["type"].endswith("/transition_not_available")
    assert body["state"] == "detected"
    assert body["allowed"] == [t.key for t in d.transitions_from("detected")]
    assert set(body["allowed"]) == {
        "start_illegal_use_management",
        "request_determination",
        "close_case",
    }
    assert (count_rows(app, *TABLES), case_row(app, case_id)) == before


def test_unknown_transition_or_activity_is_409(users: ApiUsers) -> None:
    """Documented behaviour: an unknown key is reported like a transition not available
    from the current state (409, with the allowed ones), not as 404."""
    officer = users.officer()
    case_id = open_case(officer)
    body = assert_problem(officer.fire(case_id, "no_such_transition", {}), 409)
    assert body["type"].endswith("/transition_not_available")
    assert "request_determination" in body["allowed"]
    body = assert_problem(officer.activity(case_id, "no_such_activity", {}), 409)
    assert body["type"].endswith("/transition_not_available")


# ----------------------------------------------------------------------------- audit
def test_case_audit_shape(users: ApiUsers) -> None:
    officer = users.officer()
    case_id = determination_case(officer)
    assert officer.fire(case_id, "request_determination", DETERMINATION).status_code == 200
    r = officer.get(f"/api/v1/cases/{case_id}/audit")
    assert r.status_code == 200
    events = r.get_json()
    assert [e["action"] for e in events] == [
        "case.opened",
        "document.attached",
        "transition:request_determination",
    ]
    keys = {"seq", "at", "actor", "agency", "action", "from_state", "to_state", "hash"}
    for e in events:
        assert keys | {"prev_hash"} <= set(e), e
        assert re.fullmatch(r"[0-9a-f]{64}", e["hash"])
        assert datetime.fromisoformat(e["at"]) == FIXED_NOW
        assert (e["actor"], e["agency"]) == (officer.username, "commune_police")
    assert [e["seq"] for e in events] == [1, 2, 3]  # a fresh database: one chain, this case
    assert events[0]["prev_hash"] == "0" * 64
    for prev, e in zip(events, events[1:]):
        assert e["prev_hash"] == prev["hash"]
    assert (events[0]["from_state"], events[0]["to_state"]) == (None, "detected")
    assert (events[2]["from_state"], events[2]["to_state"]) == (
        "detected",
        "addiction_determination",
    )


def test_audit_verify_needs_admin_and_detects_tampering(app: Flask, users: ApiUsers) -> None:
    officer = users.officer()
    case_id = determination_case(officer)
    assert officer.fire(case_id, "request_determination", DETERMINATION).status_code == 200
    assert_problem(officer.get("/api/v1/audit/verify"), 403, "not_permitted")
    assert_problem(users.get("commune_pc", "head").get("/api/v1/audit/verify"), 403)

    admin = users.admin()
    r = admin.get("/api/v1/audit/verify")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["ok"] is True
    assert r.get_json()["first_bad_event"] is None

    with app.extensions["rehabflow"].session_factory() as s:
        if s.get_bind().dialect.name == "postgresql":
            # the append-only trigger refuses edits; a superuser can bypass it (an attacker)
            s.execute(text("SET LOCAL session_replication_role = replica"))
        s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="someone.else"))
        s.commit()
    r = admin.get("/api/v1/audit/verify")
    assert r.status_code == 200
    assert (r.get_json()["ok"], r.get_json()["first_bad_event"]) == (False, 2)


def test_access_log_lists_case_and_document_reads(users: ApiUsers) -> None:
    officer = users.officer()
    reader = users.get("commune_police", "head")
    case_id = open_case(officer)
    other_case = open_case(officer)
    up = officer.upload(case_id, "citizen_id_copy", doc_bytes("cccd")).get_json()
    assert reader.get(f"/api/v1/cases/{case_id}").status_code == 200
    assert reader.get(f"/api/v1/cases/{case_id}/documents/{up['id']}/content").status_code == 200
    assert officer.get(f"/api/v1/cases/{other_case}").status_code == 200

    assert_problem(reader.get(f"/api/v1/access-log?case={case_id}"), 403)
    r = users.admin().get(f"/api/v1/access-log?case={case_id}")
    assert r.status_code == 200, r.get_json()
    entries = r.get_json()
    got = {(e["user_id"], e["case_id"], e["document_id"], e["action"]) for e in entries}
    assert got == {
        (reader.user_id, case_id, None, "case.read"),
        (reader.user_id, case_id, up["id"], "document.read"),
    }
    assert {datetime.fromisoformat(e["at"]) for e in entries} == {FIXED_NOW}
    every = users.admin().get("/api/v1/access-log").get_json()
    assert {e["case_id"] for e in every} == {case_id, other_case}
    assert {e["action"] for e in every} == {"case.read", "document.read"}
    # listing cases or reading the audit trail is not a read of personal data... but opening
    # the case is, for any reader: the admin's own reads show up too
    users.admin().get(f"/api/v1/cases/{case_id}")
    r = users.admin().get(f"/api/v1/access-log?case={case_id}")
    assert users.admin().user_id in {e["user_id"] for e in r.get_json()}


def test_no_personal_data_in_application_logs(
    users: ApiUsers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    officer = users.officer()
    case_id = determination_case(officer)
    officer.get(f"/api/v1/cases/{case_id}")
    officer.get("/api/v1/cases", query_string={"q": SUBJECT["full_name"]})
    officer.get("/api/v1/cases", query_string={"q": SUBJECT["national_id"]})
    officer.fire(case_id, "request_determination", DETERMINATION)
    officer.post("/api/v1/cases", {"subject": SUBJECT | {"unit_code": "99999"}})
    text = caplog.text
    for secret in (SUBJECT["full_name"], SUBJECT["national_id"], "tran van binh", officer.token):
        assert secret not in text


def test_personal_data_only_for_the_agencies_of_the_definition(users: ApiUsers) -> None:
    officer = users.officer()
    case_id = open_case(officer)
    assert officer.get(f"/api/v1/cases/{case_id}").get_json()["subject"]["full_name"]
    mentor = users.get("mentor", "member")
    body = mentor.get(f"/api/v1/cases/{case_id}").get_json()
    assert body["subject"] is None and body["id"] == case_id
    listed = mentor.get("/api/v1/cases").get_json()["items"]
    assert [(c["id"], c["full_name"]) for c in listed] == [(case_id, None)]
    assert officer.get("/api/v1/cases").get_json()["items"][0]["full_name"]
