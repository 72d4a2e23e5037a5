"""Moving running cases from one version of a definition to a newer one.

The plan lives in the newer definition (``migrations:``, see docs/definitions.md): every state of
the older version maps to a state of the newer one or is declared unmapped, with the reason.
:meth:`Migrator.assess` works out, for one case, where it goes, which open deadlines are
recomputed, kept or cancelled, which schedules start, and which documents the new version newly
requires. A dry run aggregates the assessments; a real run moves each case in its own
transaction, audited as a ``migration`` event that names the old and the new version (so both
are in the hash chain). A run is resumable: it only ever selects cases still on the old
version, and each case is re-checked under its row lock, so a case moves exactly once however
often a run is interrupted and started again. A case never changes version any other way.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from workflow import deadlines, rollup
from workflow.actors import SYSTEM, Actor, actor_for
from workflow.calendar import business_date
from workflow.definition import Definition, MigrationPlan, Notification
from workflow.errors import NotFound, NotPermitted, ValidationFailed
from workflow.model import Case, Deadline, Document, MigrationRun
from workflow.service import CaseService
from workflow.uow import UnitOfWork

BATCH = 500
WHERE_KEYS = ("state", "unit")


@dataclass(frozen=True)
class DeadlineChange:
    key: str
    policy: str  # recompute | keep | cancel | start
    old_due: date | None
    new_due: date | None
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.old_due != self.new_due


@dataclass
class Assessment:
    """What migrating one case would do."""

    case_id: int
    number: str | None
    from_state: str
    to_state: str | None
    reason: dict[str, str] | None = None  # why it cannot move (vi/en), None when it can
    deadlines: list[DeadlineChange] = field(default_factory=list)
    new_documents: list[str] = field(default_factory=list)  # newly required, not attached

    @property
    def movable(self) -> bool:
        return self.to_state is not None and self.reason is None


@dataclass
class RunResult:
    run_id: int
    moved: int
    skipped: int
    status: str
    skipped_cases: list[dict[str, Any]] = field(default_factory=list)


def parse_where(items: list[str] | tuple[str, ...] | dict | None) -> dict[str, list[str]]:
    """``["state=a,b", "unit=17662"]`` (or a dict) -> ``{"state": [a, b], "unit": [17662]}``."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else [i.partition("=")[::2] for i in items]
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        values = value if isinstance(value, list) else str(value).split(",")
        values = [str(v).strip() for v in values if str(v).strip()]
        if key not in WHERE_KEYS or not values:
            raise ValidationFailed(
                f"where: use {' or '.join(k + '=...' for k in WHERE_KEYS)}",
                errors={"where": [f"unknown or empty condition {key!r}"]},
            )
        out.setdefault(key, []).extend(values)
    return out


def parse_ref(ref: str) -> tuple[str, int]:
    key, _, version = ref.partition("@")
    if not key or not version.isdigit():
        raise ValidationFailed(
            f"{ref!r} is not a definition reference like drug_rehab@1",
            errors={"ref": ["use key@version"]},
        )
    return key, int(version)


