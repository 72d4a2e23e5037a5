"""Read models: the case list with filters and keyset pagination (indexed columns only)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import and_, exists, false, or_, select
from sqlalchemy.orm import Session, contains_eager
from sqlalchemy.sql.elements import ColumnElement

from workflow import units
from workflow.actors import Actor
from workflow.errors import ValidationFailed
from workflow.model import AuditEvent, Case, Deadline, Subject

MAX_LIMIT = 200


@dataclass(frozen=True)
class CaseFilter:
    state: str | None = None
    group: str | None = None
    unit: str | None = None
    overdue: bool = False
    q: str | None = None
    national_id_hash: str | None = None
    by_person: bool = True  # q also matches names (False: case numbers only)


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
        if not isinstance(value, int):
            raise ValueError
        return value
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise ValidationFailed("invalid cursor", errors={"cursor": ["invalid cursor"]}) from None


def visible_to(actor: Actor, routed_states: frozenset[str]) -> ColumnElement[bool]:
    """The cases a (non-system) actor may see, as a WHERE clause on ``Case``: in the communes
    the agency covers, all their cases; in a whole province, the cases routed to the agency
    (their state concerns it, or it has acted on them).

    A case's ``unit_code`` is a commune's code and its ``province_code`` a province's, so each
    of the actor's codes is matched against its own level's column only: a commune agency's
    clause is one ``unit_code IN (…)`` that an index can serve, not an ``OR`` the database
    must test row by row (``CaseService._check_visible`` is the same rule for one case)."""
    communes = sorted(code for code in actor.units if units.is_commune(code))
    provinces = sorted(actor.units.difference(communes))
    clauses: list[ColumnElement[bool]] = []
    if communes:
        clauses.append(Case.unit_code.in_(communes))
    if provinces:
        acted = exists().where(
            AuditEvent.case_id == Case.id, AuditEvent.agency_id == actor.agency_id
        )
        routed = or_(Case.state.in_(routed_states), acted)
        clauses.append(and_(Case.province_code.in_(provinces), routed))
    return or_(false(), *clauses)


def list_cases(
    session: Session,
    actor: Actor,
    f: CaseFilter,
    today: date,
    *,
    limit: int = 50,
    cursor: str | None = None,
    fold: Any = None,
    routed_states: frozenset[str] = frozenset(),
) -> tuple[list[Case], str | None]:
    """Cases the actor may see, newest first (by id, a stable order), one page at a time.

    The page's ids are chosen first, by a subquery that reads the filtered columns only, then
    its cases and their subjects are read by id. Asked for the cases (and subjects) directly,
    PostgreSQL walks the table backwards by id until a page matches, expecting the matching
    rows to be spread evenly by id: a commune whose newest thousands of cases are in other
    states than the one asked for makes it read all of them (229,854 rows for a page, 50 ms,
    on the benchmark database; bench/README.md, (13)). The ids alone come from
    ``ix_cases_unit_state`` or ``ix_cases_unit_group`` (``unit_code``, the state or group,
    ``id``), already in order, and the planner sees that this costs no table rows."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("invalid limit", errors={"limit": [f"1 to {MAX_LIMIT}"]})
    ids = select(Case.id)
    if not actor.is_system:
        ids = ids.where(visible_to(actor, routed_states))
    if f.state:
        ids = ids.where(Case.state == f.state)
    if f.group:
        ids = ids.where(Case.group == f.group)
    if f.unit:
        ids = ids.where(or_(Case.unit_code == f.unit, Case.province_code == f.unit))
    if f.overdue:
        ids = ids.where(
            exists().where(
                Deadline.case_id == Case.id, Deadline.status == "open", Deadline.due_on < today
            )
        )
    if f.q:
        text = f.q.strip()
        conds = [Case.number == text]
        if fold is not None and text and f.by_person:
            conds.append(Subject.full_name_folded.like(f"%{fold(text)}%"))
        if f.national_id_hash:
            conds.append(Subject.national_id_hash == f.national_id_hash)
        if len(conds) > 1:  # the person's columns: the subject joined in the subquery too
            ids = ids.join(Case.subject)
        ids = ids.where(or_(*conds))
    if cursor:
        ids = ids.where(Case.id < decode_cursor(cursor))
    # its own FROM, never correlated to the outer query's cases (a page, not a row test)
    page = ids.order_by(Case.id.desc()).limit(limit + 1).correlate(None).scalar_subquery()
    # the subject of each case from the join, not a second query
    stmt = select(Case).join(Case.subject).options(contains_eager(Case.subject))
    rows = list(session.execute(stmt.where(Case.id.in_(page)).order_by(Case.id.desc())).scalars())
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
