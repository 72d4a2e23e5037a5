"""Indicators of the local plans for a unit and a period, computed with aggregate SQL.

Every figure comes from a few grouped queries. The two biggest inputs are read from counters
kept by the transactions that write what they count (:mod:`workflow.rollup`, migration 0006):
the moves between states per business day (``report_moves``, instead of millions of audit
events) and the deadlines per due date, key, status and lateness (``report_deadlines``). The
rest reads indexes alone on PostgreSQL (migrations 0005, 0006): the events that move a case
by action (``ix_audit_state_actions``), activities by kind and time (``ix_activity_key_at``),
the absences in the order of their window (``ix_activity_absences``), the revoked documents
(``ix_documents_revoked``), a place's cases (``ix_cases_place``) and the closed ones
(``ix_cases_closed``). On PostgreSQL the queries of one report run on two connections that
share one exported snapshot (:func:`_gather`). Python only loops over the few result rows
(and over the distinct pairs of dates of the court decisions, for the working-day arithmetic
of the holiday calendar). Every figure also has a *drill key* (``report["drill"]`` maps the
figure's path to it) and :func:`drill` lists the rows behind it, from the audit log and the
deadlines themselves: their number equals the figure exactly (the counters equal a recount;
``rehabflow counters check``).

Approach (what the figures mean):

* **Period.** ``start`` and ``end`` are business dates (Asia/Ho_Chi_Minh), both included: the
  period runs from ``start`` 00:00 to ``end + 1 day`` 00:00, Vietnam time. ``period("2026H1")``
  is 15/12/2025-14/06/2026, ``period("2026H2")`` 15/06/2026-14/12/2026 and ``period("2026")``
  15/12/2025-14/12/2026 (the plans' reporting year). The *reporting year* of a period is the
  year of its end, or the next one when it ends on or after 15/12.
* **Group of a case at a moment t** = the group (in the case's definition) of the ``to_state``
  of the case's last audit event before t that carries a ``to_state``. It is reconstructed from
  the audit log, so a report on a past period gives the same figures today as on the day it
  was first made. Counted from the other end: the state at t is the ``from_state`` of the
  case's first event at or after t that moves it, or its current state when none has (the
  counts: now, minus the entries into a group since t, plus the exits from it).
* **New / ended in the period** count *entries into* and *exits from* a group: audit events in
  the period whose ``to_state`` is in the group and whose ``from_state`` is not (new), or the
  reverse (ended). They are counts of events, not of distinct people, so that for every
  state-based group ``at_end == at_start + new - ended`` exactly (a case that enters and leaves
  in the period counts once in each).
* **Absent from the locality** is not a state but a flag set by the ``report_absence`` and
  cleared by the ``report_return`` activities: a case is absent at t when its last such
  activity before t is ``report_absence`` and it was not closed before t; new = absences
  reported in the period, ended = returns reported in the period (the identity above does not
  hold for this group when an absent person's case is closed). Absent people also stay in their
  state's group.
* **Trend**: for every calendar month of the period (the first and last ones cut to the
  period), the people in each group at the end of the month (at the end of the period for the
  last one) and the cases opened in it.
* **Compulsory dossiers**: made = transitions into the ``compulsory_dossier`` group from outside
  it (``open_compulsory_dossier``, ``open_minor_dossier``; a dossier returned by the court or the
  labour office is not a new one); sent to court = ``transfer_to_court``; decided =
  ``decide_compulsory``; rejected = ``decide_not_send`` + ``terminate_review``. The working days
  from dossier to decision are measured for every court decision of the period (the three
  decision transitions) that has a dossier opening before it, from the case's latest one, with
  ``WorkingCalendar.working_days_between`` on business dates.
* **Complete management dossier** (a snapshot of *now*, not of ``end``): among the unit's open
  cases, those holding an active (not revoked) document for every document requirement shared
  by all the transitions leading into their current state. A case can only enter a state
  through one of those transitions, which refuse to fire without the documents, and documents
  are never deleted, only revoked; so only a case with a revoked document can lack one, and
  only those cases are checked document by document (the others are complete).
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
* **Targets** (:mod:`workflow.targets`): the plan of the unit for the reporting year, against
  the actual figure of the period: for a group, the people in it at the start plus the entries
  into it during the period (the plans count "lượt người"); % achieved = actual / plan.

A unit is the case's *current* commune (``cases.unit_code``) or province: a case transferred
to another commune counts there, for past periods too. A migration to a newer version of the
definition is counted as a move when it changes the state's key; the shipped versions keep
every state in its reporting group, which the tests check.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, aliased

from workflow import rollup, units
from workflow.actors import Actor
from workflow.calendar import BUSINESS_TZ, WorkingCalendar
from workflow.definition import Definition
from workflow.errors import ValidationFailed
from workflow.model import (
    ActivityRecord,
    AuditEvent,
    Case,
    Deadline,
    Document,
    Subject,
    UTCDateTime,
)
from workflow.registry import Registry
from workflow.rollup import state_change

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
STATE_GROUPS = tuple(g for g in REPORT_GROUPS if g != ABSENT)
ABSENCE_ACTIVITY = "report_absence"
RETURN_ACTIVITY = "report_return"
OPENED = "case.opened"
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
UNKNOWN_AGENCY = "unknown"
DEADLINE_OUTCOMES = ("due", "met_on_time", "met_late", "overdue_open", "pending", "overdue")
GROUP_COLUMNS = ("at_start", "new", "ended", "at_end")
MAX_PAGE = 200

_HALF = re.compile(r"^(\d{4})H([12])$")
_YEAR = re.compile(r"^(\d{4})$")


# ---------------------------------------------------------------------------- periods
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


def reporting_year(end: date) -> int:
    """The plans' year a period ending on ``end`` belongs to (it starts on 15/12 before)."""
    return end.year + 1 if (end.month, end.day) >= (12, 15) else end.year


def moment(day: date) -> datetime:
    """00:00 in Vietnam on ``day``, as an aware UTC datetime."""
    return datetime.combine(day, time(0), tzinfo=BUSINESS_TZ).astimezone(UTC)


@dataclass(frozen=True)
class Month:
    """A calendar month of a period, cut to the period: ``first`` to ``last`` included."""

    key: str  # "2026-01"
    first: date
    last: date


