"""Delivering one message to one agency over one channel (an RQ job), with retries.

The database is the source of truth: a ``deliveries`` row says queued, delivered, retry or dead.
A failed attempt is recorded and retried later with exponential backoff and jitter; after the
last attempt the delivery is dead-lettered, visible to administrators. The inbox channel writes
its item and marks the delivery in one transaction, so the inbox gets each message exactly once,
even when a job runs twice (a worker killed mid-job, a message relayed twice).
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from workers import messages
from workers.channels import email as email_channel
from workers.channels import inbox as inbox_channel
from workers.channels import webhook as webhook_channel
from workers.settings import DeliverySettings, delivery_settings, smtp_settings
from workflow.bootstrap import Services
from workflow.model import Agency, Delivery, OutboxMessage

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


def backoff(attempts: int, settings: DeliverySettings, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt: base * 2^(n-1), capped, with full jitter in [50%, 100%]."""
    delay = min(settings.max_delay, settings.base_delay * 2 ** max(0, attempts - 1))
    return delay * (0.5 + 0.5 * (rng or random).random())


def deliver(
    delivery_id: int, *, services: Services | None = None, now: datetime | None = None
) -> str:
    """The RQ job: deliver once; returns the delivery's status afterwards."""
    if services is None:
        from workers.runtime import services as runtime_services

        services = runtime_services()
    now = now or datetime.now(UTC)
    settings = delivery_settings()
    with services.session_factory() as session:
        row = session.get(Delivery, delivery_id)
        if row is None or row.status in ("delivered", "dead"):
            return row.status if row else "missing"
        msg = session.get(OutboxMessage, row.message_id)
        agency = session.get(Agency, row.agency_id)
        try:
            _send(session, services, row, msg, agency, now, settings)
            # write the inbox item here, inside the try: a concurrent run of the same delivery
            # that wrote it first makes this fail on the unique index, handled below
            session.flush()
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried
            session.rollback()
            row = session.get(Delivery, delivery_id)
            if row.status in ("delivered", "dead"):  # a concurrent run finished it
                return row.status
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            row.updated_at = now
            if row.attempts >= settings.max_attempts:
                row.status, row.next_attempt_at = "dead", None
                log.warning("delivery %s dead after %s attempts", delivery_id, row.attempts)
            else:
                row.status = "retry"
                row.next_attempt_at = now + timedelta(seconds=backoff(row.attempts, settings))
            session.commit()
            return row.status
        row.attempts += 1
        row.status, row.delivered_at, row.updated_at = "delivered", now, now
        row.last_error = None
        session.commit()
        return row.status


def _send(
    session: Session,
    services: Services,
    row: Delivery,
    msg: OutboxMessage,
    agency: Agency,
    now: datetime,
    settings: DeliverySettings,
) -> None:
    payload = msg.payload or {}
    if row.channel == "inbox":
        rendered = messages.render(msg.topic, payload, services.registry, lang="vi", public_url="")
        inbox_channel.put(
            session, msg.id, agency.id, msg.case_id, msg.topic, rendered.subject, rendered.text, now
        )
    elif row.channel == "email":
        smtp = smtp_settings()
        if smtp is None or not agency.email:
            raise RuntimeError("e-mail is not configured for this agency")
        rendered = messages.render(
            msg.topic, payload, services.registry, lang="vi", public_url=settings.public_url
        )
        email_channel.send(smtp, agency.email, msg.id, rendered)
    elif row.channel == "webhook":
        if not agency.webhook_url or not agency.webhook_secret:
            raise RuntimeError("no webhook configured for this agency")
        webhook_channel.send(
            agency.webhook_url,
            agency.webhook_secret,
            msg.id,
            {
                "id": msg.id,
                "topic": msg.topic,
                "agency": agency.code,
                "created_at": msg.created_at.isoformat(),
                **payload,
            },
        )
    else:
        raise RuntimeError(f"unknown channel {row.channel!r}")
