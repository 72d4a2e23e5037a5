"""Deadline arithmetic: due dates, reminders and the escalation ladder as dates.

A deadline is a row; nothing here keeps time in memory. ``next_action_on`` is the first
business date on which the sweep has something to do for the row (remind, escalate, or fire its
automatic transition); after each pass it is always later than the day processed, so a second
sweep on the same day finds nothing.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from workflow.calendar import WorkingCalendar
from workflow.definition import DeadlineSpec, Definition, Duration, Quantity


def amount(q: Quantity, d: Definition, form: dict[str, Any], case_fields: dict[str, Any]) -> int:
    """The integer a quantity stands for (literal, parameter, or form/case field)."""
    if q.value is not None:
        return q.value
    if q.param:
        return int(d.param(q.param))
    ns, name = q.field.split(".", 1)
    value = (form if ns == "form" else case_fields).get(name)
    if value is None:
        raise KeyError(q.field)
    return int(value)


def before(calendar: WorkingCalendar, due: date, n: int, unit: str) -> date:
    """The date ``n`` units before ``due`` (for reminders)."""
    if unit == "working_days":
        return calendar.subtract_working_days(due, n)
    if unit == "days":
        return due - timedelta(days=n)
    month = due.month - 1 - n
    year, month = due.year + month // 12, month % 12 + 1
    return date(year, month, min(due.day, 28))


def add(
    calendar: WorkingCalendar,
    anchor: date,
    duration: Duration,
    d: Definition,
    form: dict[str, Any],
    case_fields: dict[str, Any],
) -> date:
    return calendar.add(anchor, amount(duration.amount, d, form, case_fields), duration.unit)


def escalation_day(
    calendar: WorkingCalendar,
    spec: DeadlineSpec,
    level: int,
    due: date,
    d: Definition,
    case_fields: dict[str, Any],
) -> date:
    """The last day of grace of escalation ``level`` (1-based); it fires the day after."""
    esc = spec.escalation[level - 1]
    n = amount(esc.after.amount, d, {}, case_fields)
    if n == 0:
        return due
    return calendar.add(due, n, esc.after.unit)


def next_action(
    calendar: WorkingCalendar,
    spec: DeadlineSpec,
    d: Definition,
    *,
    due: date,
    remind_on: date | None,
    reminded: bool,
    level: int,
    case_fields: dict[str, Any],
) -> date | None:
    """The first day the sweep must look at this deadline again (None: never)."""
    candidates = []
    if remind_on is not None and not reminded and remind_on < due:
        candidates.append(remind_on)
    if spec.on_due:
        candidates.append(due)
    elif level < len(spec.escalation):
        candidates.append(
            escalation_day(calendar, spec, level + 1, due, d, case_fields) + timedelta(days=1)
        )
    return min(candidates) if candidates else None