def months(start: date, end: date) -> list[Month]:
    """The calendar months of [start, end], the first and last ones cut to the period."""
    out: list[Month] = []
    first = start
    while first <= end:
        nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        last = min(nxt - timedelta(days=1), end)
        out.append(Month(f"{first.year}-{first.month:02d}", first, last))
        first = nxt
    return out


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
    # the province too: the place index (province, commune) of the cases serves both
    return [Case.province_code == units.get(unit).province_code, Case.unit_code == unit]


# ---------------------------------------------------------------------------- SQL pieces
class _Groups:
    """The reporting group of every (definition, state) of the registry."""

    def __init__(self, registry: Registry) -> None:
        self.of: dict[tuple[str, str], str] = {}
        self.members: dict[str, dict[str, list[str]]] = {}
        for d in registry.all():
            for s in d.states.values():
                self.of[(d.ref, s.key)] = s.group
                self.members.setdefault(s.group, {}).setdefault(d.ref, []).append(s.key)

    def group(self, ref: str | None, state: str | None) -> str:
        if state is None or ref is None:
            return OTHER
        return self.of.get((ref, state), OTHER)

    def member(self, def_col: Any, state_col: Any, groups: tuple[str, ...]) -> Any:
        """SQL: (definition, state) is in one of ``groups`` (NULL state: false)."""
        by_ref: dict[str, list[str]] = {}
        for g in groups:
            if g == OTHER:
                continue
            for ref, states in self.members.get(g, {}).items():
                by_ref.setdefault(ref, []).extend(states)
        conds = [
            and_(def_col == ref, state_col.in_(sorted(states)))
            for ref, states in sorted(by_ref.items())
        ]
        return and_(state_col.is_not(None), or_(*conds)) if conds else false()


def _dossier_openings(registry: Registry) -> list[str]:
    """Transitions into the compulsory-dossier group from outside it."""
    keys = set()
    for d in registry.all():
        inside = {s.key for s in d.states.values() if s.group == DOSSIER_GROUP}
        for t in d.transitions.values():
            if t.dest in inside and not set(t.sources) <= inside:
                keys.add(t.key)
    return sorted(keys)


def _finishing(registry: Registry) -> list[str]:
    return sorted(
        {t.key for d in registry.all() for t in d.transitions.values() if t.dest in FINISHED_STATES}
    )


def _actions(keys: tuple[str, ...] | list[str]) -> list[str]:
    return [f"transition:{k}" for k in keys]


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _closed_late(session: Session) -> Any:
    """SQL: the deadline was closed after its due date, in Vietnam (UTC+7, no DST): on or after
    17:00 UTC of the due date. On PostgreSQL the report's transaction runs in UTC (see
    :func:`_tune`), so the date-plus-interval is read as UTC without a zone lookup per row."""
    if session.get_bind().dialect.name == "postgresql":
        return Deadline.closed_at >= Deadline.due_on + text("interval '17 hours'")
    return func.date(Deadline.closed_at, "+7 hours") > func.date(Deadline.due_on)


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


def deadline_agencies(registry: Registry) -> dict[str, str]:
    """Deadline key → the agency type it is attributed to (the first definition that says)."""
    out: dict[str, str] = {}
    for d in registry.all():
        for key in d.deadlines:
            if key not in out and (agency := _deadline_agency(d, key)) is not None:
                out[key] = agency
    return out


def _required_in_state(d: Definition, state: str) -> list[tuple[str, ...]]:
    """Document requirements shared by every transition into ``state``."""
    into = [t for t in d.transitions.values() if t.dest == state]
    if not into:
        return []
    common = set.intersection(*[{r.any_of for r in t.documents} for t in into])
    return sorted(common)


def _complete(registry: Registry) -> Any:
    """SQL over ``cases``: the case holds every document its current state requires."""
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
    return or_(*conds) if conds else false()


def _required_type(registry: Registry, type_col: Any) -> Any:
    """SQL over ``cases``: ``type_col`` is a document type the case's current state requires."""
    conds = []
    for d in registry.all():
        for s in d.states.values():
            types = sorted({t for any_of in _required_in_state(d, s.key) for t in any_of})
            if s.kind == "terminal" or not types:
                continue
            conds.append(
                and_(
                    Case.definition_key == d.key,
                    Case.definition_version == d.version,
                    Case.state == s.key,
                    type_col.in_(types),
                )
            )
    return or_(*conds) if conds else false()


