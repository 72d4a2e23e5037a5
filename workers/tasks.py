"""RQ wiring: enqueueing deliveries, and the minute tick that runs the sweep."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from rq import Queue

from workers import relay as relay_module
from workers import reporting
from workers.delivery import deliver
from workflow.bootstrap import Services
from workflow.migration import run_queued
from workflow.sweep import SweepReport, sweep_deadlines

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())
TICK_SECONDS = 60


def rq_enqueue(queue: Queue) -> relay_module.Enqueue:
    """Enqueue deliveries as RQ jobs with deterministic ids (one per delivery attempt)."""

    def enqueue(jobs: list[tuple[int, int]]) -> None:
        with queue.connection.pipeline() as pipe:
            for delivery_id, attempt in jobs:
                queue.enqueue(
                    "workers.delivery.deliver",
                    delivery_id,
                    job_id=f"delivery-{delivery_id}-{attempt}",
                    pipeline=pipe,
                    result_ttl=3600,
                    failure_ttl=7 * 86400,
                    job_timeout=120,
                )
            pipe.execute()

    return enqueue


def inline_enqueue(services: Services, now: datetime) -> relay_module.Enqueue:
    """Deliver at once in this process (``rehabflow sweep --inline``; no Redis needed)."""

    def enqueue(jobs: list[tuple[int, int]]) -> None:
        pending.extend(jobs)

    pending: list[tuple[int, int]] = []
    enqueue.flush = lambda: [
        deliver(d, services=services, now=now)  # type: ignore[attr-defined]
        for d, _ in pending
    ]
    return enqueue


def run_sweep(
    services: Services, enqueue: relay_module.Enqueue, now: datetime
) -> tuple[SweepReport, int, int, int, int]:
    """Queued case migrations (a bounded slice), deadlines, then the outbox relay, retries and
    the reporting calendar."""
    migrated = run_queued(services.cases, lambda: now)
    report = sweep_deadlines(services.cases, now)
    relayed = relay_module.relay(services, enqueue, now)
    requeued = relay_module.requeue(services, enqueue, now)
    reminders = reporting.remind(services, now)
    return report, relayed, requeued, reminders, migrated


def tick() -> str:
    """The RQ job run every minute by the worker's scheduler; schedules the next one."""
    from rq import get_current_job

    from workers.runtime import services

    job = get_current_job()
    now = datetime.now(UTC)
    queue = Queue(job.origin, connection=job.connection)
    try:
        report, relayed, requeued, reminders, migrated = run_sweep(
            services(), rq_enqueue(queue), now
        )
        summary = (
            f"{report}; relayed: {relayed}; requeued: {requeued}; calendar: {reminders}; "
            f"migrated: {migrated}"
        )
    finally:
        schedule_tick(queue, now + timedelta(seconds=TICK_SECONDS))
    return summary


def schedule_tick(queue: Queue, at: datetime) -> None:
    """Schedule the tick for the minute of ``at`` (one job per minute, whoever asks)."""
    minute = at.replace(second=0, microsecond=0)
    queue.enqueue_at(
        minute, "workers.tasks.tick", job_id=f"tick-{minute:%Y%m%d%H%M}", result_ttl=600
    )
