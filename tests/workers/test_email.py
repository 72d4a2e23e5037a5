"""E-mail through a real SMTP server started by the test (aiosmtpd): one message per
notified agency with an address, Vietnamese subject and body in plain text and HTML, a
Message-ID derived from the outbox id, no personal data; SMTP down -> retried with backoff."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from workers.delivery import deliver
from workers.relay import relay, requeue
from workers.tasks import inline_enqueue
from workflow.bootstrap import Services

from .helpers import (
    DAY,
    PERSONAL,
    add_agency,
    at,
    deliveries,
    delivery,
    free_port,
    open_and_request,
    outbox,
)

SENDER_ADDRESS = "rehabflow@so-yte.example.vn"
SENDER = f"Sở Y tế Nghệ An <{SENDER_ADDRESS}>"
TO = "tram-y-te@do-luong.example.vn"


class Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server, session, envelope: Envelope) -> str:  # noqa: ANN001, N802
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(e.content, policy=email.policy.default)  # type: ignore[misc]
            for e in self.envelopes
        ]


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.box = Mailbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.box, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """SMTP settings in the environment; the server is started by the test (or not)."""
    server = SmtpServer(free_port())
    monkeypatch.setenv("REHABFLOW_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("REHABFLOW_SMTP_PORT", str(server.port))
    monkeypatch.setenv("REHABFLOW_SMTP_FROM", SENDER)
    try:
        yield server
    finally:
        server.stop()


def test_transition_mails_the_agency_in_vietnamese(services: Services, actors, smtp) -> None:  # noqa: ANN001
    smtp.start()
    agency_id = add_agency(services, "health_facility", email=TO)
    add_agency(services, "health_facility", ("17674",), email="other@example.vn")  # elsewhere
    add_agency(services, "court", email="court@example.vn")  # not notified of this transition
    cid = open_and_request(services, actors)
    [msg] = outbox(services)
    now = at(DAY, 10)
    enqueue = inline_enqueue(services, now)
    assert relay(services, enqueue, now) == 1
    enqueue.flush()
    mails = [d for d in deliveries(services) if d.channel == "email"]
    assert [(d.agency_id, d.status, d.attempts) for d in mails] == [(agency_id, "delivered", 1)]

    assert len(smtp.box.envelopes) == 1
    envelope = smtp.box.envelopes[0]
    assert envelope.mail_from == SENDER_ADDRESS
    assert envelope.rcpt_tos == [TO]
    [mail] = smtp.box.messages()
    assert mail["To"] == TO and str(mail["From"]) == SENDER
    assert mail["Message-ID"] == f"<{msg.id}@rehabflow>"

    d = services.registry.get("drug_rehab", 1)
    label = d.transitions["request_determination"].label.vi
    number = msg.payload["case_number"]
    assert number and msg.payload["case_id"] == cid
    # decoded from its RFC 2047 encoded words, every space kept (the subject is long enough to
    # be folded over several encoded words)
    assert str(mail["Subject"]) == f"[rehabflow] Hồ sơ {number}: {label}"
    subject = str(mail["Subject"])

    assert mail.get_content_type() == "multipart/alternative"
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
    assert {plain["Content-Transfer-Encoding"], html["Content-Transfer-Encoding"]} <= {
        "base64",
        "quoted-printable",
        "8bit",
    }
    text, page = plain.get_content(), html.get_content()
    from_label = d.states["detected"].label.vi
    to_label = d.states["addiction_determination"].label.vi
    for body in (text, page):
        assert "Kính gửi quý cơ quan" in body
        assert number in body and label in body
        assert f"{from_label} → {to_label}" in body
        assert "05/03/2035 09:00" in body  # the transition's time, dd/mm/yyyy, Vietnam time
        assert f"http://127.0.0.1:8080/cases/{cid}" in body
    assert f"<strong>{number}</strong>" in page and page.lstrip().startswith("<!doctype html>")
    assert "<" not in text

    raw = bytes(envelope.content)  # type: ignore[arg-type]
    for secret in PERSONAL:
        assert secret not in subject and secret not in text and secret not in page
        assert secret.encode() not in raw

    # a second run of the same job (at-least-once) sends nothing more once it is delivered
    assert deliver(mails[0].id, services=services, now=now) == "delivered"
    assert len(smtp.box.envelopes) == 1


def test_smtp_down_is_retried_with_backoff(services: Services, actors, smtp) -> None:  # noqa: ANN001
    agency_id = add_agency(services, "health_facility", email=TO)
    open_and_request(services, actors)
    now = at(DAY, 10)
    enqueue = inline_enqueue(services, now)
    relay(services, enqueue, now)
    enqueue.flush()  # nobody listens on the SMTP port
    [mail] = deliveries(services, "email")
    assert (mail.agency_id, mail.status, mail.attempts) == (agency_id, "retry", 1)
    assert "ConnectionRefusedError" in (mail.last_error or "")
    # base 30 s, full jitter in [50 %, 100 %]
    assert now + timedelta(seconds=15) <= mail.next_attempt_at <= now + timedelta(seconds=30)
    [inbox] = deliveries(services, "inbox")  # the other channel is not held up
    assert inbox.status == "delivered"

    # not yet due: nothing re-queued; a second failure doubles the delay
    assert requeue(services, inline_enqueue(services, now), now + timedelta(seconds=1)) == 0
    second = mail.next_attempt_at + timedelta(seconds=1)
    enqueue = inline_enqueue(services, second)
    assert requeue(services, enqueue, second) == 1
    enqueue.flush()
    mail = delivery(services, mail.id)
    assert (mail.status, mail.attempts) == ("retry", 2)
    assert second + timedelta(seconds=30) <= mail.next_attempt_at <= second + timedelta(seconds=60)
    assert smtp.box.envelopes == []

    # the server comes back: the next retry delivers, exactly one mail
    smtp.start()
    third = mail.next_attempt_at
    enqueue = inline_enqueue(services, third)
    assert requeue(services, enqueue, third) == 1
    enqueue.flush()
    mail = delivery(services, mail.id)
    assert (mail.status, mail.attempts, mail.next_attempt_at) == ("delivered", 3, None)
    assert mail.delivered_at == third and mail.last_error is None
    assert len(smtp.box.envelopes) == 1
    [msg] = outbox(services)
    assert smtp.box.messages()[0]["Message-ID"] == f"<{msg.id}@rehabflow>"