# ---------------------------------------------------------------------------- the scope
class _Scope:
    """A unit and a period: the SQL shared by the figures and their drill-downs."""

    def __init__(
        self,
        session: Session,
        registry: Registry,
        unit: str | None,
        start: date,
        end: date,
        today: date,
    ) -> None:
        if end < start:
            raise ValidationFailed(
                "the period ends before it starts", errors={"to": ["before from"]}
            )
        self.session, self.registry = session, registry
        self.postgres = session.get_bind().dialect.name == "postgresql"
        self.unit, self.level = unit, unit_level(unit)
        self.where = _unit_where(unit)
        self.start, self.end, self.today = start, end, today
        self.t0, self.t1 = moment(start), moment(end + timedelta(days=1))
        self.months = months(start, end)
        # bucket b < M is month b of the period, [bounds[b], bounds[b + 1]); bucket M: after it
        self.bounds = [self.t0] + [moment(m.last + timedelta(days=1)) for m in self.months]
        self.groups = _Groups(registry)
        self.openings = _actions(_dossier_openings(registry))
        self.finishing = _actions(_finishing(registry))

    # -- helpers
    def on(self, session: Session) -> _Scope:
        """The same scope, reading through ``session``."""
        other = copy.copy(self)
        other.session = session
        return other

    def scoped(self, stmt: Select, case_col: Any) -> Select:
        """``stmt`` restricted to the unit (joining ``cases`` only when needed)."""
        if not self.where:
            return stmt
        return stmt.join(Case, Case.id == case_col).where(*self.where)

    def in_period(self, col: Any) -> list[ColumnElement[bool]]:
        return [col >= self.t0, col < self.t1]

    def scalar(self, stmt: Select) -> int:
        return int(self.session.execute(stmt).scalar_one() or 0)

    # -- state changes: one pass over the daily counts of moves since the start of the period
    def changes(self) -> list[tuple[int, str, str | None, str | None, str | None, int]]:
        """(bucket, action, definition, from, to, count) of the moves since ``t0``, from the
        daily counters of :mod:`workflow.rollup` and their deltas not folded yet (exactly
        the audit log's moves, counted at the cases' current places): one pass, grouped by
        the move and the bucket of its day (month ``b`` of the period, or ``M``: after it)."""
        rm = rollup.moves_source().c
        edges = [m.last + timedelta(days=1) for m in self.months]
        bucket = case(
            *[(rm.day < edge, b) for b, edge in enumerate(edges)], else_=len(edges)
        ).label("bucket")
        level = rollup.COMMUNE if self.level == "commune" else rollup.PROVINCE
        where = [rm.level == level, rm.day >= self.start]
        if self.unit is not None:
            where.append(rm.unit == self.unit)
        keys = [rm.action, rm.definition, rm.from_state, rm.to_state]
        stmt = select(bucket, *keys, func.sum(rm.n)).where(*where).group_by(bucket, *keys)
        return [
            (int(b), action, ref, frm or None, to, int(n))
            for b, action, ref, frm, to, n in self.session.execute(stmt).all()
            if n
        ]

    def current(self) -> tuple[Counter[str], int]:
        """The cases in each group now, and the open cases."""
        is_open = func.coalesce(func.sum(case((Case.closed_at.is_(None), 1), else_=0)), 0)
        stmt = select(Case.group, func.count(), is_open).where(*self.where).group_by(Case.group)
        rows = self.session.execute(stmt).all()
        return Counter({g: int(n) for g, n, _ in rows}), sum(int(o) for _, _, o in rows)

    # -- absences: intervals from each report_absence to the case's next absence/return
    def absence_intervals(self) -> Any:
        ar = ActivityRecord
        until = func.lead(ar.at, type_=UTCDateTime()).over(
            partition_by=ar.case_id, order_by=(ar.at, ar.id)
        )
        return (
            select(ar.id, ar.case_id, ar.key, ar.at, until.label("until"))
            .where(ar.key.in_([ABSENCE_ACTIVITY, RETURN_ACTIVITY]))
            .subquery()
        )

    @staticmethod
    def absent_at(iv: Any, t: datetime) -> Any:
        return and_(
            iv.c.key == ABSENCE_ACTIVITY,
            iv.c.at < t,
            or_(iv.c.until.is_(None), iv.c.until >= t),
            or_(Case.closed_at.is_(None), Case.closed_at >= t),
        )

    def absences(self) -> tuple[list[int], list[int], list[int]]:
        """Absent people at every bound, and absences and returns reported in every month.

        One pass grouped by where each interval starts and ends among the bounds (a short
        searched CASE per end, not one CASE per bound and month per row): an interval is open
        at bound ``b`` when it starts before it and ends (next report, or the case's closing,
        whichever comes first) at or after it."""
        iv = self.absence_intervals()
        k, m = len(self.bounds), len(self.months)
        bounds = bindparam("bounds", self.bounds, type_=ARRAY(DateTime(timezone=True)))

        def bucket(col: Any) -> Any:
            """The number of bounds at or before ``col`` (k when NULL: it never ends)."""
            if self.postgres:  # a binary search per row instead of a CASE of k branches
                return func.coalesce(func.width_bucket(col, bounds), k)
            whens = [(col < t, i) for i, t in enumerate(self.bounds)]
            return case((col.is_(None), k), *whens, else_=k)

        if self.where:  # the unit's cases (and when they were closed)
            closed_at = Case.closed_at
            stmt = select().select_from(iv).join(Case, Case.id == iv.c.case_id)
        else:  # the whole country: only the closed cases matter, for their closing
            closed = select(Case.id, Case.closed_at).where(Case.closed_at.is_not(None)).subquery()
            closed_at = closed.c.closed_at
            stmt = select().select_from(iv).outerjoin(closed, closed.c.id == iv.c.case_id)
        end = case(
            (iv.c.until.is_(None), closed_at),
            (closed_at.is_(None), iv.c.until),
            (closed_at < iv.c.until, closed_at),
            else_=iv.c.until,
        )
        start_b, end_b = bucket(iv.c.at).label("s"), bucket(end).label("e")
        stmt = (
            stmt.add_columns(iv.c.key, start_b, end_b, func.count())
            .where(
                *self.where,
                # an interval over before the period, or begun after it, counts nowhere
                iv.c.at < self.bounds[-1],
                or_(iv.c.until.is_(None), iv.c.until >= self.bounds[0]),
            )
            .group_by(iv.c.key, start_b, end_b)
        )
        absent, absences, returns = [0] * k, [0] * m, [0] * m
        for key, s_b, e_b, n in self.session.execute(stmt).all():
            n = int(n)
            # started before bound b: s_b <= b; still open at it: b < e_b (end >= t_b)
            if key == ABSENCE_ACTIVITY:
                for b in range(int(s_b), min(int(e_b), k)):
                    absent[b] += n
            if 1 <= s_b <= m:
                (absences if key == ABSENCE_ACTIVITY else returns)[int(s_b) - 1] += n
        return absent, absences, returns

    # -- populations: the rows behind a figure (case_id, ref, at, detail)
    def group_at(self, t: datetime, groups: tuple[str, ...]) -> Select:
        """Cases whose group at ``t`` is in ``groups`` (one row each)."""
        if groups == (ABSENT,):
            iv = self.absence_intervals()
            return (
                select(
                    iv.c.case_id.label("case_id"),
                    iv.c.id.label("ref"),
                    iv.c.at.label("at"),
                    literal(f"activity:{ABSENCE_ACTIVITY}").label("detail"),
                )
                .join(Case, Case.id == iv.c.case_id)
                .where(self.absent_at(iv, t), *self.where)
            )
        ev = AuditEvent
        cols = [literal(0).label("ref"), _no_at(), _no_detail()]
        # not moved since t: the current group
        moved = exists().where(ev.case_id == Case.id, state_change(ev), ev.at >= t)
        unmoved = select(Case.id.label("case_id"), *cols).where(
            Case.group.in_(groups), ~moved, *self.where
        )
        # moved since t: the state it left by its first move since t
        rank = func.row_number().over(partition_by=ev.case_id, order_by=ev.seq)
        first = (
            select(ev.case_id, ev.definition, ev.from_state, rank.label("rank"))
            .where(state_change(ev), ev.at >= t)
            .subquery()
        )
        left = self.scoped(
            select(first.c.case_id.label("case_id"), *cols).where(
                first.c.rank == 1,
                self.groups.member(first.c.definition, first.c.from_state, groups),
            ),
            first.c.case_id,
        )
        return union(unmoved, left)

    def events(self, *conds: Any, distinct_cases: bool = False) -> Select:
        """Audit events that move a case, in the period, matching ``conds``."""
        ev = AuditEvent
        if distinct_cases:
            cols: list[Any] = [
                ev.case_id.label("case_id"),
                literal(0).label("ref"),
                _no_at(),
                _no_detail(),
            ]
        else:
            cols = [
                ev.case_id.label("case_id"),
                ev.seq.label("ref"),
                ev.at.label("at"),
                ev.action.label("detail"),
            ]
        stmt = self.scoped(
            select(*cols).where(state_change(ev), *self.in_period(ev.at), *conds), ev.case_id
        )
        return stmt.distinct() if distinct_cases else stmt

    def moves(self, group: str, *, entering: bool) -> Select:
        """Entries into (or exits from) ``group`` in the period (absent: absences, returns)."""
        if group == ABSENT:
            return self.activities(ABSENCE_ACTIVITY if entering else RETURN_ACTIVITY)
        ev = AuditEvent
        into = self.groups.member(ev.definition, ev.to_state, (group,))
        out = self.groups.member(ev.definition, ev.from_state, (group,))
        cond = and_(into, ~out) if entering else and_(out, ~into)
        return self.events(cond)

    def activities(self, key: str) -> Select:
        ar = ActivityRecord
        return self.scoped(
            select(
                ar.case_id.label("case_id"),
                ar.id.label("ref"),
                ar.at.label("at"),
                literal(f"activity:{key}").label("detail"),
            ).where(ar.key == key, *self.in_period(ar.at)),
            ar.case_id,
        )

    def opened_in(self, first: date, last: date) -> Select:
        ev = AuditEvent
        return self.scoped(
            select(
                ev.case_id.label("case_id"),
                ev.seq.label("ref"),
                ev.at.label("at"),
                ev.action.label("detail"),
            ).where(
                state_change(ev),
                ev.action == OPENED,
                ev.at >= moment(first),
                ev.at < moment(last + timedelta(days=1)),
            ),
            ev.case_id,
        )

    def timed_decisions(self) -> Select:
        opened = aliased(AuditEvent)
        has_opening = exists().where(
            opened.case_id == AuditEvent.case_id,
            opened.action.in_(self.openings),
            opened.at <= AuditEvent.at,
        )
        return self.events(AuditEvent.action.in_(_actions(DECIDED + REJECTED)), has_opening)

    def incomplete(self) -> Any:
        """Subquery (case_id): open cases lacking a document their state requires. Only a
        case with a revoked document of a type its state requires can (see the module
        docstring), so the check starts from the few revoked documents."""
        revoked = aliased(Document)
        return (
            select(Case.id.label("case_id"))
            .join(revoked, revoked.case_id == Case.id)
            .where(
                revoked.revoked_at.is_not(None),
                Case.closed_at.is_(None),
                *self.where,
                _required_type(self.registry, revoked.type),
                ~_complete(self.registry),
            )
            .distinct()
            .subquery()
        )

    def open_cases(self, which: str = "cases") -> Select:
        cols = [literal(0).label("ref"), _no_at(), _no_detail()]
        if which == "incomplete":
            inc = self.incomplete()
            return select(inc.c.case_id, *cols)
        stmt = select(Case.id.label("case_id"), *cols).where(Case.closed_at.is_(None), *self.where)
        if which == "complete":
            inc = self.incomplete()
            stmt = stmt.where(Case.id.not_in(select(inc.c.case_id)))
        return stmt

    def had_activity(self, key: str) -> Any:
        """Subquery: the cases with activity ``key`` before the end of the period (once each)."""
        ar = ActivityRecord
        stmt = select(ar.case_id).where(ar.key == key, ar.at < self.t1)
        return self.scoped(stmt, ar.case_id).distinct().subquery()

    def with_activity(self, pop: Select, key: str, present: bool) -> Select:
        """``pop`` kept to the cases with (or without) activity ``key`` before the end."""
        sub, has = pop.subquery(), self.had_activity(key)
        return (
            select(sub.c.case_id, sub.c.ref, sub.c.at, sub.c.detail)
            .outerjoin(has, has.c.case_id == sub.c.case_id)
            .where(has.c.case_id.is_not(None) if present else has.c.case_id.is_(None))
        )

    def finished(self) -> Select:
        return self.events(AuditEvent.action.in_(self.finishing), distinct_cases=True)

    # -- deadlines
    def deadline_flags(self) -> tuple[Any, Any]:
        late = case((_closed_late(self.session), 1), else_=0)
        past = case((Deadline.due_on < self.today, 1), else_=0)
        return late, past

    def deadline_outcome(self, outcome: str) -> Any:
        late, past = self.deadline_flags()
        met, opened = Deadline.status == "met", Deadline.status == "open"
        cancelled = Deadline.status == "cancelled"
        return {
            "due": or_(~cancelled, late == 1),
            "met_on_time": and_(met, late == 0),
            "met_late": and_(met, late == 1),
            "overdue_open": and_(opened, past == 1),
            "pending": and_(opened, past == 0),
            "overdue": or_(
                and_(met, late == 1), and_(opened, past == 1), and_(cancelled, late == 1)
            ),
        }[outcome]

    def deadlines(self, keys: Any, outcome: str) -> Select:
        """Deadlines due in the period, of ``keys`` (a condition on the key), by outcome."""
        return self.scoped(
            select(
                Deadline.case_id.label("case_id"),
                Deadline.id.label("ref"),
                _no_at(),
                Deadline.key.label("detail"),
            ).where(
                Deadline.status.in_(["open", "met", "cancelled"]),
                Deadline.due_on >= self.start,
                Deadline.due_on <= self.end,
                keys,
                self.deadline_outcome(outcome),
            ),
            Deadline.case_id,
        )

    def deadline_rows(self) -> dict[str, dict[str, int]]:
        """Per deadline key: the deadlines due in the period by outcome, from the counters of
        :mod:`workflow.rollup` and their deltas not folded yet (per key and status: how
        many, how many closed late, how many past due on ``today``)."""
        rd = rollup.deadlines_source().c
        level = rollup.COMMUNE if self.level == "commune" else rollup.PROVINCE
        where = [rd.level == level, rd.due_on >= self.start, rd.due_on <= self.end]
        if self.unit is not None:
            where.append(rd.unit == self.unit)
        stmt = (
            select(
                rd.key,
                rd.status,
                func.sum(rd.n),
                func.coalesce(func.sum(rd.n).filter(rd.late), 0),
                func.coalesce(func.sum(rd.n).filter(rd.due_on < self.today), 0),
            )
            .where(*where)
            .group_by(rd.key, rd.status)
        )
        out: dict[str, dict[str, int]] = {}
        for key, status, n, n_late, n_past in self.session.execute(stmt).all():
            n, n_late, n_past = int(n), int(n_late), int(n_past)
            row = out.setdefault(key, _empty_deadline())
            if status == "met":
                row["met_late"] += n_late
                row["met_on_time"] += n - n_late
                row["due"] += n
                row["overdue"] += n_late
            elif status == "open":
                row["overdue_open"] += n_past
                row["pending"] += n - n_past
                row["due"] += n
                row["overdue"] += n_past
            elif status == "cancelled":  # counted only when cancelled after falling due
                row["due"] += n_late
                row["overdue"] += n_late
        return out

    def business_day(self, col: Any) -> Any:
        """SQL: the business date (Vietnam) of a moment."""
        return rollup.business_day(self.session, col)

    def dossier_days(self, calendar: WorkingCalendar) -> Counter[int]:
        """Working days from the latest dossier opening to each court decision of the period
        that has one: {working days: decisions}."""
        ev, opened = AuditEvent, aliased(AuditEvent)
        decisions = self.scoped(
            select(ev.seq, ev.case_id, ev.at).where(
                state_change(ev),
                ev.action.in_(_actions(DECIDED + REJECTED)),
                *self.in_period(ev.at),
            ),
            ev.case_id,
        ).subquery()
        timed = (
            select(decisions.c.at.label("decided"), func.max(opened.at).label("started"))
            .join(
                opened,
                and_(opened.case_id == decisions.c.case_id, opened.at <= decisions.c.at),
            )
            .where(state_change(opened), opened.action.in_(self.openings))
            .group_by(decisions.c.seq, decisions.c.at)
            .subquery()
        )
        days = select(
            self.business_day(timed.c.started).label("a"),
            self.business_day(timed.c.decided).label("b"),
        ).subquery()
        rows = self.session.execute(
            select(days.c.a, days.c.b, func.count()).group_by(days.c.a, days.c.b)
        ).all()
        out: Counter[int] = Counter()
        for a, b, n in rows:
            a, b = _as_date(a), _as_date(b)
            out[calendar.working_days_between(a, b)] += int(n)
        return out


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _no_at() -> Any:
    """A typed NULL ``at`` column (PostgreSQL cannot type a bare NULL in a UNION)."""
    return cast(null(), UTCDateTime()).label("at")


