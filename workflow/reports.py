"""Indicators of the local plans for a unit and a period, computed with aggregate SQL.

Every figure is one grouped query over indexed columns (``audit_events.case_id``/``seq``,
``activity_records (key, at)``, ``deadlines (status, due_on)``, ``cases (unit_code, ...)``);
Python only loops over the few result rows (and over the court decisions of the period, for
the working-day arithmetic of the holiday calendar).

Approach (what the figures mean):

* **Period.** ``start`` and ``end`` are business dates (Asia/Ho_Chi_Minh), both included: the
  period runs from ``start`` 00:00 to ``end + 1 day`` 00:00, Vietnam time. ``period("2026H1")``
  is 15/12/2025-14/06/2026, ``period("2026H2")`` 15/06/2026-14/12/2026 and ``period("2026")``
  15/12/2025-14/12/2026 (the plans' reporting year).
* **Group of a case at a moment t** = the group (in the case's definition) of the ``to_state``
  of the case's last audit event before t that carries a ``to_state`` (case opened,
  transitions; activities carry the unchanged state). It is reconstructed from the audit log
  for *both* ends of the period, so a report on a past period gives the same figures today as
  on the day it was first made (the current ``cases.state_group`` is not used for this).
* **New / ended in the period** count *entries into* and *exits from* a group: audit events in
  the period whose ``to_state`` is in the group and whose ``from_state`` is not (new), or the
  reverse (ended). They are counts of events, not of distinct people, so that for every
  state-based group ``at_end == at_start + new - ended`` exactly (a case that enters and leaves
  in the period counts once in each).
* **Absent from the locality** is not a state but a flag set by the ``report_absence`` and
  cleared by the ``report_return`` activities: a case is absent at t when its last such
  activity before t is ``report_absence`` and its state at t is not terminal; new = absences
  reported in the period, ended = returns reported in the period (the identity above does not
  hold for this group when an absent person's case is closed). Absent people also stay in their
  state's group.
* **Compulsory dossiers**: made = transitions into the ``compulsory_dossier`` group from outside
  it (``open_compulsory_dossier``, ``open_minor_dossier``; a dossier returned by the court or the
  labour office is not a new one); sent to court = ``transfer_to_court``; decided =
  ``decide_compulsory``; rejected = ``decide_not_send`` + ``terminate_review``. The working days
  from dossier to decision are measured for every court decision of the period (the three
  decision transitions), from the case's latest dossier opening before it, with
  ``WorkingCalendar.working_days_between`` on business dates.
* **Complete management dossier** (a snapshot of *now*, not of ``end``): among the unit's open
  cases (not in a terminal state), those holding an active (not revoked) document for every
  document requirement shared by all the transitions leading into their current state.
* **Support**: people who finished rehab in the period (entered ``rehab_completed``; distinct
  cases) and of them those with a ``support_given`` activity recorded before the end of the
  period (the activity is what sets the ``support_received`` field). Target 80 %.
* **Family commitment**: people in voluntary home rehab, substitution treatment or post-rehab
  management at the end of the period, and of them those with a ``family_commitment_signed``
  activity before the end. Target 100 %.
* **Relapses**: ``report_relapse`` transitions in the period (events and distinct cases).
* **Check-ins**: done = ``check_in`` activities in the period; due = ``check_in_due`` deadlines
  due in the period, except those cancelled (the case left the schedule) before they fell due;
  met on time = met on or before their due date; missed = the others that are past due (met
  late, still open after the due date, or cancelled after it).
* **Deadlines per agency**: every deadline due in the period, attributed to the responsible
  agency of the state the deadline waits in (its ``during`` states, else the source state of
  its first ``met_by`` transition), counted as met on time, met late, overdue and still open,
  or pending (open, not yet due on ``today``); cancelled-before-due deadlines are left out.
  overdue = met late + overdue open + cancelled after falling due.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    distinct,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from workflow import units
from workflow.calendar import BUSINESS_TZ, WorkingCalendar, business_date
from workflow.definition import Definition
from workflow.errors import ValidationFailed
from workflow.model import ActivityRecord, AuditEvent, Case, Deadline, Document
from workflow.registry import Registry

# the reporting groups of the plans, in the order of the report
REPORT_GROUPS = (
    "voluntary_home",
    "voluntary_facility",
    "substitution",
    "compulsory",
    "post_rehab",
    "illegal_use",
    "absent",
)
ABSENT = "absent"
ABSENCE_ACTION = "activity:report_absence"
RETURN_ACTION = "activity:report_return"
DOSSIER_GROUP = "compulsory_dossier"
SENT_TO_COURT = ("transfer_to_court",)
DECIDED = ("decide_compulsory",)
REJECTED = ("decide_not_send", "terminate_review")
RELAPSE = ("report_relapse",)
FINISHED_STATES = ("rehab_completed",)
COMMITMENT_GROUPS = ("voluntary_home", "substitution", "post_rehab")
SUPPORT_ACTIVITY = "support_given"
COMMITMENT_ACTIVITY = "family_commitment_signed"
CHECK_IN_ACTIVITY = "check_in"
CHECK_IN_DEADLINE = "check_in_due"
SUPPORT_TARGET = 0.8
COMMITMENT_TARGET = 1.0
OTHER = "other"

_HALF = re.compile(r"^(\d{4})H([12])$")
_YEAR = re.compile(r"^(\d{4})$")


def period(spec: str) -> tuple[date, date]:
    """The plans' reporting periods: ``"2026H1"`` → 15/12/2025–14/06/2026, ``"2026H2"`` →
    15/06/2026–14/12/2026, ``"2026"`` → 15/12/2025–14/12/2026."""
    text = spec.strip().upper()
    if m := _HALF.match(text):
        year, half = int(m.group(1)), int(m.group(2))
        if half == 1:
            return date(year - 1, 12, 15), date(year, 6, 14)
        return date(year, 6, 15), date(year, 12, 14)
    if m := _YEAR.match(text):
        year = int(m.group(1))
        return date(year - 1, 12, 15), date(year, 12, 14)
    raise ValidationFailed(
        f"invalid period {spec!r}", errors={"period": ["YYYY, YYYYH1 or YYYYH2"]}
    )


def moment(day: date) -> datetime:
    """00:00 in Vietnam on ``day``, as an aware UTC datetime."""
    return datetime.combine(day, time(0), tzinfo=BUSINESS_TZ).astimezone(UTC)


def unit_level(unit: str | None) -> str:
    """The level of ``unit``: "country", "province" or "commune" (ValidationFailed if unknown)."""
    if unit is None:
        return "country"
    found = units.get(unit)
    if found is None:
        raise ValidationFailed(f"unknown unit {unit!r}", errors={"unit": ["unknown unit"]})
    return found.level


def _unit_where(unit: str | None) -> list[ColumnElement[bool]]:
    level = unit_level(unit)
    if level == "country":
        return []
    if level == "province":
        return [Case.province_code == unit]
    return [Case.unit_code == unit]


def _group_expr(registry: Registry, def_col: Any, state_col: Any) -> Any:
    """SQL: the reporting group of (definition, state), ``'other'`` when none (or NULL)."""
    whens = []
    for d in registry.all():
        by_group: dict[str, list[str]] = {}
        for s in d.states.values():
            by_group.setdefault(s.group, []).append(s.key)
        for group, states in sorted(by_group.items()):
            if group == OTHER:
                continue
            whens.append((and_(def_col == d.ref, state_col.in_(sorted(states))), literal(group)))
    return case(*whens, else_=literal(OTHER)) if whens else literal(OTHER)


def _terminal_states(registry: Registry) -> list[str]:
    return sorted(
        {s.key for d in registry.all() for s in d.states.values() if s.kind == "terminal"}
    )


def _dossier_openings(registry: Registry) -> list[str]:
    """Transitions into the compulsory-dossier group from outside it."""
    keys = set()
    for d in registry.all():
        inside = {s.key for s in d.states.values() if s.group == DOSSIER_GROUP}
        for t in d.transitions.values():
            if t.dest in inside and not set(t.sources) <= inside:
                keys.add(t.key)
    return sorted(keys)


def _actions(keys: tuple[str, ...] | list[str]) -> list[str]:
    return [f"transition:{k}" for k in keys]


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


class _Query:
    """The pieces of SQL shared by the indicators of one report."""

    def __init__(self, session: Session, registry: Registry, unit: str | None) -> None:
        self.session = session
        self.registry = registry
        self.where = _unit_where(unit)

    def last_state_event(self, t: datetime) -> Any:
        """Subquery (case_id, seq): each case's last event with a to_state before ``t``."""
        return (
            select(AuditEvent.case_id, func.max(AuditEvent.seq).label("seq"))
            .join(Case, Case.id == AuditEvent.case_id)
            .where(AuditEvent.to_state.is_not(None), AuditEvent.at < t, *self.where)
            .group_by(AuditEvent.case_id)
            .subquery()
        )

    def groups_at(self, t: datetime) -> dict[str, int]:
        last = self.last_state_event(t)
        ev = aliased(AuditEvent)
        group = _group_expr(self.registry, ev.definition, ev.to_state)
        rows = self.session.execute(
            select(group, func.count()).join(last, last.c.seq == ev.seq).group_by(group)
        ).all()
        counts = {g: n for g, n in rows}
        counts[ABSENT] = self.absent_at(t, last)
        return counts

    def absent_at(self, t: datetime, last_state: Any) -> int:
        last = (
            select(AuditEvent.case_id, func.max(AuditEvent.seq).label("seq"))
            .join(Case, Case.id == AuditEvent.case_id)
            .where(AuditEvent.action.in_([ABSENCE_ACTION, RETURN_ACTION]), AuditEvent.at < t)
            .where(*self.where)
            .group_by(AuditEvent.case_id)
            .subquery()
        )
        flag, state = aliased(AuditEvent), aliased(AuditEvent)
        stmt = (
            select(func.count())
            .select_from(flag)
            .join(last, last.c.seq == flag.seq)
            .join(last_state, last_state.c.case_id == flag.case_id)
            .join(state, state.seq == last_state.c.seq)
            .where(
                flag.action == ABSENCE_ACTION,
                state.to_state.not_in(_terminal_states(self.registry)),
            )
        )
        return int(self.session.execute(stmt).scalar_one())

    def in_period(self, t0: datetime, t1: datetime) -> list[ColumnElement[bool]]:
        return [AuditEvent.at >= t0, AuditEvent.at < t1, *self.where]

    def moves(self, t0: datetime, t1: datetime) -> tuple[dict[str, int], dict[str, int]]:
        """Entries into and exits from each group in [t0, t1)."""
        g_to = _group_expr(self.registry, AuditEvent.definition, AuditEvent.to_state)
        g_from = _group_expr(self.registry, AuditEvent.definition, AuditEvent.from_state)
        base = (
            select()
            .select_from(AuditEvent)
            .join(Case, Case.id == AuditEvent.case_id)
            .where(AuditEvent.to_state.is_not(None), g_to != g_from, *self.in_period(t0, t1))
        )
        entries = dict(
            self.session.execute(base.add_columns(g_to, func.count()).group_by(g_to)).all()
        )
        exits = dict(
            self.session.execute(base.add_columns(g_from, func.count()).group_by(g_from)).all()
        )
        absences = self.action_counts([ABSENCE_ACTION, RETURN_ACTION], t0, t1)
        entries[ABSENT] = absences.get(ABSENCE_ACTION, 0)
        exits[ABSENT] = absences.get(RETURN_ACTION, 0)
        return entries, exits

    def action_counts(self, actions: list[str], t0: datetime, t1: datetime) -> dict[str, int]:
        stmt = (
            select(AuditEvent.action, func.count())
            .join(Case, Case.id == AuditEvent.case_id)
            .where(AuditEvent.action.in_(actions), *self.in_period(t0, t1))
            .group_by(AuditEvent.action)
        )
        return {a: int(n) for a, n in self.session.execute(stmt).all()}

    def distinct_cases(self, actions: list[str], t0: datetime, t1: datetime) -> int:
        stmt = (
            select(func.count(distinct(AuditEvent.case_id)))
            .join(Case, Case.id == AuditEvent.case_id)
            .where(AuditEvent.action.in_(actions), *self.in_period(t0, t1))
        )
        return int(self.session.execute(stmt).scalar_one())


