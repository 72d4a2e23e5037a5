"""Worker commands: ``sweep``, ``worker``, ``outbox status`` and ``outbox retry``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
from sqlalchemy import func, select

from workflow.cli import main


def _services():  # noqa: ANN202
    from workflow.bootstrap import bootstrap

    services = bootstrap()
    services.init_db()
    return services


def _queue(services):  # noqa: ANN001, ANN202
    from workers.queue import connect, queue, redis_url

    return queue(connect(redis_url(services.settings.data_dir)))


def _parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use ISO 8601, e.g. 2027-02-18T09:00+07:00") from None
    if moment.tzinfo is None:
        from workflow.calendar import BUSINESS_TZ

        moment = moment.replace(tzinfo=BUSINESS_TZ)
    return moment


@main.command("sweep")
@click.option("--now", "now_text", default=None, help="Simulated time (ISO 8601).")
@click.option("--inline", is_flag=True, help="Deliver in this process instead of through RQ.")
def sweep(now_text: str | None, inline: bool) -> None:
    """Process everything due up to NOW: deadlines, automatic transitions, outbox, retries."""
    from workers.tasks import inline_enqueue, rq_enqueue, run_sweep

    services = _services()
    now = _parse_now(now_text)
    enqueue = inline_enqueue(services, now) if inline else rq_enqueue(_queue(services))
    report, relayed, requeued, reminders, migrated = run_sweep(services, enqueue, now)
    if inline:
        enqueue.flush()
    click.echo(
        f"{report}; outbox relayed: {relayed}; deliveries re-queued: {requeued}; "
        f"calendar reminders: {reminders}; cases migrated (queued runs): {migrated}"
    )


@main.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """Run an RQ worker with the scheduler (the sweep runs every minute)."""
    from rq import Worker

    from workers import runtime
    from workers.tasks import schedule_tick

    # Build the services once, here: every job runs in a forked work-horse, which inherits
    # them (otherwise each job parses the definitions again, ~1 s). The horses must not share
    # this process's database connections, so the pool is emptied before the first fork.
    services = runtime.services()
    services.init_db()
    services.engine.dispose()
    queue = _queue(services)
    schedule_tick(queue, datetime.now(UTC))
    Worker([queue], connection=queue.connection).work(burst=burst, with_scheduler=True)


@main.group()
def outbox() -> None:
    """Notifications waiting, delivered and dead-lettered."""


@outbox.command("status")
def outbox_status() -> None:
    """Counts of outbox messages and deliveries by status; the dead letters listed."""
    from workflow.model import Delivery, OutboxMessage

    services = _services()
    with services.session_factory() as s:
        msgs = s.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        ).all()
        dels = s.execute(
            select(Delivery.channel, Delivery.status, func.count()).group_by(
                Delivery.channel, Delivery.status
            )
        ).all()
        dead = (
            s.execute(
                select(Delivery).where(Delivery.status == "dead").order_by(Delivery.id).limit(50)
            )
            .scalars()
            .all()
        )
    click.echo("outbox: " + (", ".join(f"{st} {n}" for st, n in msgs) or "empty"))
    click.echo("deliveries: " + (", ".join(f"{c}/{st} {n}" for c, st, n in dels) or "none"))
    for d in dead:
        click.echo(
            f"  dead #{d.id} {d.channel} agency {d.agency_id} message {d.message_id} "
            f"after {d.attempts} attempts: {d.last_error}"
        )


@outbox.command("retry")
@click.option("--dead", is_flag=True, help="Also retry dead-lettered deliveries.")
@click.option("--inline", is_flag=True, help="Deliver in this process instead of through RQ.")
def outbox_retry(dead: bool, inline: bool) -> None:
    """Re-enqueue deliveries waiting for a retry (and the dead ones with --dead)."""
    from workers.relay import requeue
    from workers.tasks import inline_enqueue, rq_enqueue

    services = _services()
    now = datetime.now(UTC)
    enqueue = inline_enqueue(services, now) if inline else rq_enqueue(_queue(services))
    from workflow.model import Delivery

    if dead:
        with services.session_factory() as s:
            for d in s.execute(select(Delivery).where(Delivery.status == "dead")).scalars():
                d.next_attempt_at = now
            s.commit()
    n = requeue(services, enqueue, now, include_dead=dead)
    if inline:
        enqueue.flush()
    click.echo(f"{n} deliveries re-queued")
    sys.exit(0)