def _no_detail() -> Any:
    return cast(null(), String()).label("detail")


def _parse_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _empty_deadline() -> dict[str, int]:
    return dict.fromkeys(DEADLINE_OUTCOMES, 0)


def _count(session: Session, pop: Select) -> int:
    return int(session.execute(select(func.count()).select_from(pop.subquery())).scalar_one())


# ---------------------------------------------------------------------------- the queries
def _support(q: _Scope, calendar: WorkingCalendar) -> tuple[int, int]:
    return _with_and_without(q.session, q, q.finished(), SUPPORT_ACTIVITY)


def _commitment(q: _Scope, calendar: WorkingCalendar) -> tuple[int, int]:
    return _with_and_without(q.session, q, q.group_at(q.t1, COMMITMENT_GROUPS), COMMITMENT_ACTIVITY)


def _relapse_cases(q: _Scope, calendar: WorkingCalendar) -> int:
    relapses = AuditEvent.action.in_(_actions(RELAPSE))
    return _count(q.session, q.events(relapses, distinct_cases=True))


def _check_ins_done(q: _Scope, calendar: WorkingCalendar) -> int:
    ar = ActivityRecord
    stmt = (
        select(func.count()).select_from(ar).where(ar.key == CHECK_IN_ACTIVITY, *q.in_period(ar.at))
    )
    return q.scalar(q.scoped(stmt, ar.case_id))


