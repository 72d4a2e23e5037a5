"""Schemathesis against /api/v1/openapi.json: no 5xx, responses as documented.

The schema is read at collection time from an app that never touches a database (in-memory
SQLite, INIT_DB=False); every request then goes, in-process, to the module's demo app (a
migrated SQLite file with demo cases). ``schemathesis.pytest.from_fixture`` is not used: with
pytest 9 it fails on ``request.node._nodeid``.

* ``test_openapi_document_is_valid``: the document itself is valid OpenAPI 3.1.
* ``test_api_conforms``: generated requests (positive and negative; examples, coverage and
  fuzzing phases; ``max_examples=25`` per operation, derandomized so CI is reproducible) with
  every built-in check except ``positive_data_acceptance``: a schema-valid request may rightly
  be refused with 422 for reasons no JSON Schema can state (a commune code that does not exist,
  a document type the definition does not know, a forged pagination cursor).
* ``test_known_good_requests``: requests that must succeed (real ids, a real commune, a real
  document type, a valid form), checked with the same checks and required to be 2xx, so that
  the success responses of the operations are validated too, not only their errors.
* ``test_edge_requests``: what the fuzzer once found by chance, checked on every run.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from tests.e2e.conftest import DemoApp
from workflow.demo import DEMO_COMMUNE
from workflow.simulate import fake_pdf, fill_form

_spec_app = create_app(
    {
        "INIT_DB": False,
        "REHABFLOW_ENV": {
            "DATABASE_URL": "sqlite://",
            "REHABFLOW_DATA_DIR": str(Path(tempfile.gettempdir()) / "rehabflow-spec-only"),
        },
    }
)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", _spec_app)
EXCLUDED_CHECKS = [positive_data_acceptance]
_token: dict[str, str] = {}
PLACEHOLDER = "rf_placeholder-until-the-demo-app-exists"  # noqa: S105 - not a secret


@schema.auth(refresh_interval=None)
class AdminBearer:
    """The demo administrator's token; schemathesis leaves it out (or breaks it) on purpose
    when it tests that the API refuses unauthenticated requests.

    Some cases (the coverage phase) are built while tests are collected, before the demo app
    and its token exist: they get a placeholder, swapped for the token by ``before_call``."""

    def get(self, case: Any, context: Any) -> str:
        return _token.get("value", PLACEHOLDER)

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.hook  # a global hook: the schema-level one does not exist for this event
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    placeholder = case.headers and case.headers.get("Authorization") == f"Bearer {PLACEHOLDER}"
    if placeholder and "value" in _token:
        case.headers["Authorization"] = f"Bearer {_token['value']}"


@schema.hook
def filter_query(context: Any, query: dict[str, Any] | None) -> bool:
    """Unknown query parameters are ignored by design (webargs), so a negative case whose only
    fault is an undeclared query parameter would be a false alarm: do not generate it."""
    declared = {p.name for p in context.operation.query}
    return not query or set(query) <= declared


def test_openapi_document_is_valid() -> None:
    """Valid OpenAPI 3.1 (an OpenAPI 2 ``in: formData`` parameter once slipped in), with the
    upload's form fields and file in one documented multipart body."""
    schema.validate()
    upload = schema.raw_schema["paths"]["/api/v1/cases/{case_id}/documents"]["post"]
    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    fields = schema.raw_schema["components"]["schemas"][name]
    assert set(fields["properties"]) == {"type", "file", "note"}
    assert set(fields["required"]) == {"type", "file"}
    default = schema.raw_schema["components"]["responses"]["DEFAULT_ERROR"]
    assert list(default["content"]) == ["application/problem+json"]


@pytest.fixture(scope="module")
def target(demo_app: DemoApp) -> Iterator[DemoApp]:
    _token["value"] = demo_app.token
    yield demo_app
    _token.clear()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms(case: schemathesis.Case, target: DemoApp) -> None:
    case.call_and_validate(app=target.app, excluded_checks=EXCLUDED_CHECKS)


