"""Read models of the staff pages: the worklist, the case timeline, the inbox, admin lists.

Everything here is a query over the tables the :class:`~workflow.service.CaseService` writes,
limited to what the actor may see with the same rule as the case list
(:func:`workflow.queries.visible_to`). The few writes (an inbox item read, a dead delivery put
back in the retry queue) are one-row updates with no rule of the process behind them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from workflow.actors import Actor, actor_from_user
from workflow.calendar import business_date
from workflow.db import read_only
from workflow.definition import Definition
from workflow.errors import NotFound, NotPermitted
from workflow.model import (
    AccessLog,
    Agency,
    ApiToken,
    Case,
    Deadline,
    Delivery,
    IdempotencyRecord,
    InboxItem,
    User,
)
from workflow.queries import visible_to
from workflow.service import CaseService


@dataclass(frozen=True)
class WebUser:
    """A signed-in person: the actor plus what the pages show about them."""

    actor: Actor
    full_name: str
    agency_name: str
    fingerprint: str  # changes when the password changes: older sessions end


def password_fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Count:
    key: str
    count: int


@dataclass(frozen=True)
class DeadlineRow:
    case_id: int
    case_number: str
    definition_key: str
    definition_version: int
    state: str
    key: str
    due_on: date
    overdue: bool
    working_days_left: int
    escalation_level: int


@dataclass(frozen=True)
class Summary:
    by_state: list[Count]
    by_group: list[Count]
    open_cases: int
    closed_cases: int
    deadlines: list[DeadlineRow]  # overdue first, then by due date
    overdue: int
    check_ins: list[DeadlineRow]  # due by the end of this week
    week: tuple[date, date]
    unread: int
    latest_inbox: list[InboxItem]


@dataclass(frozen=True)
class TimelineEntry:
    seq: int
    at: datetime
    actor: str
    actor_name: str
    agency_type: str | None
    agency_name: str
    role: str | None
    action: str
    from_state: str | None
    to_state: str | None
    definition: str | None
    documents: list[dict[str, Any]]
    extra: dict[str, Any]


class Worklist:
    """Queries of the staff pages, over the service's sessions, registry and calendar."""

    def __init__(self, service: CaseService) -> None:
        self.service = service
        self.session_factory = service.session_factory

    # ------------------------------------------------------------------ who is signed in
    def web_user(self, user_id: int) -> WebUser | None:
        """The active user with this id, or None."""
        with read_only(), self.session_factory() as s:
            user = s.get(User, user_id)
            if user is None or not user.active:
                return None
            return WebUser(
                actor_from_user(user),
                user.full_name or user.username,
                user.agency.name,
                password_fingerprint(user.password_hash),
            )

    def already_done(self, actor: Actor, idempotency_key: str) -> bool:
        """Whether a command of this actor with this idempotency key succeeded already (a
        form sent twice: its uploads are not made twice)."""
        with read_only(), self.session_factory() as s:
            found = s.get(IdempotencyRecord, (actor.user_id or 0, idempotency_key))
            return found is not None

    def user_id_of(self, username: str) -> int | None:
        with read_only(), self.session_factory() as s:
            return s.scalar(select(User.id).where(User.username == username))

    # ------------------------------------------------------------------ worklist
    def _visible(self, actor: Actor) -> Any:
        return visible_to(actor, self.service.routed_states(actor.agency_type))

    def _deadline_keys(self, agency_type: str) -> set[str]:
        """Deadlines an agency type can meet, in any loaded definition."""
        keys: set[str] = set()
        for d in self.service.registry.all():
            keys |= {k for k in d.deadlines if agency_type in d.deadline_actors(k)}
        return keys

    def _scheduled_keys(self) -> set[str]:
        return {s.key for d in self.service.registry.all() for s in d.scheduled}

    def _deadline_rows(self, s: Session, stmt: Any, today: date) -> list[DeadlineRow]:
        calendar = self.service.calendar
        return [
            DeadlineRow(
                case_id=c.id,
                case_number=c.number or str(c.id),
                definition_key=c.definition_key,
                definition_version=c.definition_version,
                state=c.state,
                key=dl.key,
                due_on=dl.due_on,
                overdue=dl.due_on < today,
                working_days_left=calendar.working_days_between(today, dl.due_on),
                escalation_level=dl.escalation_level,
            )
            for dl, c in s.execute(stmt).all()
        ]

    def summary(self, actor: Actor, now: datetime, *, limit: int = 20) -> Summary:
        """Counts per state and reporting group, my agency's deadlines (overdue first), the
        check-ins due this week and the inbox, for the cases the actor may see."""
        today = business_date(now)
        monday = today - timedelta(days=today.weekday())
        sunday = monday + timedelta(days=6)
        visible = self._visible(actor)
        with read_only(), self.session_factory() as s:
            rows = s.execute(
                select(Case.state, Case.group, Case.closed_at.is_(None), func.count())
                .where(visible)
                .group_by(Case.state, Case.group, Case.closed_at.is_(None))
            ).all()
            by_state: dict[str, int] = {}
            by_group: dict[str, int] = {}
            open_cases = closed_cases = 0
            for state, group, is_open, n in rows:
                if not is_open:
                    closed_cases += n
                    continue
                open_cases += n
                by_state[state] = by_state.get(state, 0) + n
                by_group[group] = by_group.get(group, 0) + n
            base = (
                select(Deadline, Case)
                .join(Case, Case.id == Deadline.case_id)
                .where(visible, Deadline.status == "open")
            )
            mine = base.where(Deadline.key.in_(self._deadline_keys(actor.agency_type)))
            deadlines = self._deadline_rows(
                s, mine.order_by(Deadline.due_on, Deadline.id).limit(limit), today
            )
            overdue = s.scalar(
                select(func.count()).select_from(mine.where(Deadline.due_on < today).subquery())
            )
            check_ins = self._deadline_rows(
                s,
                base.where(Deadline.key.in_(self._scheduled_keys()), Deadline.due_on <= sunday)
                .order_by(Deadline.due_on, Deadline.id)
                .limit(limit),
                today,
            )
            unread, latest = self._inbox_head(s, actor)
        return Summary(
            by_state=[Count(k, v) for k, v in sorted(by_state.items(), key=lambda kv: -kv[1])],
            by_group=[Count(k, v) for k, v in sorted(by_group.items(), key=lambda kv: -kv[1])],
            open_cases=open_cases,
            closed_cases=closed_cases,
            deadlines=deadlines,
            overdue=overdue or 0,
            check_ins=check_ins,
            week=(monday, sunday),
            unread=unread,
            latest_inbox=latest,
        )

    # ------------------------------------------------------------------ case page
    def timeline(
        self, case_id: int, actor: Actor, now: datetime | None = None
    ) -> list[TimelineEntry]:
        """The case's audit events, oldest first, with the names of the people and agencies.
        Who may see which events is the service's rule (a commune that handed the case over
        sees its history up to the hand-over); with ``now`` the read is in the access log."""
        events = self.service.events(case_id, actor, now)
        user_ids = {e.actor_id for e in events if e.actor_id is not None}
        agency_ids = {e.agency_id for e in events if e.agency_id is not None}
        with read_only(), self.session_factory() as s:
            people = dict(
                s.execute(select(User.id, User.full_name).where(User.id.in_(user_ids))).all()
            )
            agencies = dict(
                s.execute(select(Agency.id, Agency.name).where(Agency.id.in_(agency_ids))).all()
            )
        return [
            TimelineEntry(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                actor_name=people.get(e.actor_id) or e.actor,
                agency_type=e.agency_type,
                agency_name=agencies.get(e.agency_id, ""),
                role=e.role,
                action=e.action,
                from_state=e.from_state,
                to_state=e.to_state,
                definition=e.definition,
                documents=list(e.documents or []),
                extra=dict(e.extra or {}),
            )
            for e in events
        ]

    def definition_for(self, case_id: int, actor: Actor) -> Definition:
        """The definition version a case the actor may see follows (no access-log entry: it
        reads no personal data)."""
        svc = self.service
        with svc.uow(read_only=True) as uow:
            return svc.definition_of(svc._visible_case(uow, case_id, actor, lock=False))

    # ------------------------------------------------------------------ inbox
    @staticmethod
    def _inbox_head(s: Session, actor: Actor, n: int = 5) -> tuple[int, list[InboxItem]]:
        if actor.agency_id is None:
            return 0, []
        unread = s.scalar(
            select(func.count())
            .select_from(InboxItem)
            .where(InboxItem.agency_id == actor.agency_id, InboxItem.read_at.is_(None))
        )
        latest = list(
            s.execute(
                select(InboxItem)
                .where(InboxItem.agency_id == actor.agency_id)
                .order_by(InboxItem.id.desc())
                .limit(n)
            ).scalars()
        )
        return unread or 0, latest

    def unread(self, actor: Actor) -> int:
        if actor.agency_id is None:
            return 0
        with read_only(), self.session_factory() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(InboxItem)
                    .where(InboxItem.agency_id == actor.agency_id, InboxItem.read_at.is_(None))
                )
                or 0
            )

    def inbox(
        self, actor: Actor, *, unread_only: bool = False, before: int | None = None, limit: int = 50
    ) -> tuple[list[InboxItem], int | None]:
        """One page of the agency's inbox, newest first, and the id to continue before."""
        if actor.agency_id is None:
            return [], None
        with read_only(), self.session_factory() as s:
            stmt = select(InboxItem).where(InboxItem.agency_id == actor.agency_id)
            if unread_only:
                stmt = stmt.where(InboxItem.read_at.is_(None))
            if before is not None:
                stmt = stmt.where(InboxItem.id < before)
            rows = list(s.execute(stmt.order_by(InboxItem.id.desc()).limit(limit + 1)).scalars())
        more = rows[limit - 1].id if len(rows) > limit else None
        return rows[:limit], more

    def mark_read(self, actor: Actor, item_id: int | None, now: datetime) -> int:
        """Mark one item (or, with ``item_id=None``, every unread item) of the actor's agency
        read; returns how many changed."""
        if actor.agency_id is None:
            raise NotFound("no inbox")
        with self.session_factory() as s:
            stmt = update(InboxItem).where(
                InboxItem.agency_id == actor.agency_id, InboxItem.read_at.is_(None)
            )
            if item_id is not None:
                item = s.get(InboxItem, item_id)
                if item is None or item.agency_id != actor.agency_id:
                    raise NotFound(f"inbox item {item_id} not found")
                stmt = stmt.where(InboxItem.id == item_id)
            n = s.execute(stmt.values(read_at=now, read_by=actor.user_id)).rowcount
            s.commit()
            return n or 0

    # ------------------------------------------------------------------ administration
    @staticmethod
    def _admin(actor: Actor) -> None:
        if not actor.is_admin:
            raise NotPermitted("only administrators may do this")

    def users(self, actor: Actor) -> list[User]:
        self._admin(actor)
        with read_only(), self.session_factory() as s:
            return list(s.execute(select(User).order_by(User.username)).scalars())

    def agencies(self, actor: Actor) -> list[tuple[Agency, int]]:
        """Every agency with its number of users."""
        self._admin(actor)
        with read_only(), self.session_factory() as s:
            counts = dict(
                s.execute(select(User.agency_id, func.count()).group_by(User.agency_id)).all()
            )
            agencies = list(s.execute(select(Agency).order_by(Agency.type, Agency.code)).scalars())
            return [(a, counts.get(a.id, 0)) for a in agencies]

    def tokens(self, actor: Actor, limit: int = 200) -> list[ApiToken]:
        self._admin(actor)
        with read_only(), self.session_factory() as s:
            return list(
                s.execute(select(ApiToken).order_by(ApiToken.id.desc()).limit(limit)).scalars()
            )

    def deliveries(
        self, actor: Actor, status: str = "dead", limit: int = 200
    ) -> list[tuple[Delivery, str]]:
        """Deliveries of a status (default: the dead letters) with their agency's name."""
        self._admin(actor)
        with read_only(), self.session_factory() as s:
            return [
                (d, name)
                for d, name in s.execute(
                    select(Delivery, Agency.name)
                    .join(Agency, Agency.id == Delivery.agency_id)
                    .where(Delivery.status == status)
                    .order_by(Delivery.id.desc())
                    .limit(limit)
                ).all()
            ]

    def retry_delivery(self, actor: Actor, delivery_id: int, now: datetime) -> None:
        """Put a dead delivery back in the retry queue with fresh attempts; the next sweep
        re-enqueues it (as ``rehabflow outbox retry --dead`` does)."""
        self._admin(actor)
        with self.session_factory() as s:
            d = s.get(Delivery, delivery_id)
            if d is None:
                raise NotFound(f"delivery {delivery_id} not found")
            if d.status == "dead":
                d.status, d.attempts, d.next_attempt_at, d.updated_at = "retry", 0, now, now
                s.commit()

    def access_log(
        self, actor: Actor, case_id: int | None = None, limit: int = 200
    ) -> list[tuple[AccessLog, str, str | None]]:
        """The service's access log with the reader's username and the case number."""
        rows = self.service.access_log(actor, case_id, limit)
        user_ids = {r.user_id for r in rows}
        case_ids = {r.case_id for r in rows}
        with read_only(), self.session_factory() as s:
            names = dict(
                s.execute(select(User.id, User.username).where(User.id.in_(user_ids))).all()
            )
            numbers = dict(
                s.execute(select(Case.id, Case.number).where(Case.id.in_(case_ids))).all()
            )
        return [(r, names.get(r.user_id, str(r.user_id)), numbers.get(r.case_id)) for r in rows]