def _incomplete(q: _Scope, calendar: WorkingCalendar) -> int:
    return q.scalar(select(func.count()).select_from(q.incomplete()))


# every query of a report, the longest first (the order the workers take them in)
_QUERIES: tuple[tuple[str, Callable[[_Scope, WorkingCalendar], Any]], ...] = (
    ("deadlines", lambda q, calendar: q.deadline_rows()),
    ("absences", lambda q, calendar: q.absences()),
    ("dossier_days", lambda q, calendar: q.dossier_days(calendar)),
    ("support", _support),
    ("relapse_cases", _relapse_cases),
    ("commitment", _commitment),
    ("current", lambda q, calendar: q.current()),
    ("changes", lambda q, calendar: q.changes()),
    ("check_ins_done", _check_ins_done),
    ("incomplete", _incomplete),
)


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+(-[0-9A-F]+)+")


def _gather(q: _Scope, calendar: WorkingCalendar, workers: int) -> dict[str, Any]:
    """Run every query of :data:`_QUERIES` and return their results by name.

    SQLite (or ``workers`` < 2): one after the other in ``q``'s session. PostgreSQL: on
    ``workers`` new connections at once, each a REPEATABLE READ transaction on one exported
    snapshot (``pg_export_snapshot`` / ``SET TRANSACTION SNAPSHOT``, as ``pg_dump --jobs``
    does), so the figures are as consistent as one transaction's while the queries that
    PostgreSQL runs on one core overlap with the others (the machine's cores are the limit)."""
    engine = q.session.get_bind()
    if not q.postgres or workers < 2 or not isinstance(engine, Engine):
        _tune(q.session)  # (a session bound to one connection cannot open others)
        return {name: run(q, calendar) for name, run in _QUERIES}
    todo = list(_QUERIES)
    lock = threading.Lock()
    out: dict[str, Any] = {}
    failed: list[BaseException] = []

    def work(conn: Connection) -> None:
        with Session(bind=conn) as session:
            _tune(session)
            mine = q.on(session)
            while not failed:
                with lock:
                    if not todo:
                        return
                    name, run = todo.pop(0)
                out[name] = run(mine, calendar)

    def helper(snapshot: str) -> None:
        try:
            with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                # a utility statement takes no bind parameter: the id is checked instead
                if not _SNAPSHOT_ID.fullmatch(snapshot):
                    raise ValueError(f"unexpected snapshot id {snapshot!r}")
                conn.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
                work(conn)
        except BaseException as exc:  # re-raised by the caller's thread
            failed.append(exc)

    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        threads = [
            threading.Thread(target=helper, args=(snapshot,), name=f"report-{i}")
            for i in range(workers - 1)
        ]
        for t in threads:
            t.start()
        try:
            work(conn)
        except BaseException as exc:
            failed.append(exc)
        for t in threads:  # the snapshot lives as long as this transaction: join first
            t.join()
    if failed:
        raise failed[0]
    return out


