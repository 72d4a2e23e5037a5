"""The outbox relay: pending outbox rows -> delivery rows -> RQ jobs.

Rows are taken with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, in batches. The jobs are enqueued
before the transaction commits: if Redis is down the enqueue fails, the transaction rolls back
and the rows stay pending for the next run (the transition that wrote them has long committed).
If the commit failed after an enqueue, the job finds no delivery row and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from workers.recipients import resolve
from workers.settings import delivery_settings, smtp_settings
from workflow.bootstrap import Services
from workflow.model import Delivery, OutboxMessage

Enqueue = Callable[[list[tuple[int, int]]], None]  # [(delivery_id, job tag)]


def channels_for(agency: object, email_enabled: bool) -> list[str]:
    out = ["inbox"]
    if email_enabled and getattr(agency, "email", None):
        out.append("email")
    if getattr(agency, "webhook_url", None) and getattr(agency, "webhook_secret", None):
        out.append("webhook")
    return out


def relay(services: Services, enqueue: Enqueue, now: datetime, *, batch: int = 200) -> int:
    """Move every pending outbox row to deliveries and jobs; returns the number relayed."""
    email_enabled = smtp_settings() is not None
    total = 0
    while True:
        with services.session_factory() as session:
            stmt = (
                select(OutboxMessage)
                .where(OutboxMessage.status == "pending", OutboxMessage.available_at <= now)
                .order_by(OutboxMessage.created_at, OutboxMessage.id)
                .limit(batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = list(session.execute(stmt).scalars())
            if not rows:
                return total
            jobs: list[tuple[int, int]] = []
            for msg in rows:
                for agency in resolve(session, msg.recipients or {}):
                    for channel in channels_for(agency, email_enabled):
                        d = Delivery(
                            message_id=msg.id,
                            agency_id=agency.id,
                            channel=channel,
                            status="queued",
                            attempts=0,
                            created_at=now,
                            updated_at=now,
                        )
                        session.add(d)
                        session.flush()
                        jobs.append((d.id, 0))
                msg.status, msg.sent_at, msg.attempts = "relayed", now, msg.attempts + 1
            enqueue(jobs)  # raises when Redis is down: nothing is marked relayed
            session.commit()
            total += len(rows)


def requeue(
    services: Services,
    enqueue: Enqueue,
    now: datetime,
    *,
    batch: int = 500,
    include_dead: bool = False,
) -> int:
    """Re-enqueue deliveries whose retry time has come, and queued ones a worker lost
    (not finished within the visibility timeout, e.g. the worker was killed)."""
    settings = delivery_settings()
    stale = now - timedelta(seconds=settings.visibility_timeout)
    conds = [
        and_(Delivery.status == "retry", Delivery.next_attempt_at <= now),
        and_(Delivery.status == "queued", Delivery.updated_at <= stale),
    ]
    if include_dead:
        conds.append(Delivery.status == "dead")
    with services.session_factory() as session:
        stmt = select(Delivery).where(or_(*conds)).order_by(Delivery.id).limit(batch)
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list(session.execute(stmt).scalars())
        for d in rows:
            if d.status == "dead":
                d.attempts = 0
            d.status, d.updated_at, d.next_attempt_at = "queued", now, None
        if rows:
            # a fresh job id: the lost job's id may still be in RQ's registries
            stamp = int(now.timestamp())
            enqueue([(d.id, d.attempts * 10**10 + stamp) for d in rows])
        session.commit()
        return len(rows)