def _closed_day(session: Session) -> Any:
    """SQL: the business date (Vietnam, UTC+7, no DST) of ``deadlines.closed_at``."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("Asia/Ho_Chi_Minh", Deadline.closed_at))
    return func.date(Deadline.closed_at, "+7 hours")


def _deadline_agency(d: Definition, key: str) -> str | None:
    spec = d.deadlines.get(key)
    if spec is None:
        return None
    states: list[str] = list(spec.during)
    for action_key in spec.met_by:
        t = d.transitions.get(action_key)
        if t is not None:
            states += list(t.sources)
        elif (a := d.activities.get(action_key)) is not None:
            states += list(a.states)
    for s in states:
        if s in d.states and d.states[s].responsible:
            return d.states[s].responsible
    return None


def _required_in_state(d: Definition, state: str) -> list[tuple[str, ...]]:
    """Document requirements shared by every transition into ``state``."""
    into = [t for t in d.transitions.values() if t.dest == state]
    if not into:
        return []
    common = set.intersection(*[{r.any_of for r in t.documents} for t in into])
    return sorted(common)


def indicators(
    session: Session,
    registry: Registry,
    unit: str | None,
    start: date,
    end: date,
    *,
    today: date | None = None,
    calendar: WorkingCalendar | None = None,
    lang: str = "vi",
) -> dict[str, Any]:
    """Every indicator of the plans for ``unit`` (commune, province or None: the country)
    between ``start`` and ``end`` (business dates, both included). See the module docstring."""
    if end < start:
        raise ValidationFailed("the period ends before it starts", errors={"to": ["before from"]})
    level = unit_level(unit)
    today = today or business_date(datetime.now(UTC))
    calendar = calendar or WorkingCalendar()
    t0, t1 = moment(start), moment(end + timedelta(days=1))
    q = _Query(session, registry, unit)

    # -- people under management, by group
    at_start, at_end = q.groups_at(t0), q.groups_at(t1)
    entries, exits = q.moves(t0, t1)
    labels = _group_labels(registry, lang)
    groups = [
        {
            "group": g,
            "label": labels.get(g, g),
            "at_start": at_start.get(g, 0),
            "new": entries.get(g, 0),
            "ended": exits.get(g, 0),
            "at_end": at_end.get(g, 0),
        }
        for g in REPORT_GROUPS
    ]

    # -- compulsory dossiers
    openings = _actions(_dossier_openings(registry))
    counted = q.action_counts(
        openings + _actions(SENT_TO_COURT + DECIDED + REJECTED + RELAPSE), t0, t1
    )

    def total(keys: list[str]) -> int:
        return sum(counted.get(k, 0) for k in keys)

    days = _dossier_days(session, q, openings, t0, t1, calendar)
    compulsory = {
        "dossiers_made": total(openings),
        "sent_to_court": total(_actions(SENT_TO_COURT)),
        "decided": total(_actions(DECIDED)),
        "rejected": total(_actions(REJECTED)),
        "decisions_timed": len(days),
        "working_days_total": sum(days),
        "avg_working_days": round(sum(days) / len(days), 2) if days else None,
        "max_working_days": max(days) if days else None,
    }

    # -- complete management dossier (snapshot of now)
    dossier = _management_dossier(session, registry, q)

    # -- support after rehab
    finished_actions = _actions(
        sorted(
            {
                t.key
                for d in registry.all()
                for t in d.transitions.values()
                if t.dest in FINISHED_STATES
            }
        )
    )
    finished = (
        select(AuditEvent.case_id)
        .join(Case, Case.id == AuditEvent.case_id)
        .where(AuditEvent.action.in_(finished_actions), *q.in_period(t0, t1))
        .distinct()
        .subquery()
    )
    supported = exists().where(
        ActivityRecord.case_id == finished.c.case_id,
        ActivityRecord.key == SUPPORT_ACTIVITY,
        ActivityRecord.at < t1,
    )
    n_finished, n_supported = session.execute(
        select(func.count(), func.coalesce(func.sum(case((supported, 1), else_=0)), 0)).select_from(
            finished
        )
    ).one()
    support = {
        "finished": int(n_finished),
        "supported": int(n_supported),
        "share": _share(int(n_supported), int(n_finished)),
        "target": SUPPORT_TARGET,
    }

    # -- family commitment among the people in the commitment groups at the end
    last = q.last_state_event(t1)
    ev = aliased(AuditEvent)
    group = _group_expr(registry, ev.definition, ev.to_state)
    signed = exists().where(
        ActivityRecord.case_id == ev.case_id,
        ActivityRecord.key == COMMITMENT_ACTIVITY,
        ActivityRecord.at < t1,
    )
    n_people, n_signed = session.execute(
        select(func.count(), func.coalesce(func.sum(case((signed, 1), else_=0)), 0))
        .select_from(ev)
        .join(last, last.c.seq == ev.seq)
        .where(group.in_(COMMITMENT_GROUPS))
    ).one()
    commitment = {
        "cases": int(n_people),
        "signed": int(n_signed),
        "share": _share(int(n_signed), int(n_people)),
        "target": COMMITMENT_TARGET,
    }

    relapses = {
        "events": total(_actions(RELAPSE)),
        "cases": q.distinct_cases(_actions(RELAPSE), t0, t1),
    }

    # -- check-ins and deadlines
    done = session.execute(
        select(func.count())
        .select_from(ActivityRecord)
        .join(Case, Case.id == ActivityRecord.case_id)
        .where(
            ActivityRecord.key == CHECK_IN_ACTIVITY,
            ActivityRecord.at >= t0,
            ActivityRecord.at < t1,
            *q.where,
        )
    ).scalar_one()
    per_key = _deadline_rows(session, q, start, end, today)
    check = per_key.get(CHECK_IN_DEADLINE, _empty_deadline())
    check_ins = {
        "done": int(done),
        "due": check["due"],
        "met_on_time": check["met_on_time"],
        "missed": check["overdue"],
    }
    agency_labels = _agency_labels(registry, lang)
    by_agency: dict[str, dict[str, int]] = {}
    for key, row in per_key.items():
        agency = next(
            (a for d in registry.all() if (a := _deadline_agency(d, key)) is not None), "unknown"
        )
        acc = by_agency.setdefault(agency, _empty_deadline())
        for k, v in row.items():
            acc[k] += v
    deadlines = [
        {"agency": a, "label": agency_labels.get(a, a), **by_agency[a]} for a in sorted(by_agency)
    ]

    return {
        "unit": unit,
        "unit_level": level,
        "unit_label": units.label(unit) if unit else "Toàn quốc",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "today": today.isoformat(),
        "groups": groups,
        "compulsory": compulsory,
        "management_dossier": dossier,
        "support": support,
        "family_commitment": commitment,
        "relapses": relapses,
        "check_ins": check_ins,
        "deadlines": deadlines,
    }


def _group_labels(registry: Registry, lang: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in registry.all():
        for code, g in d.groups.items():
            out[code] = _text(g.label, lang)
    return out


def _agency_labels(registry: Registry, lang: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in registry.all():
        for code, a in d.agency_types.items():
            out[code] = _text(a.label, lang)
    return out


def _text(label: Any, lang: str) -> str:
    if isinstance(label, dict):
        return label.get(lang) or label.get("vi") or next(iter(label.values()), "")
    value = getattr(label, lang, None) or getattr(label, "vi", None)
    return str(value if value is not None else label)


def _dossier_days(
    session: Session,
    q: _Query,
    openings: list[str],
    t0: datetime,
    t1: datetime,
    calendar: WorkingCalendar,
) -> list[int]:
    """Working days from the latest dossier opening to each court decision of the period."""
    opened = aliased(AuditEvent)
    started = (
        select(func.max(opened.at))
        .where(
            opened.case_id == AuditEvent.case_id,
            opened.action.in_(openings),
            opened.at <= AuditEvent.at,
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(AuditEvent.at, started)
        .join(Case, Case.id == AuditEvent.case_id)
        .where(AuditEvent.action.in_(_actions(DECIDED + REJECTED)), *q.in_period(t0, t1))
    ).all()
    out = []
    for decided_at, started_at in rows:
        if started_at is None:
            continue
        if started_at.tzinfo is None:  # a scalar subquery loses the column's type on SQLite
            started_at = _parse_utc(started_at)
        out.append(
            calendar.working_days_between(business_date(started_at), business_date(decided_at))
        )
    return out


def _parse_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _management_dossier(session: Session, registry: Registry, q: _Query) -> dict[str, Any]:
    conds = []
    for d in registry.all():
        for s in d.states.values():
            if s.kind == "terminal":
                continue
            docs = [
                exists().where(
                    Document.case_id == Case.id,
                    Document.revoked_at.is_(None),
                    Document.type.in_(any_of),
                )
                for any_of in _required_in_state(d, s.key)
            ]
            conds.append(
                and_(
                    Case.definition_key == d.key,
                    Case.definition_version == d.version,
                    Case.state == s.key,
                    *docs,
                )
            )
    complete = or_(*conds) if conds else literal(False)
    n, n_complete = session.execute(
        select(func.count(), func.coalesce(func.sum(case((complete, 1), else_=0)), 0)).where(
            Case.closed_at.is_(None), *q.where
        )
    ).one()
    return {"cases": int(n), "complete": int(n_complete), "share": _share(int(n_complete), int(n))}


def _empty_deadline() -> dict[str, int]:
    return {
        "due": 0,
        "met_on_time": 0,
        "met_late": 0,
        "overdue_open": 0,
        "pending": 0,
        "overdue": 0,
    }


def _deadline_rows(
    session: Session, q: _Query, start: date, end: date, today: date
) -> dict[str, dict[str, int]]:
    """Per deadline key: the deadlines due in [start, end] by outcome."""
    late = case((_closed_day(session) > func.date(Deadline.due_on), 1), else_=0)
    past = case((Deadline.due_on < today, 1), else_=0)
    stmt = (
        select(Deadline.key, Deadline.status, late, past, func.count())
        .join(Case, Case.id == Deadline.case_id)
        .where(Deadline.due_on >= start, Deadline.due_on <= end, *q.where)
        .group_by(Deadline.key, Deadline.status, late, past)
    )
    out: dict[str, dict[str, int]] = {}
    for key, status, is_late, is_past, n in session.execute(stmt).all():
        row = out.setdefault(key, _empty_deadline())
        if status == "cancelled" and not is_late:
            continue  # left the schedule before it fell due
        row["due"] += n
        if status == "met":
            row["met_late" if is_late else "met_on_time"] += n
        elif status == "open":
            row["overdue_open" if is_past else "pending"] += n
        if (status == "met" and is_late) or (status == "open" and is_past) or status == "cancelled":
            row["overdue"] += n
    return out