# ---------------------------------------------------------------------------- the report
def indicators(
    session: Session,
    registry: Registry,
    unit: str | None,
    start: date,
    end: date,
    *,
    today: date,
    calendar: WorkingCalendar | None = None,
    lang: str = "vi",
    workers: int = 2,
) -> dict[str, Any]:
    """Every indicator of the plans for ``unit`` (commune, province or None: the country)
    between ``start`` and ``end`` (business dates, both included), with the targets of the
    reporting year, the monthly trend and the drill key of every figure (see the module
    docstring). ``today`` decides which open deadlines are overdue. On PostgreSQL the
    queries run on ``workers`` connections at once, all reading one snapshot (see
    :func:`_gather`)."""
    from workflow import targets as targets_mod

    calendar = calendar or WorkingCalendar()
    q = _Scope(session, registry, unit, start, end, today)
    got = _gather(q, calendar, workers)
    n_months = len(q.months)
    labels = _group_labels(registry, lang)

    # -- people under management: one pass over the moves since the start of the period
    entries = [Counter[str]() for _ in range(n_months + 1)]
    exits = [Counter[str]() for _ in range(n_months + 1)]
    actions: Counter[str] = Counter()
    opened = [0] * n_months
    for bucket, action, ref, frm, to, n in got["changes"]:
        g_to, g_from = q.groups.group(ref, to), q.groups.group(ref, frm)
        if g_to != g_from:
            entries[bucket][g_to] += n
            exits[bucket][g_from] += n
        if bucket < n_months:
            actions[action] += n
            if action == OPENED:
                opened[bucket] += n
    now_in, n_open = got["current"]
    level = dict(now_in)
    at: list[dict[str, int]] = [{} for _ in range(n_months + 1)]  # at bound b
    for b in range(n_months, -1, -1):
        for g in set(level) | set(entries[b]) | set(exits[b]):
            level[g] = level.get(g, 0) - entries[b][g] + exits[b][g]
        at[b] = dict(level)
    absent_at, absences, returns = got["absences"]
    for b, n in enumerate(absent_at):
        at[b][ABSENT] = n
    new = Counter[str]()
    ended = Counter[str]()
    for b in range(n_months):
        new.update(entries[b])
        ended.update(exits[b])
    new[ABSENT], ended[ABSENT] = sum(absences), sum(returns)
    groups = [
        {
            "group": g,
            "label": labels.get(g, g),
            "at_start": at[0].get(g, 0),
            "new": new[g],
            "ended": ended[g],
            "at_end": at[n_months].get(g, 0),
        }
        for g in REPORT_GROUPS
    ]
    trend = [
        {
            "month": m.key,
            "from": m.first.isoformat(),
            "to": m.last.isoformat(),
            "groups": {g: at[i + 1].get(g, 0) for g in REPORT_GROUPS},
            "total": sum(at[i + 1].get(g, 0) for g in STATE_GROUPS),
            "new_cases": opened[i],
        }
        for i, m in enumerate(q.months)
    ]

    # -- compulsory dossiers
    def total(keys: list[str]) -> int:
        return sum(actions.get(k, 0) for k in keys)

    days = got["dossier_days"]
    n_timed, days_total = sum(days.values()), sum(d * n for d, n in days.items())
    compulsory = {
        "dossiers_made": total(q.openings),
        "sent_to_court": total(_actions(SENT_TO_COURT)),
        "decided": total(_actions(DECIDED)),
        "rejected": total(_actions(REJECTED)),
        "decisions_timed": n_timed,
        "working_days_total": days_total,
        "avg_working_days": round(days_total / n_timed, 2) if n_timed else None,
        "max_working_days": max(days) if days else None,
    }

    # -- complete management dossier (snapshot of now)
    n_incomplete = got["incomplete"]
    dossier = {
        "cases": n_open,
        "complete": n_open - n_incomplete,
        "incomplete": n_incomplete,
        "share": _share(n_open - n_incomplete, n_open),
    }

    # -- support after rehab, family commitment at the end
    support = got["support"]
    support = {
        "finished": support[0],
        "supported": support[1],
        "unsupported": support[0] - support[1],
        "share": _share(support[1], support[0]),
        "target": SUPPORT_TARGET,
    }
    signed = got["commitment"]
    commitment = {
        "cases": signed[0],
        "signed": signed[1],
        "unsigned": signed[0] - signed[1],
        "share": _share(signed[1], signed[0]),
        "target": COMMITMENT_TARGET,
    }
    relapses = {
        "events": total(_actions(RELAPSE)),
        "cases": got["relapse_cases"],
    }

    # -- check-ins and deadlines
    done = got["check_ins_done"]
    per_key = got["deadlines"]
    check = per_key.get(CHECK_IN_DEADLINE, _empty_deadline())
    check_ins = {
        "done": done,
        "due": check["due"],
        "met_on_time": check["met_on_time"],
        "missed": check["overdue"],
    }
    agency_of = deadline_agencies(registry)
    agency_labels = _agency_labels(registry, lang)
    by_agency: dict[str, dict[str, int]] = {}
    for key, row in per_key.items():
        acc = by_agency.setdefault(agency_of.get(key, UNKNOWN_AGENCY), _empty_deadline())
        for k, v in row.items():
            acc[k] += v
    deadlines = [
        {"agency": a, "label": agency_labels.get(a, a), **by_agency[a]} for a in sorted(by_agency)
    ]

    report: dict[str, Any] = {
        "unit": unit,
        "unit_level": q.level,
        "unit_label": units.label(unit) if unit else "Toàn quốc",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "today": today.isoformat(),
        "year": reporting_year(end),
        "groups": groups,
        "compulsory": compulsory,
        "management_dossier": dossier,
        "support": support,
        "family_commitment": commitment,
        "relapses": relapses,
        "check_ins": check_ins,
        "deadlines": deadlines,
        "trend": trend,
    }
    report["targets"] = targets_mod.plan_vs_actual(session, registry, report, lang=lang)
    for row in report["targets"]:  # the unit's own share targets, when set
        section = {"support_share": "support", "family_commitment_share": "family_commitment"}
        if row["indicator"] in section:
            report[section[row["indicator"]]]["target"] = round(row["plan"] / 100, 4)
    report["drill"] = drill_keys(report)
    return report