class Migrator:
    def __init__(self, service: CaseService) -> None:
        self.service = service
        self.registry = service.registry
        self.calendar = service.calendar

    # -- the plan --------------------------------------------------------------------------
    def plan(self, source: str, target: str) -> tuple[MigrationPlan, Definition, Definition]:
        key, old_v = parse_ref(source)
        tkey, new_v = parse_ref(target)
        if tkey != key:
            raise ValidationFailed(
                "a case can only move between versions of its own definition",
                errors={"to": [f"must be {key}@N"]},
            )
        plan = self.registry.migration_plan(key, old_v, new_v)
        return plan, self.registry.get(key, old_v), self.registry.get(key, new_v)

    def _select(self, source: Definition, where: dict[str, list[str]]) -> Any:
        stmt = select(Case.id).where(
            Case.definition_key == source.key, Case.definition_version == source.version
        )
        if where.get("state"):
            stmt = stmt.where(Case.state.in_(where["state"]))
        if where.get("unit"):
            stmt = stmt.where(
                (Case.unit_code.in_(where["unit"])) | (Case.province_code.in_(where["unit"]))
            )
        return stmt

    def _ids(self, source: Definition, where: dict[str, list[str]]) -> Iterator[list[int]]:
        """Ids of the matching cases still on ``source``, in batches (keyset by id)."""
        after = 0
        while True:
            with self.service.uow(read_only=True) as uow:
                ids = list(
                    uow.session.execute(
                        self._select(source, where)
                        .where(Case.id > after)
                        .order_by(Case.id)
                        .limit(BATCH)
                    ).scalars()
                )
            if not ids:
                return
            yield ids
            after = ids[-1]

    def count(self, source: str, where: dict[str, list[str]] | None = None) -> int:
        key, version = parse_ref(source)
        src = self.registry.get(key, version)
        with self.service.uow(read_only=True) as uow:
            sub = self._select(src, where or {}).subquery()
            return int(uow.session.execute(select(func.count()).select_from(sub)).scalar_one())

    # -- one case --------------------------------------------------------------------------
    @staticmethod
    def _requirements(d: Definition, state: str) -> set[tuple[str, ...]]:
        return {req.any_of for t in d.transitions_from(state) for req in t.documents}

    def assess(
        self,
        session: Session,
        plan: MigrationPlan,
        source: Definition,
        target: Definition,
        case: Case,
        today: date,
        *,
        open_rows: list[Deadline] | None = None,
        have: set[str] | None = None,
    ) -> Assessment:
        """What moving ``case`` would do. ``open_rows`` (its open deadlines) and ``have`` (the
        types of its active documents) may be given, read for a whole batch at once."""
        out = Assessment(case.id, case.number, case.state, plan.states.get(case.state))
        if case.state in plan.unmapped:
            label = plan.unmapped[case.state].reason
            out.reason = {"vi": label.vi, "en": label.en}
            out.to_state = None
            return out
        if out.to_state is None:  # the loader makes plans complete; a guard all the same
            out.reason = {
                "vi": f"trạng thái {case.state} không có trong kế hoạch chuyển đổi",
                "en": f"state {case.state} is not in the migration plan",
            }
            return out
        fields = dict(case.fields or {})
        if open_rows is None:
            open_rows = list(
                session.execute(
                    select(Deadline).where(Deadline.case_id == case.id, Deadline.status == "open")
                ).scalars()
            )
        open_keys = set()
        for row in open_rows:
            open_keys.add(row.key)
            out.deadlines.append(self._deadline_change(plan, target, row, out.to_state, fields))
        for spec in target.scheduled:
            if out.to_state in spec.during and spec.key not in open_keys:
                due = deadlines.add(self.calendar, today, spec.duration, target, {}, fields)
                out.deadlines.append(DeadlineChange(spec.key, "start", None, due))
        if have is None:
            have = set(
                session.execute(
                    select(Document.type).where(
                        Document.case_id == case.id, Document.revoked_at.is_(None)
                    )
                ).scalars()
            )
        new_reqs = self._requirements(target, out.to_state) - self._requirements(source, case.state)
        out.new_documents = sorted(
            " | ".join(req) for req in new_reqs if not have.intersection(req)
        )
        return out

    def _deadline_change(
        self,
        plan: MigrationPlan,
        target: Definition,
        row: Deadline,
        to_state: str,
        fields: dict[str, Any],
    ) -> DeadlineChange:
        spec = target.deadlines.get(row.key)
        policy = plan.deadlines.get(row.key) or ("recompute" if spec else "cancel")
        if spec is not None and spec.during and to_state not in spec.during:
            return DeadlineChange(row.key, "cancel", row.due_on, None, "schedule of another state")
        if policy == "cancel" or spec is None:
            note = "" if spec else f"{target.ref} has no such deadline"
            return DeadlineChange(row.key, "cancel", row.due_on, None, note)
        if policy == "keep":
            return DeadlineChange(row.key, "keep", row.due_on, row.due_on)
        try:
            due = deadlines.add(self.calendar, row.anchor_on, spec.duration, target, {}, fields)
        except KeyError as missing:
            # the length came from the form that started it, which is not kept: keep the date
            return DeadlineChange(
                row.key, "keep", row.due_on, row.due_on, f"length from {missing.args[0]}"
            )
        return DeadlineChange(row.key, "recompute", row.due_on, due)

    # -- dry run ---------------------------------------------------------------------------
    def dry_run(
        self,
        source_ref: str,
        target_ref: str,
        where: dict[str, list[str]] | None,
        now: datetime,
        *,
        progress: Callable[[int], None] | None = None,
        limit_listed: int = 1000,
    ) -> dict[str, Any]:
        """What a run would do, changing nothing."""
        plan, source, target = self.plan(source_ref, target_ref)
        where = where or {}
        today = business_date(now)
        states: Counter[tuple[str, str | None]] = Counter()
        reasons: dict[str, dict[str, str]] = {}
        dl: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        docs: dict[tuple[str, str], int] = Counter()
        unmovable: list[dict[str, Any]] = []
        total = moving = 0
        for ids in self._ids(source, where):
            with self.service.uow(read_only=True) as uow:
                cases = uow.session.execute(select(Case).where(Case.id.in_(ids))).scalars()
                rows: dict[int, list[Deadline]] = defaultdict(list)
                for row in uow.session.execute(
                    select(Deadline).where(Deadline.case_id.in_(ids), Deadline.status == "open")
                ).scalars():
                    rows[row.case_id].append(row)
                have: dict[int, set[str]] = defaultdict(set)
                for case_id, doc_type in uow.session.execute(
                    select(Document.case_id, Document.type).where(
                        Document.case_id.in_(ids), Document.revoked_at.is_(None)
                    )
                ):
                    have[case_id].add(doc_type)
                for case in cases:
                    a = self.assess(
                        uow.session,
                        plan,
                        source,
                        target,
                        case,
                        today,
                        open_rows=rows[case.id],
                        have=have[case.id],
                    )
                    total += 1
                    states[(a.from_state, a.to_state)] += 1
                    if not a.movable:
                        reasons[a.from_state] = a.reason or {}
                        if len(unmovable) < limit_listed:
                            unmovable.append(
                                {
                                    "case_id": a.case_id,
                                    "number": a.number,
                                    "state": a.from_state,
                                    "reason": a.reason,
                                }
                            )
                        continue
                    moving += 1
                    for ch in a.deadlines:
                        c = dl[(ch.key, ch.policy)]
                        c["cases"] += 1
                        c["changed"] += int(ch.policy == "recompute" and ch.changed)
                    for code in a.new_documents:
                        docs[(a.to_state or "", code)] += 1
            if progress:
                progress(len(ids))
        unmovable.sort(key=lambda x: x["case_id"])
        return {
            "from": source.ref,
            "to": target.ref,
            "where": where,
            "cases": total,
            "movable": moving,
            "unmovable_count": total - moving,
            "states": [
                {
                    "from_state": f,
                    "to_state": t,
                    "cases": n,
                    "reason": reasons.get(f) if t is None else None,
                }
                for (f, t), n in sorted(states.items(), key=lambda x: (x[0][0], x[0][1] or ""))
            ],
            "deadlines": [
                {"key": k, "policy": p, "cases": c["cases"], "changed": c["changed"]}
                for (k, p), c in sorted(dl.items())
            ],
            "new_documents": [
                {"state": s, "document": code, "cases_missing": n}
                for (s, code), n in sorted(docs.items())
            ],
            "unmovable": unmovable,
        }

    # -- real run --------------------------------------------------------------------------
    def start(
        self,
        source_ref: str,
        target_ref: str,
        where: dict[str, list[str]] | None,
        actor: Actor,
        now: datetime,
        *,
        status: str = "running",
    ) -> int:
        """Record a run (``queued`` when a worker is to do it) and return its id; a run of the
        same plan and conditions that was interrupted is resumed instead of started again."""
        if not actor.is_admin:
            raise NotPermitted("only administrators may migrate cases")
        plan, source, target = self.plan(source_ref, target_ref)
        where = where or {}
        with self.service.uow() as uow:
            existing = uow.session.execute(
                select(MigrationRun)
                .where(
                    MigrationRun.definition_key == source.key,
                    MigrationRun.from_version == source.version,
                    MigrationRun.to_version == target.version,
                    MigrationRun.status.in_(("queued", "running", "interrupted")),
                )
                .order_by(MigrationRun.id.desc())
            ).scalars()
            for run in existing:
                if (run.criteria or {}) == where:
                    run.status = status
                    uow.commit()
                    return run.id
            run = MigrationRun(
                definition_key=source.key,
                from_version=source.version,
                to_version=target.version,
                criteria=where,
                actor=actor.username,
                status=status,
                started_at=now,
                moved=0,
                skipped=0,
            )
            uow.session.add(run)
            uow.commit()
            return run.id

    def run(
        self,
        run_id: int,
        actor: Actor,
        clock: Callable[[], datetime],
        *,
        progress: Callable[[int], None] | None = None,
        max_cases: int | None = None,
    ) -> RunResult:
        """Move every matching case still on the old version, one transaction each. With
        ``max_cases`` it stops early (the run stays ``running``; call again to go on)."""
        with self.service.uow(read_only=True) as uow:
            run = uow.session.get(MigrationRun, run_id)
            if run is None:
                raise ValidationFailed(f"no migration run {run_id}", errors={"run": ["unknown"]})
            source_ref = f"{run.definition_key}@{run.from_version}"
            target_ref = f"{run.definition_key}@{run.to_version}"
            where = dict(run.criteria or {})
        plan, source, target = self.plan(source_ref, target_ref)
        moved = skipped = 0
        skipped_cases: list[dict[str, Any]] = []
        done = 0
        for ids in self._ids(source, where):
            for case_id in ids:
                if max_cases is not None and done >= max_cases:
                    return RunResult(run_id, moved, skipped, "partial", skipped_cases)
                outcome = self._move_one(
                    run_id, case_id, plan, source, target, where, actor, clock()
                )
                done += 1
                if outcome is True:
                    moved += 1
                elif outcome is not None:
                    skipped += 1
                    if len(skipped_cases) < 1000:
                        skipped_cases.append(
                            {
                                "case_id": outcome.case_id,
                                "number": outcome.number,
                                "state": outcome.from_state,
                                "reason": outcome.reason,
                            }
                        )
                if progress:
                    progress(1)
        # the matching cases left on the old version are the ones that cannot move
        left = self.count(source.ref, where)
        with self.service.uow() as uow:
            run = uow.session.get(MigrationRun, run_id)
            run.status, run.finished_at, run.skipped = "finished", clock(), left
            uow.commit()
        return RunResult(run_id, moved, skipped, "finished", skipped_cases)

    def _move_one(
        self,
        run_id: int,
        case_id: int,
        plan: MigrationPlan,
        source: Definition,
        target: Definition,
        where: dict[str, list[str]],
        actor: Actor,
        now: datetime,
    ) -> bool | Assessment | None:
        """True: moved; an Assessment: cannot move (why); None: no longer matches (moved by an
        earlier or concurrent run, or changed state meanwhile)."""
        today = business_date(now)
        with self.service.uow() as uow:
            case = uow.get_case(case_id, for_update=True)
            if (
                case.definition_key != source.key
                or case.definition_version != source.version
                or (where.get("state") and case.state not in where["state"])
            ):
                return None
            a = self.assess(uow.session, plan, source, target, case, today)
            if not a.movable:
                return a
            self._apply(uow, target, case, a, now, today)
            event = self.service._audit_event(
                uow.session,
                actor,
                now,
                "migration",
                case,
                from_state=a.from_state,
                to_state=a.to_state,
                extra={
                    "migration": {
                        "from": source.ref,
                        "to": target.ref,
                        "run": run_id,
                        "deadlines": [
                            {
                                "key": ch.key,
                                "policy": ch.policy,
                                "old_due": ch.old_due.isoformat() if ch.old_due else None,
                                "new_due": ch.new_due.isoformat() if ch.new_due else None,
                            }
                            for ch in a.deadlines
                        ],
                        "new_documents": a.new_documents,
                    }
                },
            )
            responsible = target.states[a.to_state].responsible if a.to_state else None
            if responsible:
                self.service._outbox_message(
                    uow,
                    Notification((responsible,), "case_migrated"),
                    "migration",
                    case,
                    event,
                    now,
                    case.unit_code,
                    case.province_code,
                )
            uow.session.execute(
                update(MigrationRun)
                .where(MigrationRun.id == run_id)
                .values(moved=MigrationRun.moved + 1)
            )
            self.service._flush(uow, case.id)
            uow.commit()
            return True

    def _apply(
        self,
        uow: UnitOfWork,
        target: Definition,
        case: Case,
        a: Assessment,
        now: datetime,
        today: date,
    ) -> None:
        assert a.to_state is not None
        session = uow.session
        fields = dict(case.fields or {})
        if case.state != a.to_state:
            case.state_entered_at = now
        case.definition_version = target.version
        case.state = a.to_state
        case.group = target.states[a.to_state].group
        case.updated_at = now
        flag_modified(case, "updated_at")
        rows = {
            r.key: r
            for r in session.execute(
                select(Deadline).where(Deadline.case_id == case.id, Deadline.status == "open")
            ).scalars()
        }
        counters, place = rollup.pending(session), (case.unit_code, case.province_code)
        for ch in a.deadlines:
            if ch.policy == "start":
                spec = target.deadlines[ch.key]
                self.service._start_deadline(uow, target, spec, case, {}, fields, now, today)
                continue
            row = rows[ch.key]
            if ch.policy == "cancel":
                counters.closed(row.due_on, row.key, "cancelled", now, place)
                row.status, row.closed_at, row.closed_by = "cancelled", now, "migration"
                row.next_action_on = None
                continue
            spec = target.deadlines[ch.key]
            if ch.new_due and ch.new_due != row.due_on:  # the counter moves to the new day
                counters.deadline(row.due_on, row.key, "open", False, place, -1)
                counters.deadline(ch.new_due, row.key, "open", False, place)
            row.due_on = ch.new_due or row.due_on
            row.auto_transition = spec.on_due
            row.remind_on = None
            if spec.reminder is not None:
                n = deadlines.amount(spec.reminder.amount, target, {}, fields)
                row.remind_on = deadlines.before(self.calendar, row.due_on, n, spec.reminder.unit)
            level = min(row.escalation_level, len(spec.escalation))
            row.next_action_on = deadlines.next_action(
                self.calendar,
                spec,
                target,
                due=row.due_on,
                remind_on=row.remind_on,
                reminded=row.reminded_on is not None,
                level=level,
                case_fields=fields,
            )


def runs(service: CaseService, limit: int = 50) -> list[MigrationRun]:
    with service.uow(read_only=True) as uow:
        return list(
            uow.session.execute(
                select(MigrationRun).order_by(MigrationRun.id.desc()).limit(limit)
            ).scalars()
        )


def run_queued(service: CaseService, clock: Callable[[], datetime], max_cases: int = 2000) -> int:
    """Work on the runs queued through the API (the worker's tick does this every minute, a
    bounded amount each time: a run is resumable). Returns the number of cases looked at."""
    with service.uow(read_only=True) as uow:
        ids = list(
            uow.session.execute(
                select(MigrationRun.id)
                .where(MigrationRun.status == "queued")
                .order_by(MigrationRun.id)
            ).scalars()
        )
    done = 0
    migrator = Migrator(service)
    for run_id in ids:
        with service.uow(read_only=True) as uow:
            username = uow.session.get(MigrationRun, run_id).actor
            try:
                actor = actor_for(uow.session, username)
            except NotFound:
                actor = SYSTEM  # the administrator who asked has gone; the run says who
        result = migrator.run(run_id, actor, clock, max_cases=max_cases - done)
        done += result.moved + result.skipped
        if done >= max_cases:
            break
    return done
