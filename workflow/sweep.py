"""The deadline sweep: reminders, escalations and automatic transitions that fall due.

``sweep_deadlines(service, now)`` reads only open deadline rows whose ``next_action_on`` has
come (an indexed query), so its cost grows with the number of due items, not of open cases. On
PostgreSQL rows are taken with ``FOR UPDATE SKIP LOCKED``, so several sweepers share the work and
each item is handled once. Every reminder and escalation is audited on its case and notified
through the outbox in the same transaction. Last, the deltas of the report counters written
since the last sweep are folded into the counters (``rollup.fold``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from workflow import audit, deadlines, rollup
from workflow.actors import SYSTEM
from workflow.calendar import business_date
from workflow.errors import DomainError
from workflow.model import AuditEvent, Case, Deadline, OutboxMessage

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


@dataclass
class SweepReport:
    reminders: int = 0
    escalations: int = 0
    automatic: int = 0
    automatic_refused: int = 0
    rows: int = 0
    counters: int = 0  # report counters changed by the fold of their deltas
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"deadlines looked at: {self.rows}; reminders: {self.reminders}; "
            f"escalations: {self.escalations}; automatic transitions: {self.automatic}"
            + (f" (refused: {self.automatic_refused})" if self.automatic_refused else "")
        )


def _notify(
    session,
    case: Case,
    event: AuditEvent,
    topic: str,
    agencies: tuple[str, ...],  # noqa: ANN001
    now: datetime,
    extra: dict,
) -> None:
    if not agencies:
        return
    session.add(
        OutboxMessage(
            id=str(uuid.uuid4()),
            case_id=case.id,
            audit_seq=event.seq,
            topic=topic,
            recipients={
                "agency_types": list(agencies),
                "unit_code": case.unit_code,
                "province_code": case.province_code,
            },
            payload={
                "case_id": case.id,
                "case_number": case.number,
                "action": event.action,
                "state": case.state,
                "definition": event.definition,
                "at": now.isoformat(),
                **extra,
            },
            status="pending",
            attempts=0,
            created_at=now,
            available_at=now,
        )
    )


def sweep_deadlines(service, now: datetime, *, batch: int = 500) -> SweepReport:  # noqa: ANN001
    """Process every deadline action due on or before ``now``'s business date."""
    today = business_date(now)
    report = SweepReport()
    failed: list[int] = []
    while True:
        autos: list[tuple[int, int, str]] = []
        with service.uow() as uow:
            s = uow.session
            stmt = (
                select(Deadline)
                .where(Deadline.status == "open", Deadline.next_action_on <= today)
                .order_by(Deadline.next_action_on, Deadline.id)
                # SQLite has one writer: small batches keep officers' commands from waiting
                .limit(min(batch, 50) if uow.dialect == "sqlite" else batch)
            )
            if uow.dialect == "postgresql":
                # Lock order: the audit lanes' heads (all: the batch's events are of many
                # cases, so of many lanes; in id order), then the deadline rows, skipping
                # those a command holds. A command (an officer's check-in, another sweeper's
                # automatic transition) writes its case and deadline rows first and takes its
                # head last; the sweeper never waits for a row a command holds, so there is
                # no cycle.
                audit.lock_heads(s)
                stmt = stmt.with_for_update(skip_locked=True)
            rows = list(s.execute(stmt).scalars())
            if not rows:
                break
            for row in rows:
                report.rows += 1
                autos += _process(service, s, row, today, now, report)
            uow.commit()
        for deadline_id, case_id, key in autos:
            try:
                service.advance(
                    case_id, key, {}, SYSTEM, now, idempotency_key=f"deadline-{deadline_id}-{key}"
                )
                report.automatic += 1
            except DomainError as exc:
                report.automatic_refused += 1
                report.details.append(f"case {case_id}: {key} refused ({exc.code})")
                log.warning(
                    "automatic transition %s on case %s refused: %s", key, case_id, exc.code
                )
            except Exception:  # noqa: BLE001 - e.g. a lost connection: retry at the next tick
                log.exception("automatic transition %s on case %s failed", key, case_id)
                report.details.append(f"case {case_id}: {key} failed; retried next sweep")
                failed.append(deadline_id)
    for deadline_id in failed:  # only now, or this very sweep would pick them up again
        _retry_today(service, deadline_id, today)
    with service.uow() as uow:
        report.counters = rollup.fold(uow.session)
        uow.commit()
    return report


def _retry_today(service, deadline_id: int, today) -> None:  # noqa: ANN001
    """Make the deadline due again so the next sweep (a minute later) tries once more."""
    try:
        with service.uow() as uow:
            row = uow.session.get(Deadline, deadline_id)
            if row is not None and row.status == "open":
                row.next_action_on = today
                uow.commit()
    except Exception:  # noqa: BLE001 - the database itself is down: tomorrow's sweep retries
        log.exception("could not reschedule deadline %s", deadline_id)


def _process(
    service,
    s,
    row: Deadline,
    today,
    now: datetime,  # noqa: ANN001
    report: SweepReport,
) -> list[tuple[int, int, str]]:
    case = s.get(Case, row.case_id)
    d = service.definition_of(case)
    spec = d.deadlines.get(row.key)
    if spec is None:  # the definition no longer knows it: nothing more to do
        row.next_action_on = None
        return []
    fields = case.fields or {}
    autos = []
    if row.remind_on and row.reminded_on is None and today >= row.due_on:
        row.reminded_on = today  # too late to remind: the escalation ladder takes over
    if row.remind_on and row.reminded_on is None and row.remind_on <= today < row.due_on:
        event = service._audit_event(
            s,
            SYSTEM,
            now,
            "deadline.reminder",
            case,
            extra={"deadline": row.key, "deadline_id": row.id, "due_on": row.due_on.isoformat()},
        )
        _notify(
            s,
            case,
            event,
            "deadline_reminder",
            d.deadline_actors(row.key),
            now,
            {"deadline": row.key, "due_on": row.due_on.isoformat()},
        )
        row.reminded_on = today
        report.reminders += 1
    if spec.on_due:
        if today >= row.due_on:
            autos.append((row.id, case.id, spec.on_due))
            # looked at again tomorrow only if the transition did not happen (it meets the row)
            row.next_action_on = today + timedelta(days=1)
            return autos
    else:
        level = row.escalation_level
        while level < len(spec.escalation):
            day = deadlines.escalation_day(service.calendar, spec, level + 1, row.due_on, d, fields)
            if day >= today:
                break
            level += 1
            esc = spec.escalation[level - 1]
            event = service._audit_event(
                s,
                SYSTEM,
                now,
                "deadline.escalated",
                case,
                extra={
                    "deadline": row.key,
                    "deadline_id": row.id,
                    "level": level,
                    "due_on": row.due_on.isoformat(),
                },
            )
            _notify(
                s,
                case,
                event,
                "deadline_escalated",
                esc.notify,
                now,
                {"deadline": row.key, "due_on": row.due_on.isoformat(), "level": level},
            )
            report.escalations += 1
        row.escalation_level = level
    row.next_action_on = deadlines.next_action(
        service.calendar,
        spec,
        d,
        due=row.due_on,
        remind_on=row.remind_on,
        reminded=row.reminded_on is not None,
        level=row.escalation_level,
        case_fields=fields,
    )
    return autos