def _tune(session: Session) -> None:
    """PostgreSQL settings for the report's transaction only: no JIT (compiling these wide
    CASE/EXISTS expressions to machine code costs seconds and saves nothing here), UTC as the
    session zone (see :func:`_closed_late`), memory for the hash joins of a whole country."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL timezone = 'UTC'"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))


def _with_and_without(session: Session, q: _Scope, pop: Select, key: str) -> tuple[int, int]:
    """(cases of ``pop``, those with activity ``key`` before the end of the period)."""
    sub = pop.subquery()
    has = q.had_activity(key)
    n, n_with = session.execute(
        select(func.count(), func.count(has.c.case_id))
        .select_from(sub)
        .outerjoin(has, has.c.case_id == sub.c.case_id)
    ).one()
    return int(n), int(n_with)


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


# ---------------------------------------------------------------------------- drill keys
_DERIVED = {
    "compulsory": {
        "working_days_total": "decisions_timed",
        "avg_working_days": "decisions_timed",
        "max_working_days": "decisions_timed",
    },
    "management_dossier": {"share": "cases"},
    "support": {"share": "finished", "target": None},
    "family_commitment": {"share": "cases", "target": None},
}
_SECTIONS = ("compulsory", "management_dossier", "support", "family_commitment", "relapses")


def drill_keys(report: dict[str, Any]) -> dict[str, str | None]:
    """Figure path → drill key, for every figure of ``report``. A count's key is its own path
    (the drill lists exactly that many rows); a derived figure (share, average) points to the
    rows it is computed over; a plan has none."""
    keys: dict[str, str | None] = {}
    for g in report["groups"]:
        for col in GROUP_COLUMNS:
            keys[f"groups.{g['group']}.{col}"] = f"groups.{g['group']}.{col}"
    for section in _SECTIONS:
        derived = _DERIVED.get(section, {})
        for k in report[section]:
            if k in derived:
                target = derived[k]
                keys[f"{section}.{k}"] = f"{section}.{target}" if target else None
            else:
                keys[f"{section}.{k}"] = f"{section}.{k}"
    for k in report["check_ins"]:
        keys[f"check_ins.{k}"] = f"check_ins.{k}"
    for row in report["deadlines"]:
        for outcome in DEADLINE_OUTCOMES:
            path = f"deadlines.{row['agency']}.{outcome}"
            keys[path] = path
    for m in report["trend"]:
        for g in REPORT_GROUPS:
            keys[f"trend.{m['month']}.{g}"] = f"trend.{m['month']}.{g}"
        for k in ("total", "new_cases"):
            keys[f"trend.{m['month']}.{k}"] = f"trend.{m['month']}.{k}"
    for t in report.get("targets", []):
        keys[f"targets.{t['indicator']}.plan"] = None
        keys[f"targets.{t['indicator']}.actual"] = t["drill"]
        keys[f"targets.{t['indicator']}.achieved"] = t["drill"]
    return keys


def figure_value(report: dict[str, Any], path: str) -> Any:
    """The value at ``path`` (as in ``report["drill"]``) of ``report``."""
    parts = path.split(".")
    if parts[0] in ("groups", "deadlines", "targets"):
        field = {"groups": "group", "deadlines": "agency", "targets": "indicator"}[parts[0]]
        row = next(r for r in report[parts[0]] if r[field] == parts[1])
        return row[parts[2]]
    if parts[0] == "trend":
        m = next(r for r in report["trend"] if r["month"] == parts[1])
        return m["groups"][parts[2]] if parts[2] in m["groups"] else m[parts[2]]
    return report[parts[0]][parts[1]]


# ---------------------------------------------------------------------------- drill-down
def may_drill(actor: Actor, registry: Registry) -> bool:
    """Who may list the cases behind a figure: the system and the state agencies (an agency
    type with a level in the definitions), not families or mentors (level "none")."""
    if actor.is_system:
        return True
    for d in registry.all():
        agency = d.agency_types.get(actor.agency_type)
        if agency is not None:
            return agency.level != "none"
    return False


def _bad(figure: str, why: str = "unknown figure") -> ValidationFailed:
    return ValidationFailed(f"unknown figure {figure!r}", errors={"figure": [why]})


def population(q: _Scope, figure: str) -> Select:
    """The rows behind ``figure`` (a drill key): columns case_id, ref, at, detail."""
    parts = figure.split(".")
    section = parts[0]
    if section == "groups" and len(parts) == 3 and parts[2] in GROUP_COLUMNS:
        g, col = parts[1], parts[2]
        if g not in q.groups.members and g != ABSENT:
            raise _bad(figure, "unknown group")
        if col == "at_start":
            return q.group_at(q.t0, (g,))
        if col == "at_end":
            return q.group_at(q.t1, (g,))
        return q.moves(g, entering=col == "new")
    if section == "trend" and len(parts) == 3:
        idx = next((i for i, m in enumerate(q.months) if m.key == parts[1]), None)
        if idx is None:
            raise _bad(figure, "month outside the period")
        m, t = q.months[idx], q.bounds[idx + 1]
        if parts[2] == "new_cases":
            return q.opened_in(m.first, m.last)
        if parts[2] == "total":
            return q.group_at(t, STATE_GROUPS)
        if parts[2] in REPORT_GROUPS:
            return q.group_at(t, (parts[2],))
        raise _bad(figure)
    if section == "deadlines" and len(parts) == 3 and parts[2] in DEADLINE_OUTCOMES:
        agency_of = deadline_agencies(q.registry)
        if parts[1] == UNKNOWN_AGENCY:
            keys = Deadline.key.not_in(sorted(agency_of)) if agency_of else literal(True)
        else:
            keys = Deadline.key.in_(sorted(k for k, a in agency_of.items() if a == parts[1]))
        return q.deadlines(keys, parts[2])
    if section == "targets" and len(parts) == 3 and parts[2] == "actual":
        from workflow import targets as targets_mod

        return targets_mod.actual_population(q, parts[1], figure)
    if len(parts) != 2:
        raise _bad(figure)
    key = parts[1]
    ev = AuditEvent
    simple: dict[str, dict[str, Any]] = {
        "compulsory": {
            "dossiers_made": lambda: q.events(ev.action.in_(q.openings)),
            "sent_to_court": lambda: q.events(ev.action.in_(_actions(SENT_TO_COURT))),
            "decided": lambda: q.events(ev.action.in_(_actions(DECIDED))),
            "rejected": lambda: q.events(ev.action.in_(_actions(REJECTED))),
            "decisions_timed": q.timed_decisions,
        },
        "management_dossier": {
            "cases": lambda: q.open_cases("cases"),
            "complete": lambda: q.open_cases("complete"),
            "incomplete": lambda: q.open_cases("incomplete"),
        },
        "support": {
            "finished": q.finished,
            "supported": lambda: q.with_activity(q.finished(), SUPPORT_ACTIVITY, True),
            "unsupported": lambda: q.with_activity(q.finished(), SUPPORT_ACTIVITY, False),
        },
        "family_commitment": {
            "cases": lambda: q.group_at(q.t1, COMMITMENT_GROUPS),
            "signed": lambda: q.with_activity(
                q.group_at(q.t1, COMMITMENT_GROUPS), COMMITMENT_ACTIVITY, True
            ),
            "unsigned": lambda: q.with_activity(
                q.group_at(q.t1, COMMITMENT_GROUPS), COMMITMENT_ACTIVITY, False
            ),
        },
        "relapses": {
            "events": lambda: q.events(ev.action.in_(_actions(RELAPSE))),
            "cases": lambda: q.events(ev.action.in_(_actions(RELAPSE)), distinct_cases=True),
        },
        "check_ins": {
            "done": lambda: q.activities(CHECK_IN_ACTIVITY),
            "due": lambda: q.deadlines(Deadline.key == CHECK_IN_DEADLINE, "due"),
            "met_on_time": lambda: q.deadlines(Deadline.key == CHECK_IN_DEADLINE, "met_on_time"),
            "missed": lambda: q.deadlines(Deadline.key == CHECK_IN_DEADLINE, "overdue"),
        },
    }
    make = simple.get(section, {}).get(key)
    if make is None:
        raise _bad(figure)
    return make()


def _encode(case_id: int, ref: int) -> str:
    raw = json.dumps([case_id, ref]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, int]:
    try:
        value = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
        case_id, ref = value
        if not isinstance(case_id, int) or not isinstance(ref, int):
            raise ValueError
        return case_id, ref
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ValidationFailed("invalid cursor", errors={"cursor": ["invalid cursor"]}) from None


def drill(
    session: Session,
    registry: Registry,
    unit: str | None,
    start: date,
    end: date,
    figure: str,
    *,
    today: date,
    actor: Actor,
    routed_states: frozenset[str] = frozenset(),
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The rows behind ``figure`` of the report of ``unit`` and the period, one page at a time
    (newest case first): ``{"figure", "count", "items", "next"}``; ``count`` equals the figure.

    A row is a case (id, number, state, group, version, unit) and, for figures that count
    events, deadlines or activities, the event/deadline/activity itself (``ref``, ``at``,
    ``detail``), so a case may appear more than once. The subject's name is given only for the
    cases the actor may open (the rule of the case list); other personal data never."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("invalid limit", errors={"limit": [f"1 to {MAX_PAGE}"]})
    q = _Scope(session, registry, unit, start, end, today)
    _tune(session)
    pop = population(q, figure).subquery()
    count = int(session.execute(select(func.count()).select_from(pop)).scalar_one())
    visible = _visible(actor, routed_states)
    stmt = (
        select(
            pop.c.case_id,
            pop.c.ref,
            pop.c.at,
            pop.c.detail,
            Case.number,
            Case.state,
            Case.group,
            Case.version,
            Case.definition_key,
            Case.definition_version,
            Case.unit_code,
            Case.province_code,
            case((visible, Subject.full_name), else_=null()).label("full_name"),
        )
        .join(Case, Case.id == pop.c.case_id)
        .join(Subject, Subject.id == Case.subject_id)
    )
    if cursor:
        after_case, after_ref = _decode(cursor)
        stmt = stmt.where(
            or_(
                pop.c.case_id < after_case,
                and_(pop.c.case_id == after_case, pop.c.ref < after_ref),
            )
        )
    rows = session.execute(
        stmt.order_by(pop.c.case_id.desc(), pop.c.ref.desc()).limit(limit + 1)
    ).all()
    nxt = _encode(rows[limit - 1].case_id, rows[limit - 1].ref) if len(rows) > limit else None
    items = [
        {
            "id": r.case_id,
            "number": r.number,
            "state": r.state,
            "group": r.group,
            "version": r.version,
            "definition": {"key": r.definition_key, "version": r.definition_version},
            "unit_code": r.unit_code,
            "province_code": r.province_code,
            "full_name": r.full_name,
            "ref": r.ref or None,
            "at": _as_utc(r.at),
            "detail": r.detail,
        }
        for r in rows[:limit]
    ]
    return {"figure": figure, "count": count, "items": items, "next": nxt}


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    return _parse_utc(value)


def _visible(actor: Actor, routed_states: frozenset[str]) -> Any:
    """SQL: the actor may open the case (the rule of the case list, workflow.queries)."""
    if actor.is_system:
        return literal(True)
    acted = exists().where(AuditEvent.case_id == Case.id, AuditEvent.agency_id == actor.agency_id)
    return or_(
        Case.unit_code.in_(sorted(actor.units)),
        and_(
            Case.province_code.in_(sorted(actor.units)),
            or_(Case.state.in_(sorted(routed_states)), acted),
        ),
    )


def union(*pops: Select) -> Select:
    """The rows of several populations together (UNION ALL)."""
    sub = union_all(*pops).subquery()
    return select(sub.c.case_id, sub.c.ref, sub.c.at, sub.c.detail)