class Client:
    """Builds schemathesis cases for known-good requests and validates their responses."""

    def __init__(self, target: DemoApp) -> None:
        self.target = target

    def __call__(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        case = schema[path][method].Case(**kwargs)
        response = case.call_and_validate(
            app=self.target.app, headers=self.target.auth, excluded_checks=EXCLUDED_CHECKS
        )
        assert response.status_code == expect, (method, path, kwargs, response.text[:500])
        return response


def test_known_good_requests(target: DemoApp) -> None:
    call = Client(target)
    page = call("GET", "/api/v1/cases", query={"limit": 7}).json()
    ids = [c["id"] for c in page["items"]]
    while page["next"]:
        cursor = parse_qs(urlsplit(page["next"]).query)["cursor"][0]
        page = call("GET", "/api/v1/cases", query={"limit": 7, "cursor": cursor}).json()
        ids += [c["id"] for c in page["items"]]
    assert len(ids) == len(set(ids)) >= 20
    call("GET", "/api/v1/cases", query={"overdue": "true", "q": "Nguyễn", "lang": "en"})

    documents: list[tuple[int, int]] = []
    movements: list[int] = []
    for case_id in ids:  # every demo state: deadlines, documents, available transitions
        case = call("GET", "/api/v1/cases/{case_id}", path_parameters={"case_id": case_id}).json()
        documents += [(case_id, d["id"]) for d in case["documents"] if not d["revoked"]]
        if "movement_report" in case["available_activities"]:
            movements.append(case_id)
        call("GET", "/api/v1/cases/{case_id}/audit", path_parameters={"case_id": case_id})
    assert documents
    case_id, doc_id = documents[0]
    call(
        "GET",
        "/api/v1/cases/{case_id}/documents/{doc_id}/content",
        path_parameters={"case_id": case_id, "doc_id": doc_id},
    )

    for d in call("GET", "/api/v1/definitions").json():
        call(
            "GET",
            "/api/v1/definitions/{key}/{version}",
            path_parameters={"key": d["key"], "version": d["version"]},
        )
    assert call("GET", "/api/v1/audit/verify").json()["ok"] is True
    call("GET", "/api/v1/access-log", query={"case": case_id, "limit": 5})

    registry = target.app.extensions["rehabflow"].registry
    definition = registry.get("drug_rehab", 1)
    today = datetime.now(UTC).date()
    assert movements, "no demo case where the commune police head may report movements"
    activity = definition.activities["movement_report"]
    recorded = call(
        "POST",
        "/api/v1/cases/{case_id}/activities/{activity_key}",
        path_parameters={"case_id": movements[0], "activity_key": "movement_report"},
        body={"data": fill_form(definition, activity, today, random.Random(3), DEMO_COMMUNE)},
        media_type="application/json",
    ).json()
    assert recorded["action"] == "activity:movement_report"

    # a new case through its first transition: open, attach, fire; then revoke a document
    opened = call(
        "POST",
        "/api/v1/cases",
        expect=201,
        body={
            "definition": "drug_rehab",
            "subject": {
                "full_name": "Trần Văn Kiểm",
                "unit_code": DEMO_COMMUNE,
                "date_of_birth": "1990-05-17",
                "sex": "male",
                "national_id": "040090000123",
                "address": "Xóm 2",
            },
        },
        media_type="application/json",
    ).json()
    new_id = opened["case_id"]
    case_path = {"case_id": new_id}
    doc = call(
        "POST",
        "/api/v1/cases/{case_id}/documents",
        expect=201,
        path_parameters=case_path,
        body={"type": "determination_request", "file": fake_pdf("e2e"), "note": "e2e"},
        media_type="multipart/form-data",
    ).json()
    assert doc["media_type"] == "application/pdf"
    form = fill_form(
        definition,
        definition.transitions["request_determination"],
        today,
        random.Random(4),
        DEMO_COMMUNE,
    )
    fired = call(
        "POST",
        "/api/v1/cases/{case_id}/transitions/{transition_key}",
        path_parameters={**case_path, "transition_key": "request_determination"},
        body={"data": form},
        media_type="application/json",
    ).json()
    assert fired["state"] == "addiction_determination"
    extra = call(
        "POST",
        "/api/v1/cases/{case_id}/documents",
        expect=201,
        path_parameters=case_path,
        body={"type": "determination_request", "file": fake_pdf("e2e-extra")},
        media_type="multipart/form-data",
    ).json()
    call(
        "POST",
        "/api/v1/cases/{case_id}/documents/{doc_id}/revoke",
        path_parameters={**case_path, "doc_id": extra["id"]},
        body={"reason": "nộp nhầm"},
        media_type="application/json",
    )


def test_edge_requests(target: DemoApp) -> None:
    """Regressions the fuzzer found once (by chance): now checked on every run."""
    call = Client(target)
    too_big = 2**63  # one more than the largest 64-bit id
    call("GET", "/api/v1/cases/{case_id}", expect=404, path_parameters={"case_id": too_big})
    call(
        "GET",
        "/api/v1/cases/{case_id}/documents/{doc_id}/content",
        expect=404,
        path_parameters={"case_id": 1, "doc_id": too_big},
    )
    call("GET", "/api/v1/access-log", expect=422, query={"case": too_big})
    # a transition or activity key that happens to be "documents" still takes JSON: the
    # answer is about the key (not available from the state: 409), not the content type
    for path, key in (
        ("/api/v1/cases/{case_id}/transitions/{transition_key}", "transition_key"),
        ("/api/v1/cases/{case_id}/activities/{activity_key}", "activity_key"),
    ):
        response = call(
            "POST",
            path,
            expect=409,
            path_parameters={"case_id": 1, key: "documents"},
            body={"data": {}},
            media_type="application/json",
        )
        assert response.headers["content-type"] == ["application/problem+json"]
    # a method a route does not have is 405 (with Allow), not a content-type complaint
    client = target.app.test_client()
    response = client.post("/api/v1/cases/1", json={}, headers=target.auth)
    assert response.status_code == 405, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert "GET" in response.headers["Allow"]
