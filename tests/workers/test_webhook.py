"""Webhooks to a local HTTP server started by the test: a signed JSON body the receiver can
verify (and a wrong secret, a tampered body or an old timestamp cannot pass); a 500 is retried
with backoff; after the last attempt the delivery is dead-lettered, listed by
``rehabflow outbox status`` and ``GET /api/v1/deliveries``, and ``outbox retry --dead`` sends it
again once the receiver is back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

import api.cli  # noqa: F401 - registers the worker commands on workflow.cli.main
from workers.channels.webhook import verify
from workers.relay import relay, requeue
from workers.tasks import inline_enqueue
from workflow.bootstrap import Services
from workflow.cli import main

from ..conftest import COMMUNE
from .helpers import (
    DAY,
    PERSONAL,
    Hook,
    add_agency,
    at,
    deliveries,
    delivery,
    open_and_request,
    outbox,
    start_hook,
)

SECRET = "s3cr3t-of-the-health-facility"  # noqa: S105


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    stop = start_hook(receiver)
    try:
        yield receiver
    finally:
        stop()


def webhook_agency(services: Services, hook: Hook) -> int:
    return add_agency(
        services,
        "health_facility",
        code="tyt-do-luong",
        webhook_url=hook.url,
        webhook_secret=SECRET,
    )


def relay_and_deliver(services: Services, now: datetime) -> int:
    enqueue = inline_enqueue(services, now)
    n = relay(services, enqueue, now)
    enqueue.flush()
    return n


def retry_due(services: Services, now: datetime) -> int:
    enqueue = inline_enqueue(services, now)
    n = requeue(services, enqueue, now)
    enqueue.flush()
    return n


def test_signed_json_body_verifies(services: Services, actors, hook: Hook) -> None:  # noqa: ANN001
    add_agency(services, "health_facility", webhook_url=hook.url)  # no secret: not sent
    add_agency(services, "court", webhook_url=hook.url, webhook_secret="x")  # not notified
    agency_id = webhook_agency(services, hook)
    cid = open_and_request(services, actors)
    [msg] = outbox(services)
    before = time.time()
    assert relay_and_deliver(services, at(DAY, 10)) == 1
    [hooked] = deliveries(services, "webhook")
    assert (hooked.agency_id, hooked.status, hooked.attempts) == (agency_id, "delivered", 1)

    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-Rehabflow-Id"] == msg.id
    payload = json.loads(body.decode("utf-8"))
    assert payload["id"] == msg.id and payload["topic"] == "request_determination"
    assert payload["agency"] == "tyt-do-luong"
    assert payload["case_id"] == cid and payload["case_number"] == msg.payload["case_number"]
    assert (payload["from_state"], payload["to_state"]) == ("detected", "addiction_determination")
    for secret in PERSONAL:
        assert secret.encode() not in body and secret not in json.dumps(payload)

    ts, sig = headers["X-Rehabflow-Timestamp"], headers["X-Rehabflow-Signature"]
    assert before - 1 <= int(ts) <= time.time() + 1  # the real sending time
    assert sig.startswith("sha256=")
    assert verify(SECRET, ts, body, sig)
    assert not verify("another-secret", ts, body, sig)
    assert not verify(SECRET, ts, body.replace(b"detected", b"closed"), sig)
    assert not verify(SECRET, str(int(ts) + 1), body, sig)  # the timestamp is signed
    assert not verify(SECRET, ts, body, "sha256=" + "0" * 64)
    assert not verify(SECRET, "yesterday", body, sig)
    # a captured request replayed later is refused; a little clock skew is tolerated
    assert verify(SECRET, ts, body, sig, now=int(ts) + 299)
    assert verify(SECRET, ts, body, sig, now=int(ts) - 299)
    assert not verify(SECRET, ts, body, sig, now=int(ts) + 301)
    assert not verify(SECRET, ts, body, sig, now=int(ts) + 86400)
    assert not verify(SECRET, ts, body, sig, now=int(ts) + 61, tolerance=60)


def test_500_is_retried_until_the_receiver_recovers(services: Services, actors, hook: Hook) -> None:  # noqa: ANN001
    webhook_agency(services, hook)
    open_and_request(services, actors)
    hook.statuses = [500]
    t0 = at(DAY, 10)
    relay_and_deliver(services, t0)
    [d] = deliveries(services, "webhook")
    assert (d.status, d.attempts, d.last_error) == ("retry", 1, "WebhookFailed: HTTP 500")
    assert t0 + timedelta(seconds=15) <= d.next_attempt_at <= t0 + timedelta(seconds=30)

    assert retry_due(services, t0 + timedelta(seconds=14)) == 0  # backoff not over
    assert len(hook.requests) == 1
    t1 = d.next_attempt_at + timedelta(seconds=1)
    assert retry_due(services, t1) == 1
    d = delivery(services, d.id)
    assert (d.status, d.attempts, d.delivered_at, d.last_error) == ("delivered", 2, t1, None)
    assert len(hook.requests) == 2
    # the same message id both times: the receiver can drop a duplicate
    assert {h["X-Rehabflow-Id"] for h, _ in hook.requests} == {outbox(services)[0].id}
    assert retry_due(services, t1 + timedelta(days=1)) == 0
    assert len(hook.requests) == 2


@contextmanager
def admin_api(services: Services) -> Iterator[Callable[[str], tuple[list, int]]]:  # noqa: ANN001
    """``get(status)``: GET /api/v1/deliveries?status=... as an administrator (the list), and
    the status code the same request gets for a user who is not one."""
    from api import create_app

    env = {
        "REHABFLOW_DATA_DIR": str(services.settings.data_dir),
        "DATABASE_URL": services.settings.database_url,
    }
    config = {"REHABFLOW_ENV": env, "INIT_DB": False, "TESTING": True}
    app = create_app(config)  # the definitions are shared (see conftest.worker_env)
    try:
        accounts = app.extensions["rehabflow.accounts"]
        now = datetime.now(UTC)
        tokens = {}
        for name, admin in (("hook.admin", True), ("hook.user", False)):
            accounts.create_user(name, "commune_pc", "head", COMMUNE, now, is_admin=admin)
            tokens[name] = accounts.create_token(name, now).token
        client = app.test_client()

        def get(status: str) -> tuple[list, int]:
            url = f"/api/v1/deliveries?status={status}"
            ok = client.get(url, headers={"Authorization": f"Bearer {tokens['hook.admin']}"})
            assert ok.status_code == 200, ok.get_data(as_text=True)
            refused = client.get(url, headers={"Authorization": f"Bearer {tokens['hook.user']}"})
            return ok.get_json(), refused.status_code

        yield get
    finally:
        app.extensions["rehabflow"].engine.dispose()


def test_dead_letter_after_the_last_attempt_then_retry_dead(
    services: Services,
    actors,  # noqa: ANN001
    hook: Hook,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    stack = ExitStack()
    request.addfinalizer(stack.close)
    monkeypatch.setenv("REHABFLOW_DELIVERY_MAX_ATTEMPTS", "3")
    agency_id = webhook_agency(services, hook)
    open_and_request(services, actors)
    [msg] = outbox(services)
    hook.default = 500
    now = at(DAY, 10)
    relay_and_deliver(services, now)
    [d] = deliveries(services, "webhook")
    for attempts in (1, 2):
        assert (d.status, d.attempts) == ("retry", attempts)
        now = d.next_attempt_at
        assert retry_due(services, now) == 1
        d = delivery(services, d.id)
    assert (d.status, d.attempts, d.next_attempt_at) == ("dead", 3, None)
    assert d.last_error == "WebhookFailed: HTTP 500"
    assert len(hook.requests) == 3
    assert retry_due(services, now + timedelta(days=30)) == 0  # dead stays dead
    assert len(hook.requests) == 3
    [inbox] = deliveries(services, "inbox")
    assert inbox.status == "delivered"  # the inbox is not held up by a dead webhook

    runner = CliRunner()
    result = runner.invoke(main, ["outbox", "status"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "outbox: relayed 1" in result.output
    assert "webhook/dead 1" in result.output and "inbox/delivered 1" in result.output
    assert (
        f"dead #{d.id} webhook agency {agency_id} message {msg.id} after 3 attempts: "
        "WebhookFailed: HTTP 500"
    ) in result.output

    api = stack.enter_context(admin_api(services))
    listed, refused = api("dead")
    assert refused == 403
    assert [(x["id"], x["channel"], x["status"], x["attempts"]) for x in listed] == [
        (d.id, "webhook", "dead", 3)
    ]
    assert listed[0]["message_id"] == msg.id and listed[0]["agency_id"] == agency_id

    # the receiver is fixed; the administrator re-sends the dead letters
    hook.default = 200
    result = runner.invoke(main, ["outbox", "retry", "--dead", "--inline"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 deliveries re-queued" in result.output
    d = delivery(services, d.id)
    assert (d.status, d.attempts, d.last_error) == ("delivered", 1, None)
    assert len(hook.requests) == 4
    assert hook.requests[-1][0]["X-Rehabflow-Id"] == msg.id
    result = runner.invoke(main, ["outbox", "status"], catch_exceptions=False)
    assert "webhook/delivered 1" in result.output and "dead #" not in result.output
    assert api("dead")[0] == []
    assert [x["id"] for x in api("delivered")[0]] == [d.id, inbox.id]
