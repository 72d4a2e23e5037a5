"""The application service: every use case of a case, each in one unit of work.

``CaseService`` is what the HTTP layer, the CLI, the demo loader and the workers call. Every
method takes an explicit ``now`` (timezone-aware) so time can be simulated, and an
:class:`~workflow.actors.Actor`. A command either writes everything it should (state, audit
event, outbox messages, deadlines, idempotency record) in one transaction, or nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import String, any_, bindparam, insert, literal, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql.elements import TextClause

from workflow import audit, deadlines, jsontext, rollup, units
from workflow.actors import Actor
from workflow.calendar import WorkingCalendar, business_date
from workflow.definition import Action, DeadlineSpec, Definition, Notification, Transition
from workflow.errors import (
    AuditChainBroken,
    CaseNotFound,
    DocumentNotFound,
    DomainError,
    GuardFailed,
    IdempotencyConflict,
    InvalidDocument,
    MissingDocuments,
    NotPermitted,
    OutOfJurisdiction,
    PreconditionFailed,
    StaleCase,
    TransitionNotAvailable,
    TransitionRefused,
    ValidationFailed,
)
from workflow.expressions import Context, evaluate, references
from workflow.forms import validate_form
from workflow.machine import CaseToken
from workflow.model import (
    AccessLog,
    ActivityRecord,
    AuditEvent,
    Case,
    CaseCustody,
    Deadline,
    Document,
    IdempotencyRecord,
    OutboxMessage,
    Subject,
)
from workflow.queries import CaseFilter, list_cases
from workflow.registry import Registry
from workflow.storage import BlobStore, MemoryBlobStore
from workflow.uow import CASE_COLUMNS, GENERIC_PLANS_UNTIL_RESET, RESET_PLANS, UnitOfWork

NATIONAL_ID_RE = re.compile(r"^\d{9}(\d{3})?$")
# built once: constructing a select per call showed in the profile of advance (bench.profile)
_ACTIVE_DOCUMENTS = select(Document).where(
    Document.case_id == bindparam("case_id"), Document.revoked_at.is_(None)
)
# a case's details (``get_case``): its open deadlines by due date, all its documents
_OPEN_DEADLINE_ROWS = (
    select(Deadline)
    .where(Deadline.case_id == bindparam("case_id"), Deadline.status == "open")
    .order_by(Deadline.due_on, Deadline.id)  # as _CASE_DETAILS orders them
)
_ALL_DOCUMENTS = (
    select(Document).where(Document.case_id == bindparam("case_id")).order_by(Document.id)
)
# PostgreSQL: the case page in one statement: the case (with its subject) and, as JSON arrays,
# its open deadlines [id, key, due_on, escalation_level] and all its documents [id, type,
# filename, media_type, size, sha256, uploaded_at, revoked_at, revoke_reason] (times as UTC
# text with microseconds, so they come back exactly). A snapshot of its own: get_case runs it
# on an autocommit connection. It also writes the read's access-log row when the case is in
# one of the reader's own units (``:units``; the usual case page): the CTE inserts only if
# that test passes, and get_case logs the other visible reads (province agencies, by
# routing) with a statement of its own.
_CASES_T = Case.__table__
_LOG_OWN_UNIT_READ = (
    insert(AccessLog.__table__)
    .from_select(
        ["at", "user_id", "case_id", "action"],
        select(
            bindparam("at", type_=AccessLog.__table__.c.at.type),
            bindparam("user_id", type_=AccessLog.__table__.c.user_id.type),
            _CASES_T.c.id,
            literal("case.read", AccessLog.__table__.c.action.type),
        ).where(
            _CASES_T.c.id == bindparam("case_id"),
            _CASES_T.c.unit_code == any_(bindparam("units", type_=ARRAY(String))),
        ),
    )
    .cte("logged")
)
_UTC_TEXT = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
_CASE_DETAILS = (
    select(*CASE_COLUMNS)
    .join_from(_CASES_T, Subject.__table__)
    .add_columns(
        text(
            "(SELECT coalesce(json_agg(json_build_array(d.id, d.key, d.due_on, d.escalation_level)"
            " ORDER BY d.due_on, d.id), '[]') FROM deadlines d"
            " WHERE d.case_id = cases.id AND d.status = 'open')"
        ),
        text(
            "(SELECT coalesce(json_agg(json_build_array(x.id, x.type, x.filename, x.media_type,"
            f" x.size, x.sha256, {_UTC_TEXT.format('x.uploaded_at')},"
            f" {_UTC_TEXT.format('x.revoked_at')}, x.revoke_reason) ORDER BY x.id), '[]')"
            " FROM documents x WHERE x.case_id = cases.id)"
        ),
    )
    .where(_CASES_T.c.id == bindparam("case_id"))
    .add_cte(_LOG_OWN_UNIT_READ)
)
# deadline rows of a command are Core statements too: (id, key) of the open ones, one UPDATE
# per closing status by ids, one (executemany) INSERT of the started ones
_DEADLINES = Deadline.__table__
_OPEN_DEADLINES = select(_DEADLINES.c.id, _DEADLINES.c.key, _DEADLINES.c.due_on).where(
    _DEADLINES.c.case_id == bindparam("case_id"), _DEADLINES.c.status == "open"
)
_CLOSE_DEADLINES = (
    update(_DEADLINES)
    .where(_DEADLINES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=bindparam("new_status"),
        closed_at=bindparam("now"),
        closed_by=bindparam("by"),
        next_action_on=None,
    )
)
_INSERT_DEADLINE = insert(_DEADLINES)
# outbox rows are written as Core inserts (no unit of work: the profile of advance)
_INSERT_OUTBOX = insert(OutboxMessage.__table__)
_INSERT_ACCESS = insert(AccessLog.__table__)
# a command's case write: one version-checked UPDATE (SET columns from the parameters)
_CASES = Case.__table__
_UPDATE_CASE = update(_CASES).where(
    _CASES.c.id == bindparam("case_id"), _CASES.c.version == bindparam("old_version")
)
# attribute -> column written by a command (everything a command may change but the version)
_CASE_WRITES = (
    ("state", "state"),
    ("group", "state_group"),
    ("unit_code", "unit_code"),
    ("province_code", "province_code"),
    ("fields", "fields"),
    ("state_entered_at", "state_entered_at"),
    ("closed_at", "closed_at"),
    ("updated_at", "updated_at"),
)

# PostgreSQL: everything a command writes in one statement with data-modifying CTEs: its case
# row (the version-checked UPDATE; the count it returns is the version check), its deadline
# rows, then its audit event, outbox rows and report counters (``audit.PG_APPEND_CTES``), all
# written only if the case row matched, which it does only if the database hashes the event
# as rehabflow does (``audit.PG_PARTS_HASHED_ALIKE``, also returned): both checks hold before
# anything is written, so the statement can be sent with the commit
# (``UnitOfWork.write_and_commit``). The started deadlines are one JSON array of rows with
# every column but the id, as ``_deadline_row`` makes them (one text whatever their number, so
# one compiled statement), inserted in the array's order. The case row is locked already
# (``SELECT … FOR UPDATE``), or by this statement's UPDATE in an optimistic command, and the
# head of the case's audit lane is taken last, so the head, which every writer of the lane
# waits for, is held for this statement's end and the commit (an optimistic command's
# statement is its own transaction: the commit is the statement's end). Its last column resets
# the plan cache mode an optimistic command's read set (``uow.RESET_PLANS``).
# Its WHERE fails the statement (nothing written, not even the case row) if the case row
# matched but no lane head did: a head deleted or re-strided by a split of the audit lanes
# (``audit.set_lanes``) while this statement waited for its lock, where the case would
# otherwise be committed without its event.
_STARTED_COLUMNS = ", ".join(c.name for c in _DEADLINES.c if c.name != "id")
# an activity's record (``record_activity``), its audit_seq the event's: one more CTE
_ACTIVITY_CTE = """, new_activity AS (
    INSERT INTO activity_records (case_id, key, at, actor_id, data, audit_seq)
    SELECT :case_id, :activity_key, :now, :actor_id, CAST(:activity_data AS jsonb), head.seq
    FROM head
)"""


# a command's idempotency record (its key, the request's digest, the result with the event's
# seq from the head): a command sent again with the key gets the same result back (_replay)
_KEY_CTE = """, new_key AS (
    INSERT INTO idempotency_keys (actor_id, key, request_hash, response, created_at)
    SELECT :key_actor, :idempotency_key, :request_hash,
        CAST(:response AS jsonb) || jsonb_build_object('audit_seq', head.seq), :now
    FROM head
)"""


def _write_statement(more_ctes: str = "") -> TextClause:
    """A command's write (see above), with ``more_ctes`` (written once the head moved)
    before its select. Whitespace runs are one space: the text stays under the 4,096 bytes
    up to which psycopg caches its parsing of a statement (a test checks)."""
    sql = f"""
WITH hashed AS (SELECT {audit.PG_PARTS_HASHED_ALIKE} AS alike
), updated_case AS (
    UPDATE cases SET {", ".join(f"{column} = :{column}" for _, column in _CASE_WRITES)},
        version = :version
    WHERE id = :case_id AND version = :old_version AND (SELECT alike FROM hashed)
    RETURNING id
), closed_deadlines AS (
    UPDATE deadlines
    SET status = CASE WHEN id = ANY(CAST(:met AS bigint[])) THEN 'met' ELSE 'cancelled' END,
        closed_at = :now, closed_by = :by, next_action_on = NULL
    WHERE (id = ANY(CAST(:met AS bigint[])) OR id = ANY(CAST(:cancelled AS bigint[])))
        AND EXISTS (SELECT FROM updated_case)
), started_deadlines AS (
    INSERT INTO deadlines ({_STARTED_COLUMNS})
    SELECT {_STARTED_COLUMNS}
    FROM jsonb_populate_recordset(NULL::deadlines, CAST(:started AS jsonb)) WITH ORDINALITY AS r
    WHERE EXISTS (SELECT FROM updated_case)
    ORDER BY r.ordinality
), {audit.PG_APPEND_CTES.format(condition="EXISTS (SELECT FROM updated_case)")}{more_ctes}
SELECT (SELECT count(*) FROM updated_case), hashed.alike, head.seq, head.prev_hash, head.hash,
    {RESET_PLANS}
FROM hashed LEFT JOIN head ON true
WHERE CASE WHEN head.seq IS NULL AND EXISTS (SELECT FROM updated_case)
    THEN CAST('audit lane split' || hashed.alike AS int) END IS NULL
"""
    # (no literal of the statement holds a space)
    return text(" ".join(sql.split())).bindparams(
        *(bindparam(column, type_=_CASES.c[column].type) for _, column in _CASE_WRITES),
        bindparam("now", type_=_DEADLINES.c.closed_at.type),
        *audit.PG_APPEND_PARAMETERS,
    )


# by (an activity's record?, an idempotency record?)
_WRITES = {
    (activity, keyed): _write_statement(
        (_ACTIVITY_CTE if activity else "") + (_KEY_CTE if keyed else "")
    )
    for activity in (False, True)
    for keyed in (False, True)
}
# PostgreSQL: what a command reads besides its case, for the case ``{case}`` (an expression):
# its active documents as [id, type, sha256] and its open deadlines as [id, key, due_on]
_COMMAND_DOCUMENTS = (
    "(SELECT coalesce(json_agg(json_build_array(x.id, x.type, x.sha256) ORDER BY x.id), '[]')"
    " FROM documents x WHERE x.case_id = {case} AND x.revoked_at IS NULL)"
)
_COMMAND_DEADLINES = (
    "(SELECT coalesce(json_agg(json_build_array(d.id, d.key, d.due_on) ORDER BY d.id), '[]')"
    " FROM deadlines d WHERE d.case_id = {case} AND d.status = 'open')"
)
# ... once the case row is locked, in one statement
_DOCUMENTS_AND_OPEN_DEADLINES = text(
    f"SELECT {_COMMAND_DOCUMENTS.format(case=':case_id')},"
    f" {_COMMAND_DEADLINES.format(case=':case_id')}"
)


# PostgreSQL: the stored record of a command's idempotency key, as [request hash, response]
# (NULL without a key, or for a key not used yet)
_COMMAND_KEY = (
    "(SELECT json_build_array(k.request_hash, k.response) FROM idempotency_keys k"
    " WHERE k.actor_id = :key_actor AND k.key = :idempotency_key)"
)
# PostgreSQL: an optimistic command's one read (no lock: ``UnitOfWork.optimistic``): its case
# and subject, with the active documents and the open deadlines as above and its key's record,
# from one snapshot
_COMMAND_READ = (
    select(*CASE_COLUMNS)
    .join_from(_CASES_T, Subject.__table__)
    .add_columns(
        text(_COMMAND_DOCUMENTS.format(case="cases.id")),
        text(_COMMAND_DEADLINES.format(case="cases.id")),
        text(_COMMAND_KEY),
        GENERIC_PLANS_UNTIL_RESET,  # for the command's write, which resets it
    )
    .where(_CASES_T.c.id == bindparam("case_id"))
)


def _activity_record(
    case: Case, key: str, data: dict, event: AuditEvent, actor: Actor, now: datetime
) -> ActivityRecord:
    """An activity's record (SQLite; PostgreSQL writes it in its :data:`_WRITES`)."""
    return ActivityRecord(
        case_id=case.id, key=key, at=now, actor_id=actor.user_id, data=data, audit_seq=event.seq
    )


class _LockNeeded(Exception):  # noqa: N818 - not an error: the command is done again, locked
    """An optimistic command cannot finish without the case's lock: the case changed since
    it was read (its write wrote nothing), or the command hands the case over (its writes
    are more than one statement). Raised before anything is written; never leaves the
    service."""


class DeadlineView(NamedTuple):
    """What the case page shows of an open deadline."""

    id: int
    key: str
    due_on: date
    escalation_level: int


class DocumentView(NamedTuple):
    """What the case page shows of a document."""

    id: int
    type: str
    filename: str
    media_type: str
    size: int
    sha256: str
    uploaded_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


def _utc(text_value: str | None) -> datetime | None:
    return None if text_value is None else datetime.fromisoformat(text_value).replace(tzinfo=UTC)


class DocumentRef(NamedTuple):
    """What a command uses of an active document (requirements, the audit event)."""

    id: int
    type: str
    sha256: str


@dataclass(frozen=True)
class DeadlineWrites:
    """What a command does to deadline rows: close the met and the cancelled ones (ids),
    start new ones (rows of ``CaseService._deadline_row``); ``closing`` says what the report
    counters need of the closed ones."""

    met: list[int]
    cancelled: list[int]
    started: list[dict[str, Any]]
    now: datetime
    by: str | None
    closing: list[tuple[date, str, str]]  # (due_on, key, status) of the closed: the counters


@dataclass(frozen=True)
class SubjectData:
    """Personal data of the person of a case (kept in ``subjects``, never logged)."""

    full_name: str
    unit_code: str
    date_of_birth: date | None = None
    sex: str | None = None
    national_id: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class Reason:
    """Why a command is refused: a missing document, a field error or an unmet guard."""

    kind: str  # document | field | guard
    code: str
    message: str = ""
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Request:
    """A command as asked (``advance``, ``record_activity``): what its body needs besides the
    case it reads, and ``fields``, what an idempotency key's record digests."""

    fields: dict[str, Any]
    case_id: int
    key: str  # the transition's or the activity's
    data: dict
    actor: Actor
    now: datetime
    expected_version: int | None
    idempotency_key: str | None
    lang: str


@dataclass(frozen=True)
class CommandResult:
    case_id: int
    number: str
    state: str
    version: int
    audit_seq: int
    action: str
    from_state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Availability:
    """A transition the actor may fire from the case's state, and what it still lacks."""

    key: str
    label: str
    to: str
    missing_documents: tuple[Any, ...]
    unmet_guards: tuple[str, ...]
    form_guards: tuple[str, ...]  # guards that depend on the form (checked when submitted)

    @property
    def ready(self) -> bool:
        return not self.missing_documents and not self.unmet_guards


def fold(text: str) -> str:
    """Lower-case without diacritics, for searching names ('Trần Văn Bình' -> 'tran van binh')."""
    text = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return " ".join("".join(c for c in text if unicodedata.category(c) != "Mn").lower().split())


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


class CaseService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        registry: Registry,
        calendar: WorkingCalendar | None = None,
        *,
        secret_key: str = "dev-only-change-me",  # noqa: S107 - real key from settings
        blobs: BlobStore | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.registry = registry
        self.calendar = calendar or WorkingCalendar()
        self._secret = secret_key.encode("utf-8")
        self.blobs = blobs or MemoryBlobStore()

    # ------------------------------------------------------------------ helpers
    def uow(
        self, *, read_only: bool = False, autocommit: bool = False, optimistic: bool = False
    ) -> UnitOfWork:
        return UnitOfWork(
            self.session_factory, read_only=read_only, autocommit=autocommit, optimistic=optimistic
        )

    def national_id_hash(self, national_id: str) -> str:
        """Keyed hash used to look a person up by ID without storing the ID in an index."""
        return hmac.new(self._secret, national_id.strip().encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _check_now(now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")

    def _visible_case(self, uow: UnitOfWork, case_id: int, actor: Actor, *, lock: bool) -> Case:
        case = uow.get_case(case_id, for_update=lock)
        self._check_visible(uow, case, actor)
        return case

    def _check_visible(self, uow: UnitOfWork, case: Case, actor: Actor) -> None:
        """OutOfJurisdiction (told as "not found") unless the actor may see ``case``."""
        if actor.is_system or case.unit_code in actor.units:
            return
        if case.province_code in actor.units and self._routed(uow, case, actor):
            return
        raise OutOfJurisdiction(f"case {case.id} not found", case_id=case.id)

    def _routed(self, uow: UnitOfWork, case: Case, actor: Actor) -> bool:
        """A case reaches a province-wide agency when its state concerns that agency type, or
        when the agency has acted on it before (a court keeps seeing the cases it decided)."""
        if case.state in self.definition_of(case).states_routed_to(actor.agency_type):
            return True
        return (
            actor.agency_id is not None
            and uow.session.execute(
                select(AuditEvent.seq)
                .where(AuditEvent.case_id == case.id, AuditEvent.agency_id == actor.agency_id)
                .limit(1)
            ).first()
            is not None
        )

    def routed_states(self, agency_type: str) -> frozenset[str]:
        """States routed to an agency type in any loaded definition."""
        out: set[str] = set()
        for d in self.registry.all():
            out |= d.states_routed_to(agency_type)
        return frozenset(out)

    def shows_person(self, case: Case, actor: Actor) -> bool:
        """Whether ``actor`` may see who the person of ``case`` is (the definition's
        ``personal_data``); the others see the case without the person's identity."""
        return actor.is_system or self.definition_of(case).shows_person_to(actor.agency_type)

    def definition_of(self, case: Case) -> Definition:
        return self.registry.get(case.definition_key, case.definition_version)

    @staticmethod
    def _active_documents(session: Session, case_id: int) -> list[Document]:
        return list(session.execute(_ACTIVE_DOCUMENTS, {"case_id": case_id}).scalars())

    def _command_case(
        self, uow: UnitOfWork, request: _Request
    ) -> (
        tuple[Case, list[Document] | list[DocumentRef], list[tuple[int, str, date]]] | CommandResult
    ):
        """A command's case, visible to its actor (its row locked, unless the unit of work is
        optimistic); then its active documents and the (id, key, due date) of its open
        deadlines. Or, first, the result stored for its idempotency key (:meth:`_replay`).

        PostgreSQL, locked: the lock, then :data:`_DOCUMENTS_AND_OPEN_DEADLINES`, straight through
        the driver (:meth:`UnitOfWork.lock_case_and_read`). The read is not folded into the
        case's ``SELECT … FOR UPDATE``: in READ COMMITTED a locking read that waited for
        another transaction returns the row as that one committed it, but its subqueries
        still see the snapshot taken before the wait, so a document revoked or a deadline met
        meanwhile would be missed; a second statement takes its snapshot after the lock.
        PostgreSQL, optimistic (``uow.optimistic``): no lock; the case, its documents, its
        open deadlines and its key's record in one statement (:data:`_COMMAND_READ`), one
        snapshot of them all; the command's write then finds out whether the case changed
        since (its version: every command bumps it, and so does a revocation).
        SQLite: three statements (the write lock is held since ``BEGIN IMMEDIATE``)."""
        actor, key, case_id = request.actor, request.idempotency_key, request.case_id
        if uow.dialect == "postgresql" and uow.optimistic:
            params = {"case_id": case_id, "key_actor": actor.user_id or 0, "idempotency_key": key}
            try:
                case, (docs, open_deadlines, record, _) = uow.read_for_command(
                    _COMMAND_READ, params
                )
            except CaseNotFound:  # no case: the key may still hold a result (or a conflict)
                if (stored := self._replay(uow, actor, key, request.fields)) is not None:
                    return stored
                raise
            if (stored := self._replayed(key, record, request.fields)) is not None:
                return stored
        elif (stored := self._replay(uow, actor, key, request.fields)) is not None:
            return stored
        elif uow.dialect == "postgresql":
            case, (docs, open_deadlines) = uow.lock_case_and_read(
                case_id, _DOCUMENTS_AND_OPEN_DEADLINES
            )
        else:
            case = self._visible_case(uow, case_id, actor, lock=True)
            docs = CaseService._active_documents(uow.session, case_id)
            rows = uow.session.execute(_OPEN_DEADLINES, {"case_id": case_id})
            return case, docs, [(i, k, due_on) for i, k, due_on in rows]
        self._check_visible(uow, case, actor)
        return (
            case,
            [DocumentRef(*doc) for doc in docs],
            [(i, k, date.fromisoformat(due_on)) for i, k, due_on in open_deadlines],
        )

    @staticmethod
    def _subject_context(case: Case, today: date) -> dict[str, Any]:
        s = case.subject
        age = None
        if s.date_of_birth is not None:
            age = (
                today.year
                - s.date_of_birth.year
                - ((today.month, today.day) < (s.date_of_birth.month, s.date_of_birth.day))
            )
        return {
            "date_of_birth": s.date_of_birth,
            "sex": s.sex,
            "unit_code": s.unit_code,
            "age": age,
            "full_name": s.full_name,
        }

    def _context(self, d: Definition, case: Case, form: dict, today: date) -> Context:
        params = self.registry.parameters(d)
        return Context(form, case.fields or {}, self._subject_context(case, today), params, today)

    @staticmethod
    def _missing(action: Action, docs: list[Document] | list[DocumentRef]) -> list[Any]:
        present = {doc.type for doc in docs}
        missing: list[Any] = []
        for req in action.documents:
            if not present.intersection(req.any_of):
                missing.append(req.any_of[0] if len(req.any_of) == 1 else list(req.any_of))
        return missing

    def _evaluate(
        self,
        d: Definition,
        action: Action,
        case: Case,
        docs: list[Document] | list[DocumentRef],
        data: dict,
        today: date,
        lang: str,
    ) -> tuple[dict, list[Reason]]:
        reasons = [
            Reason(
                "document",
                m if isinstance(m, str) else "|".join(m),
                alternatives=tuple(m) if isinstance(m, list) else (),
            )
            for m in self._missing(action, docs)
        ]
        form, errors = validate_form(d, action, data, lang)
        for name, messages in errors.items():
            reasons.extend(Reason("field", name, msg) for msg in messages)
        if not errors:
            ctx = self._context(d, case, form, today)
            for guard in action.guards:
                if not evaluate(guard.test, ctx):
                    reasons.append(Reason("guard", guard.key, guard.message.get(lang)))
        return form, reasons

    @staticmethod
    def _refusal(action_key: str, reasons: list[Reason]) -> Exception:
        missing = [
            list(r.alternatives) if r.alternatives else r.code
            for r in reasons
            if r.kind == "document"
        ]
        errors: dict[str, list[str]] = {}
        for r in reasons:
            if r.kind == "field":
                errors.setdefault(r.code, []).append(r.message)
        guards = [{"key": r.code, "message": r.message} for r in reasons if r.kind == "guard"]
        details = {
            "action": action_key,
            "missing_documents": missing,
            "errors": errors,
            "unmet_guards": guards,
        }
        kinds = {r.kind for r in reasons}
        if kinds == {"document"}:
            codes = ", ".join(r.code for r in reasons)
            return MissingDocuments(f"missing documents for {action_key}: {codes}", **details)
        if kinds == {"field"}:
            return ValidationFailed(
                f"invalid form for {action_key}: {', '.join(errors)}", **details
            )
        if kinds == {"guard"}:
            keys = ", ".join(g["key"] for g in guards)
            return GuardFailed(f"{action_key} refused by guard(s): {keys}", **details)
        return TransitionRefused(f"{action_key} refused: {', '.join(sorted(kinds))}", **details)

    # -- idempotency -------------------------------------------------------------------
    def _replay(
        self, uow: UnitOfWork, actor: Actor, key: str | None, request: dict
    ) -> CommandResult | None:
        """The result stored for the idempotency ``key`` of ``actor``, if any (looked up
        through the session); ``IdempotencyConflict`` if it was stored for another request."""
        if not key:
            return None
        rec = uow.session.get(IdempotencyRecord, (actor.user_id or 0, key))
        return (
            None if rec is None else self._replayed(key, (rec.request_hash, rec.response), request)
        )

    @staticmethod
    def _replayed(
        key: str | None, record: tuple[str, dict] | list | None, request: dict
    ) -> CommandResult | None:
        """The result in ``record`` (the key's stored request hash and response, or None),
        if it was stored for ``request``; ``IdempotencyConflict`` if for another one."""
        if not key or record is None:
            return None
        request_hash, response = record
        if request_hash != audit.digest(request):
            raise IdempotencyConflict(
                "this idempotency key was used with a different request", idempotency_key=key
            )
        return CommandResult(**response)

    def _remember(
        self,
        uow: UnitOfWork,
        actor: Actor,
        key: str | None,
        request: dict,
        result: CommandResult,
        now: datetime,
    ) -> None:
        if key:
            uow.session.add(
                IdempotencyRecord(
                    actor_id=actor.user_id or 0,
                    key=key,
                    request_hash=audit.digest(request),
                    response=result.to_dict(),
                    created_at=now,
                )
            )

    @staticmethod
    def _flush(uow: UnitOfWork, case_id: int) -> None:
        """Flush what the session holds (a version-checked ORM write is a StaleCase if it
        lost a race).

        Commands write their case and deadline rows before :meth:`_audit` locks the audit
        head (on PostgreSQL in the same statement, :data:`_WRITES`), so the lock every
        writer waits for is held only for the event, the outbox and the commit. Lock order
        stays case row, then deadline rows, then head; the sweep takes every lane's head
        (in id order) before its deadline rows (SKIP LOCKED) and never waits for a case
        row. (A unit of work that made no session holds nothing to flush.)"""
        if not uow.has_session:
            return
        try:
            uow.session.flush()
        except StaleDataError:
            raise StaleCase(
                "the case was changed by someone else; reload it", case_id=case_id
            ) from None

    @staticmethod
    def _case_parameters(case: Case) -> dict[str, Any]:
        """The parameters of a command's case write (the version bumped even when no value
        changed)."""
        params = {column: getattr(case, attr) for attr, column in _CASE_WRITES}
        params.update(case_id=case.id, old_version=case.version, version=case.version + 1)
        return params

    @staticmethod
    def _deadline_parameters(deadlines: DeadlineWrites) -> dict[str, Any]:
        """PostgreSQL: the parameters of a command's deadline writes in :data:`_WRITES`
        (SQLite writes them with :meth:`_write_deadlines`)."""
        return {
            "met": deadlines.met,
            "cancelled": deadlines.cancelled,
            "now": deadlines.now,
            "by": deadlines.by,
            "started": jsontext.dumps(deadlines.started),
        }

    def _write(
        self,
        uow: UnitOfWork,
        case: Case,
        deadlines: DeadlineWrites,
        actor: Actor,
        now: datetime,
        action: str,
        *,
        notify: Action | None = None,
        previous: tuple[str, str] | None = None,
        activity: str | None = None,
        remember: tuple[str, dict, str | None] | None = None,
        **kwargs: Any,
    ) -> AuditEvent:
        """A command's writes once its checks passed: its loaded case as one version-checked
        ``UPDATE … WHERE id = … AND version = …`` (no matching row is a lost race:
        StaleCase, and nothing is written), its deadline rows, its audit event with the outbox
        rows of ``notify`` (:meth:`_audit`), its report counters, for ``activity`` (a key)
        the activity's record with the event's data, and for ``remember`` (the idempotency
        key, the request, the result's ``from_state``) the key's record with the command's
        result; returns the event.

        PostgreSQL: one statement (:data:`_WRITES`; before it, a flush of what else the
        session holds, e.g. a hand-over's subject row). An optimistic unit of work whose
        write finds the case changed raises ``_LockNeeded`` (nothing written). With no
        hand-over the command writes nothing before or after it, so the statement goes
        straight through the driver and the ``COMMIT`` right after it
        (``UnitOfWork.write_and_commit``): a failed check then commits nothing. SQLite: the
        deadline statements of :meth:`_write_deadlines`, the case's, then :meth:`_audit`,
        the activity's and the key's records (ORM)."""
        self._count_deadlines(uow, case, deadlines)
        params = self._case_parameters(case)
        # the case leaves the session (on PostgreSQL it was never in it: lock_case_and_read),
        # so no flush writes it (the object keeps the written values, and the new version
        # once written, for the result)
        if uow.has_session and isinstance(case, Case) and case in uow.session:
            uow.session.expunge(case)
        if uow.dialect != "postgresql":
            self._write_deadlines(uow, deadlines)
            self._version_checked(uow.session.execute(_UPDATE_CASE, params).rowcount, case)
            self._flush(uow, case.id)
            event = self._audit(
                uow, actor, now, action, case, notify=notify, previous=previous, **kwargs
            )
            if activity is not None:
                data = kwargs.get("data") or {}
                uow.session.add(_activity_record(case, activity, data, event, actor, now))
            if remember is not None:
                key, request, from_state = remember
                result = CommandResult(
                    case.id, case.number, case.state, case.version, event.seq, action, from_state
                )
                self._remember(uow, actor, key, request, result, now)
            return event
        event = self._event(actor, now, action, case, unsaved=True, **kwargs)
        self._count(uow, event, case)
        rows = self._outbox_rows(notify, case, event, now, previous) if notify else []
        params.update(self._deadline_parameters(deadlines))
        params.update(audit.append_parameters(uow, event, rows))
        self._flush(uow, case.id)
        if activity is not None:
            params["activity_key"] = activity
            params["activity_data"] = jsontext.dumps(kwargs.get("data") or {})
        if remember is not None:
            key, request, from_state = remember
            # the result but its event's seq, which the statement adds from the head
            version = case.version + 1
            result = CommandResult(case.id, case.number, case.state, version, 0, action, from_state)
            response = {k: v for k, v in result.to_dict().items() if k != "audit_seq"}
            params["key_actor"] = actor.user_id or 0
            params["idempotency_key"] = key
            params["request_hash"] = audit.digest(request)
            params["response"] = jsontext.dumps(response)
        statement = _WRITES[activity is not None, remember is not None]
        if uow.optimistic and previous is not None:
            raise RuntimeError("an optimistic command writes one statement")
        if previous is None:
            row = uow.write_and_commit(statement, params)
        else:
            row = uow.session.execute(statement, params).one()
        updated, hashed_alike, *appended, _ = row  # (_: the plan cache mode reset)
        if not hashed_alike:
            raise AuditChainBroken(
                "the database would hash the audit event differently from rehabflow;"
                " nothing was written",
                case_id=case.id,
            )
        if not updated and uow.optimistic:
            raise _LockNeeded("the case changed since it was read")
        self._version_checked(updated, case)
        return audit.appended(event, *appended, (params["hash_before"], params["hash_after"]))

    @staticmethod
    def _version_checked(updated: int, case: Case) -> None:
        """The version check of a command's case write: no row matched the version read is a
        lost race (StaleCase); otherwise the case object takes its new version."""
        if updated != 1:
            raise StaleCase("the case was changed by someone else; reload it", case_id=case.id)
        case.version += 1

    def _commit(
        self,
        uow: UnitOfWork,
        case_id: int,
        actor: Actor | None = None,
        key: str | None = None,
        request: dict | None = None,
    ) -> CommandResult | None:
        """Commit; map a lost race to StaleCase. If a concurrent request with the same
        idempotency key committed first, return its stored result instead."""
        try:
            if uow.has_session:
                uow.session.flush()
            uow.commit()
        except StaleDataError:
            raise StaleCase(
                "the case was changed by someone else; reload it", case_id=case_id
            ) from None
        except IntegrityError:
            if not key or actor is None:
                raise
            uow.session.rollback()
            with self.uow(read_only=True) as again:
                stored = self._replay(again, actor, key, request or {})
            if stored is None:
                raise
            return stored
        return None

    # -- audit and outbox --------------------------------------------------------------
    def _audit_event(
        self,
        session: Session,
        actor: Actor,
        now: datetime,
        action: str,
        case: Case | None,
        **kwargs: Any,
    ) -> AuditEvent:
        """Append an audit event in ``session`` through its unit of work (the sweep, which
        appends events of many cases in one transaction after locking every lane's head, and
        the migration of running cases)."""
        event = audit.append(session, self._event(actor, now, action, case, **kwargs))
        self._count(session, event, case)
        return event

    @staticmethod
    def _count(holder: rollup.HasInfo, event: AuditEvent, case: Case | None) -> None:
        """Count the event in the report counters of the transaction (``workflow.rollup``;
        written by the unit of work at commit, with the command's other deltas)."""
        if case is not None:
            place = (case.unit_code, case.province_code)
            rollup.count_event(rollup.pending(holder), event, place)

    def _audit(
        self,
        uow: UnitOfWork,
        actor: Actor,
        now: datetime,
        action: str,
        case: Case | None,
        *,
        notify: Action | None = None,
        previous: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> AuditEvent:
        """Append an audit event at once, with the outbox rows of ``notify``'s notifications
        (:meth:`_outbox_rows`; ``previous``: the sending place of a hand-over). It locks the
        chain head until commit, so a command calls it after writing its case and deadlines.

        PostgreSQL: one statement (:func:`audit.write_one`: head, event, outbox rows and the
        pending report counters). SQLite: :func:`audit.write` (head, event, head), then the
        outbox rows."""
        event = self._event(actor, now, action, case, **kwargs)
        self._count(uow.session, event, case)
        rows = []
        if uow.dialect == "postgresql":
            if notify is not None and case is not None:
                rows = self._outbox_rows(notify, case, event, now, previous)
            return audit.write_one(uow.session, event, rows)
        audit.write(uow.session, event)
        if notify is not None and case is not None:
            rows = self._outbox_rows(notify, case, event, now, previous)
        if rows:  # one row: a plain execute; several: executemany
            uow.session.execute(_INSERT_OUTBOX, rows[0] if len(rows) == 1 else rows)
        return event

    @staticmethod
    def _event(
        actor: Actor,
        now: datetime,
        action: str,
        case: Case | None,
        *,
        from_state: str | None = None,
        to_state: str | None = None,
        data: Any = None,
        documents: list[Document] | list[DocumentRef] | None = None,
        extra: dict | None = None,
        unsaved: bool = False,
    ) -> AuditEvent:
        """The event of a command (``unsaved``: one that the command's own statement writes,
        never a session: ``audit.unsaved_event``)."""
        return (audit.unsaved_event if unsaved else AuditEvent)(
            case_id=case.id if case else None,
            at=now,
            actor_id=actor.user_id,
            actor=actor.username,
            agency_id=actor.agency_id,
            agency_type=actor.agency_type,
            role=actor.role,
            action=action,
            from_state=from_state,
            to_state=to_state,
            definition=f"{case.definition_key}@{case.definition_version}" if case else None,
            data_hash=audit.digest(data) if data is not None else None,
            documents=[
                {"id": doc.id, "type": doc.type, "sha256": doc.sha256}
                for doc in sorted(documents or [], key=lambda x: x.id)
            ],
            extra=extra or {},
        )

    @staticmethod
    def _outbox_rows(
        action: Action,
        case: Case,
        event: AuditEvent,
        now: datetime,
        previous: tuple[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The outbox rows of the action's notifications (written with the event by
        :meth:`_audit`); after a hand-over the agencies of the sending commune (``previous``:
        unit, province) are told as well."""
        places = [(case.unit_code, case.province_code)] + ([previous] if previous else [])
        return [
            CaseService._outbox_row(n, action.key, case, event, now, unit_code, province_code)
            for n in action.notify
            for unit_code, province_code in places
        ]

    @staticmethod
    def _outbox_message(
        uow: UnitOfWork,
        n: Notification,
        action: str,
        case: Case,
        event: AuditEvent,
        now: datetime,
        unit_code: str,
        province_code: str,
    ) -> None:
        row = CaseService._outbox_row(n, action, case, event, now, unit_code, province_code)
        uow.session.execute(_INSERT_OUTBOX, row)

    @staticmethod
    def _outbox_row(
        n: Notification,
        action: str,
        case: Case,
        event: AuditEvent,
        now: datetime,
        unit_code: str,
        province_code: str,
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "case_id": case.id,
            "audit_seq": event.seq,
            "topic": n.template,
            "recipients": {
                "agency_types": list(n.agencies),
                "unit_code": unit_code,
                "province_code": province_code,
            },
            "payload": {
                "case_id": case.id,
                "case_number": case.number,
                "action": action,
                "from_state": event.from_state,
                "to_state": event.to_state,
                "definition": event.definition,
                "at": now.isoformat(),
            },
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "available_at": now,
            "sent_at": None,
            "last_error": None,
        }

    # -- deadlines ---------------------------------------------------------------------
    def _plan_deadlines(
        self,
        d: Definition,
        action: Action | None,
        case: Case,
        form: dict,
        now: datetime,
        terminal: bool,
        open_deadlines: list[tuple[int, str, date]],
    ) -> DeadlineWrites:
        """The deadline rows to meet, cancel and start as the action and the new state require,
        given the (id, key, due date) of the case's open ones; written by :meth:`_write` (or
        :meth:`_write_deadlines`)."""
        today = business_date(now)
        fields = case.fields or {}
        met = set(d.deadlines_met_by(action.key)) if action else set()
        starts = list(action.effects.start_deadlines) if action else []
        cancel = set(action.effects.cancel_deadlines if action else ()) | set(starts)
        still_open: set[str] = set()
        closed: dict[str, list[int]] = {"met": [], "cancelled": []}
        closing: list[tuple[date, str, str]] = []
        for deadline_id, key, due_on in open_deadlines:
            spec = d.deadlines.get(key)
            left_schedule = spec is not None and spec.during and case.state not in spec.during
            if key in met:
                closed["met"].append(deadline_id)
                closing.append((due_on, key, "met"))
                if spec is not None and spec.repeat and not terminal and not left_schedule:
                    starts.append(key)
            elif key in cancel or terminal or left_schedule:
                closed["cancelled"].append(deadline_id)
                closing.append((due_on, key, "cancelled"))
            else:
                still_open.add(key)
        if not terminal:
            starts += [
                s.key
                for s in d.scheduled
                if case.state in s.during and s.key not in still_open | set(starts)
            ]
        rows = [
            self._deadline_row(d, d.deadlines[key], case, form, fields, now, today)
            for key in starts
        ]
        by = action.key if action else None
        return DeadlineWrites(closed["met"], closed["cancelled"], rows, now, by, closing)

    @staticmethod
    def _count_deadlines(uow: UnitOfWork, case: Case, w: DeadlineWrites) -> None:
        """The report counters of a command's deadline writes, at the case's place when they
        are written (after a hand-over: the new one; ``workflow.rollup``)."""
        counters, place = rollup.pending(uow), (case.unit_code, case.province_code)
        for due_on, key, status in w.closing:
            counters.closed(due_on, key, status, w.now, place)
        for row in w.started:
            counters.deadline(row["due_on"], row["key"], "open", False, place)

    @staticmethod
    def _write_deadlines(uow: UnitOfWork, w: DeadlineWrites) -> None:
        """Deadline rows as Core statements: one UPDATE by ids per closing status, one
        (executemany) INSERT of the started ones."""
        for status, ids in (("met", w.met), ("cancelled", w.cancelled)):
            if ids:
                params = {"ids": ids, "new_status": status, "now": w.now, "by": w.by}
                uow.session.execute(_CLOSE_DEADLINES, params)
        if w.started:  # one row: a plain execute; several: executemany
            rows = w.started
            uow.session.execute(_INSERT_DEADLINE, rows[0] if len(rows) == 1 else rows)

    def _start_deadline(
        self,
        uow: UnitOfWork,
        d: Definition,
        spec: DeadlineSpec,
        case: Case,
        form: dict,
        fields: dict,
        now: datetime,
        today: date,
    ) -> Deadline:
        """Start a deadline through the unit of work (the migration)."""
        row = Deadline(**self._deadline_row(d, spec, case, form, fields, now, today))
        uow.session.add(row)
        place = (case.unit_code, case.province_code)
        rollup.pending(uow.session).deadline(row.due_on, row.key, "open", False, place)
        return row

    def _deadline_row(
        self,
        d: Definition,
        spec: DeadlineSpec,
        case: Case,
        form: dict,
        fields: dict,
        now: datetime,
        today: date,
    ) -> dict[str, Any]:
        anchor = form.get(spec.anchor[5:]) if spec.anchor.startswith("form.") else None
        anchor = anchor or today
        try:
            due = deadlines.add(self.calendar, anchor, spec.duration, d, form, fields)
            remind = None
            if spec.reminder is not None:
                n = deadlines.amount(spec.reminder.amount, d, form, fields)
                remind = deadlines.before(self.calendar, due, n, spec.reminder.unit)
        except KeyError as missing:
            name = str(missing).strip("'").split(".", 1)[-1]
            raise ValidationFailed(
                f"deadline {spec.key} needs {missing}", errors={name: ["required"]}
            ) from None
        return {
            "case_id": case.id,
            "key": spec.key,
            "status": "open",
            "started_at": now,
            "anchor_on": anchor,
            "due_on": due,
            "remind_on": remind,
            "next_action_on": deadlines.next_action(
                self.calendar,
                spec,
                d,
                due=due,
                remind_on=remind,
                reminded=False,
                level=0,
                case_fields=fields,
            ),
            "escalation_level": 0,
            "reminded_on": None,
            "auto_transition": spec.on_due,
            "closed_at": None,
            "closed_by": None,
        }

    # ------------------------------------------------------------------ commands
    def open_case(
        self,
        subject: SubjectData,
        actor: Actor,
        now: datetime,
        *,
        definition_key: str = "drug_rehab",
        version: int | None = None,
        data: dict | None = None,
        idempotency_key: str | None = None,
        lang: str = "vi",
    ) -> CommandResult:
        """Open a case in the initial state of the definition in force on ``now``'s date."""
        self._check_now(now)
        today = business_date(now)
        d = (
            self.registry.get(definition_key, version)
            if version is not None
            else self.registry.in_force(definition_key, today)
        )
        errors = self._subject_errors(subject, today)
        if errors:
            raise ValidationFailed("invalid subject data", errors={"subject": errors})
        unit = units.get(subject.unit_code)
        if not actor.covers(unit.code, unit.province_code):
            raise NotPermitted("the unit is outside your jurisdiction", unit_code=unit.code)
        if (
            d.opening is not None
            and not actor.is_system
            and not d.opening.permits(actor.agency_type, actor.role)
        ):
            raise NotPermitted("your agency and role may not open cases", action="open_case")
        request = {
            "op": "open_case",
            "definition": d.ref,
            "data": data or {},
            "subject": audit.digest(subject.__dict__),
        }
        with self.uow() as uow:
            if (stored := self._replay(uow, actor, idempotency_key, request)) is not None:
                return stored
            form: dict = {}
            if d.opening is not None:
                form, field_errors = validate_form(d, d.opening, data or {}, lang)
                if field_errors:
                    raise ValidationFailed("invalid opening form", errors=field_errors)
            person = Subject(
                full_name=subject.full_name.strip(),
                full_name_folded=fold(subject.full_name),
                date_of_birth=subject.date_of_birth,
                sex=subject.sex,
                national_id=subject.national_id or None,
                national_id_hash=self.national_id_hash(subject.national_id)
                if subject.national_id
                else None,
                address=subject.address,
                unit_code=unit.code,
            )
            initial = d.initial_state
            case = Case(
                subject=person,
                definition_key=d.key,
                definition_version=d.version,
                state=initial.key,
                group=initial.group,
                unit_code=unit.code,
                province_code=unit.province_code,
                fields={},
                opened_at=now,
                state_entered_at=now,
                updated_at=now,
            )
            uow.session.add(case)
            uow.session.flush()
            case.number = f"{unit.code}-{today.year}-{case.id:06d}"
            if d.opening is not None:
                self._set_fields(d, d.opening, case, form, today)
            # a new case has no open deadlines to read
            plan = self._plan_deadlines(d, d.opening, case, form, now, False, [])
            self._write_deadlines(uow, plan)
            self._count_deadlines(uow, case, plan)
            self._flush(uow, case.id)  # before the audit head is locked (see _flush)
            event = self._audit(
                uow,
                actor,
                now,
                "case.opened",
                case,
                notify=d.opening,
                to_state=initial.key,
                data={k: _json_value(v) for k, v in form.items()},
                extra={"subject_id": person.id},
            )
            result = CommandResult(
                case.id, case.number, case.state, case.version, event.seq, "case.opened"
            )
            self._remember(uow, actor, idempotency_key, request, result, now)
            return self._commit(uow, case.id, actor, idempotency_key, request) or result

    @staticmethod
    def _subject_errors(s: SubjectData, today: date) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if not s.full_name or not s.full_name.strip():
            errors["full_name"] = ["Họ tên là bắt buộc."]
        elif len(s.full_name) > 255:
            errors["full_name"] = ["Họ tên dài tối đa 255 ký tự."]
        if not units.is_commune(s.unit_code or ""):
            errors["unit_code"] = ["Mã xã/phường không tồn tại."]
        if s.date_of_birth is not None and not (date(1900, 1, 1) <= s.date_of_birth <= today):
            errors["date_of_birth"] = ["Ngày sinh không hợp lệ."]
        if s.national_id and not NATIONAL_ID_RE.match(s.national_id.strip()):
            errors["national_id"] = ["Số định danh phải có 12 (hoặc 9) chữ số."]
        if s.sex not in (None, "male", "female", "other"):
            errors["sex"] = ["Giới tính phải là male, female hoặc other."]
        return errors

    def _set_fields(
        self, d: Definition, action: Action, case: Case, form: dict, today: date
    ) -> None:
        if not action.effects.set_fields:
            return
        ctx = self._context(d, case, form, today)
        fields = dict(case.fields or {})
        for name, expr in action.effects.set_fields:
            fields[name] = _json_value(evaluate(expr, ctx))
        case.fields = fields

    def advance(
        self,
        case_id: int,
        transition_key: str,
        data: dict | None,
        actor: Actor,
        now: datetime,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        lang: str = "vi",
    ) -> CommandResult:
        """Fire a transition: authorise, validate, check documents and guards, change state."""
        self._check_now(now)
        data = data or {}
        fields = {
            "op": "advance",
            "case_id": case_id,
            "transition": transition_key,
            "data": data,
            "expected_version": expected_version,
        }
        request = _Request(
            fields,
            case_id,
            transition_key,
            data,
            actor,
            now,
            expected_version,
            idempotency_key,
            lang,
        )
        return self._command(request, self._advance)

    def _command(
        self,
        request: _Request,
        body: Callable[
            [UnitOfWork, _Request, Case, list[Any], list[tuple[int, str, date]]], CommandResult
        ],
    ) -> CommandResult:
        """Run a command's ``body`` in a unit of work, on its case as read (after the
        idempotency key's stored result, if any: then that result) with its active documents
        and open deadlines (:meth:`_command_case`). On PostgreSQL it runs optimistically
        first (``UnitOfWork.optimistic``: no lock; a read, then one write in its own
        transaction, the idempotency key's record included); if that cannot finish
        (``_LockNeeded``: the case changed after it was read, or the command hands it over),
        nothing was written, and it runs once more with the case locked, as every command
        runs on SQLite. A refusal found in the optimistic run stands: it holds for the case
        as it was read, and nothing was written. A write refused for its key's record (a
        request with the same key committed first) gives that request's result back, or
        its conflict; so does a refusal, if a request with the same key committed after this
        one looked the key up (it finds the case moved on by that very request)."""
        actor, key = request.actor, request.idempotency_key

        def run(uow: UnitOfWork) -> CommandResult:
            read = self._command_case(uow, request)
            if isinstance(read, CommandResult):  # the key's stored result
                return read
            return body(uow, request, *read)

        try:
            try:
                with self.uow(optimistic=True) as uow:
                    return run(uow)
            except _LockNeeded:
                pass  # nothing was written: once more, with the case locked
            with self.uow() as uow:
                return run(uow)
        except (IntegrityError, DomainError):
            if not key:
                raise
            with self.uow(read_only=True) as again:
                stored = self._replay(again, actor, key, request.fields)
            if stored is None:
                raise
            return stored

    def _advance(
        self,
        uow: UnitOfWork,
        request: _Request,
        case: Case,
        docs: list[Any],
        open_deadlines: list[tuple[int, str, date]],
    ) -> CommandResult:
        transition_key, data, actor, now = request.key, request.data, request.actor, request.now
        idempotency_key, lang = request.idempotency_key, request.lang
        d = self.definition_of(case)
        t = d.transitions.get(transition_key)
        if t is None:
            raise TransitionNotAvailable(
                f"unknown transition {transition_key!r}",
                transition=transition_key,
                state=case.state,
                allowed=[x.key for x in d.transitions_from(case.state)],
            )
        self._authorise(actor, t)
        self._check_expected(case, request.expected_version)
        today = business_date(now)
        holder: dict[str, dict] = {}

        def check() -> list[Reason]:
            holder["form"], reasons = self._evaluate(d, t, case, docs, data, today, lang)
            return reasons

        token = CaseToken(case.state)
        if not self.registry.machine(d).fire(token, t.key, check):
            raise self._refusal(t.key, token.refusals)
        form = holder["form"]
        moving_to = self._transfer_target(uow, d, t, case, form, today, lang)
        from_state, dest = case.state, d.states[token.state]
        case.state, case.group = dest.key, dest.group
        case.state_entered_at = case.updated_at = now
        if dest.kind == "terminal":
            case.closed_at = now
        self._set_fields(d, t, case, form, today)
        terminal = dest.kind == "terminal"
        plan = self._plan_deadlines(d, t, case, form, now, terminal, open_deadlines)
        extra = self._transfer_extra(case, moving_to)
        previous = self._hand_over(uow, case, moving_to)
        event = self._write(  # every command bumps the version
            uow,
            case,
            plan,
            actor,
            now,
            f"transition:{t.key}",
            notify=t,
            previous=previous,
            remember=(idempotency_key, request.fields, from_state) if idempotency_key else None,
            from_state=from_state,
            to_state=dest.key,
            data={k: _json_value(v) for k, v in form.items()},
            documents=self._used_documents(t, docs),
            extra=extra,
        )
        self._custody(uow, case, previous, event, now)
        result = CommandResult(
            case.id,
            case.number,
            case.state,
            case.version,
            event.seq,
            f"transition:{t.key}",
            from_state,
        )
        self._commit(uow, case.id)  # (the key's record, if any, is written with the rest)
        return result

    # -- change of residence ---------------------------------------------------------
    def _transfer_target(
        self,
        uow: UnitOfWork,
        d: Definition,
        action: Action,
        case: Case,
        form: dict,
        today: date,
        lang: str,
    ) -> str | None:
        """The commune the action hands the case to (``effects.transfer_to``), checked. An
        optimistic command cannot hand a case over (its writes are more than one statement):
        ``_LockNeeded``, before anything is written."""
        expr = action.effects.transfer_to
        if expr is None:
            return None
        if uow.optimistic:
            raise _LockNeeded("a hand-over writes more than one statement")
        target = evaluate(expr, self._context(d, case, form, today))
        name = str(expr["field"]).split(".", 1)[1]
        en = lang == "en"
        if not target or not units.is_commune(str(target)):
            msg = "not a commune code" if en else "không phải mã xã, phường, đặc khu"
            raise ValidationFailed(f"{name}: {msg}", errors={name: [msg]})
        if str(target) == case.unit_code:
            msg = (
                "the case is already held by this commune"
                if en
                else "hồ sơ đang do chính xã, phường này quản lý"
            )
            raise ValidationFailed(f"{name}: {msg}", errors={name: [msg]})
        return str(target)

    @staticmethod
    def _transfer_extra(case: Case, target: str | None) -> dict | None:
        if target is None:
            return None
        unit = units.get(target)
        return {
            "transfer": {
                "from_unit": case.unit_code,
                "from_province": case.province_code,
                "to_unit": target,
                "to_province": unit.province_code if unit else None,
            }
        }

    @staticmethod
    def _hand_over(uow: UnitOfWork, case: Case, target: str | None) -> tuple[str, str] | None:
        """Move the case to ``target`` (deadlines continue, the report counters of its history
        move with it); returns the sending place, which keeps read access to the history up to
        the command's event (:meth:`_custody`)."""
        if target is None:
            return None
        previous = (case.unit_code, case.province_code)
        unit = units.get(target)
        case.unit_code = target
        case.province_code = unit.province_code if unit else case.province_code
        uow.session.add(case.subject)  # written by the session's flush (not the case)
        case.subject.unit_code = target
        new = (case.unit_code, case.province_code)
        rollup.move_case(uow.session, rollup.pending(uow.session), case.id, previous, new)
        return previous

    @staticmethod
    def _custody(
        uow: UnitOfWork,
        case: Case,
        previous: tuple[str, str] | None,
        event: AuditEvent,
        now: datetime,
    ) -> None:
        """The sending commune's custody row after a hand-over, up to ``event``."""
        if previous is None:
            return
        uow.session.add(
            CaseCustody(
                case_id=case.id,
                unit_code=previous[0],
                province_code=previous[1],
                until_at=now,
                until_seq=event.seq,
            )
        )

    def _former_custody(self, uow: UnitOfWork, case_id: int, actor: Actor) -> CaseCustody | None:
        """The latest hand-over by which the actor's agency held the case (None: never)."""
        if actor.is_system or not actor.units:
            return None
        return uow.session.execute(
            select(CaseCustody)
            .where(CaseCustody.case_id == case_id, CaseCustody.unit_code.in_(actor.units))
            .order_by(CaseCustody.until_seq.desc())
            .limit(1)
        ).scalar_one_or_none()

    @staticmethod
    def _check_expected(case: Case, expected_version: int | None) -> None:
        """PreconditionFailed unless the case is at the version the caller expects (If-Match)."""
        if expected_version is not None and expected_version != case.version:
            raise PreconditionFailed(
                f"case is at version {case.version}, not {expected_version}",
                case_id=case.id,
                current_version=case.version,
            )

    @staticmethod
    def _authorise(actor: Actor, action: Action) -> None:
        automatic = isinstance(action, Transition) and action.automatic
        if actor.is_system:
            if not automatic:
                raise NotPermitted(f"the system does not fire {action.key!r}", action=action.key)
            return
        if automatic or not action.permits(actor.agency_type, actor.role):
            raise NotPermitted(
                f"agency type {actor.agency_type!r} with role {actor.role!r} may not do "
                f"{action.key!r}",
                action=action.key,
                allowed=[{"agency": p.agency, "roles": list(p.roles)} for p in action.allowed],
            )

    @staticmethod
    def _used_documents(
        action: Action, docs: list[Document] | list[DocumentRef]
    ) -> list[Document] | list[DocumentRef]:
        wanted = {code for req in action.documents for code in req.any_of}
        return [doc for doc in docs if doc.type in wanted]

    def record_activity(
        self,
        case_id: int,
        activity_key: str,
        data: dict | None,
        actor: Actor,
        now: datetime,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        lang: str = "vi",
    ) -> CommandResult:
        """Record an activity (check-in, support given...): audited, no change of state."""
        self._check_now(now)
        data = data or {}
        fields = {
            "op": "activity",
            "case_id": case_id,
            "activity": activity_key,
            "data": data,
            "expected_version": expected_version,
        }
        request = _Request(
            fields,
            case_id,
            activity_key,
            data,
            actor,
            now,
            expected_version,
            idempotency_key,
            lang,
        )
        return self._command(request, self._record_activity)

    def _record_activity(
        self,
        uow: UnitOfWork,
        request: _Request,
        case: Case,
        docs: list[Any],
        open_deadlines: list[tuple[int, str, date]],
    ) -> CommandResult:
        activity_key, data, actor, now = request.key, request.data, request.actor, request.now
        idempotency_key, lang = request.idempotency_key, request.lang
        d = self.definition_of(case)
        act = d.activities.get(activity_key)
        if act is None or case.state not in act.states:
            raise TransitionNotAvailable(
                f"activity {activity_key!r} is not available in state {case.state!r}",
                activity=activity_key,
                state=case.state,
                allowed=[a.key for a in d.activities_in(case.state)],
            )
        self._authorise(actor, act)
        self._check_expected(case, request.expected_version)
        today = business_date(now)
        form, reasons = self._evaluate(d, act, case, docs, data, today, lang)
        if reasons:
            raise self._refusal(act.key, reasons)
        moving_to = self._transfer_target(uow, d, act, case, form, today, lang)
        self._set_fields(d, act, case, form, today)
        plan = self._plan_deadlines(d, act, case, form, now, False, open_deadlines)
        case.updated_at = now
        clean = {k: _json_value(v) for k, v in form.items()}
        extra = self._transfer_extra(case, moving_to)
        previous = self._hand_over(uow, case, moving_to)
        event = self._write(  # every command bumps the version
            uow,
            case,
            plan,
            actor,
            now,
            f"activity:{act.key}",
            notify=act,
            previous=previous,
            activity=act.key,  # its record, with the event's data
            remember=(idempotency_key, request.fields, case.state) if idempotency_key else None,
            from_state=case.state,
            to_state=case.state,
            data=clean,
            documents=self._used_documents(act, docs),
            extra=extra,
        )
        self._custody(uow, case, previous, event, now)
        result = CommandResult(
            case.id,
            case.number,
            case.state,
            case.version,
            event.seq,
            f"activity:{act.key}",
            case.state,
        )
        self._commit(uow, case.id)  # (the key's record, if any, is written with the rest)
        return result

    def attach_document(
        self,
        case_id: int,
        doc_type: str,
        content: bytes,
        actor: Actor,
        now: datetime,
        *,
        filename: str,
        media_type: str,
        note: str | None = None,
    ) -> Document:
        """Store the bytes (content-addressed) and record the document, audited.

        The blob is written before the row; if the transaction fails the blob stays unreferenced
        (harmless, and still readable by any row that refers to the same content).
        """
        self._check_now(now)
        with self.uow() as uow:
            case = self._visible_case(uow, case_id, actor, lock=False)
            if actor.is_system:
                raise NotPermitted("the system does not attach documents")
            d = self.definition_of(case)
            spec = d.document_types.get(doc_type)
            if spec is None:
                raise InvalidDocument(
                    f"unknown document type {doc_type!r}",
                    field="type",
                    document_type=doc_type,
                    known=sorted(d.document_types),
                )
            if not content:
                raise InvalidDocument("the file is empty", field="file", document_type=doc_type)
            if len(content) > spec.max_size:
                raise InvalidDocument(
                    f"the file is larger than {spec.max_size} bytes",
                    field="file",
                    document_type=doc_type,
                    max_size=spec.max_size,
                )
            if media_type not in spec.media_types:
                raise InvalidDocument(
                    f"{media_type!r} is not accepted for {doc_type!r}",
                    field="file",
                    document_type=doc_type,
                    accepted=list(spec.media_types),
                )
            sha = self.blobs.put(content)
            doc = Document(
                case_id=case.id,
                type=doc_type,
                filename=filename[:255] or "file",
                media_type=media_type,
                size=len(content),
                sha256=sha,
                note=note,
                uploaded_by=actor.user_id,
                uploaded_at=now,
            )
            uow.session.add(doc)
            uow.session.flush()
            self._audit(
                uow,
                actor,
                now,
                "document.attached",
                case,
                documents=[doc],
                extra={"document_type": doc_type},
            )
            uow.commit()
            return doc

    def revoke_document(
        self, case_id: int, document_id: int, reason: str, actor: Actor, now: datetime
    ) -> Document:
        """Mark a document revoked (never deleted); it no longer satisfies requirements."""
        self._check_now(now)
        if not reason or not reason.strip():
            raise ValidationFailed("a reason is required", errors={"reason": ["required"]})
        with self.uow() as uow:
            # locked like advance: a revocation never lands inside a locked transition; and it
            # changes the case (its version), so an optimistic one that read the document as
            # active writes nothing (UnitOfWork.optimistic)
            case = self._visible_case(uow, case_id, actor, lock=True)
            d = self.definition_of(case)
            level = (
                d.agency_types[actor.agency_type].level
                if (actor.agency_type in d.agency_types)
                else None
            )
            if actor.is_system or level in (None, "none"):
                raise NotPermitted(
                    "only an agency officer may revoke a document", action="revoke_document"
                )
            doc = uow.session.get(Document, document_id)
            if doc is None or doc.case_id != case.id:
                raise DocumentNotFound(f"document {document_id} not found", document_id=document_id)
            if doc.revoked_at is not None:
                return doc
            doc.revoked_at, doc.revoked_by, doc.revoke_reason = now, actor.user_id, reason.strip()
            # the ORM's version-checked UPDATE bumps the version (flagged: written even when
            # the time is the one the case holds)
            case.updated_at = now
            flag_modified(case, "updated_at")
            self._audit(
                uow,
                actor,
                now,
                "document.revoked",
                case,
                documents=[doc],
                data={"reason": reason.strip()},
            )
            uow.commit()
            return doc

    # ------------------------------------------------------------------ queries
    def available_transitions(
        self, case_id: int, actor: Actor, now: datetime | None = None, lang: str = "vi"
    ) -> list[Availability]:
        """Transitions the actor may fire now, each with its missing documents and unmet guards.

        Guards that read the form cannot be judged before it is filled in; they are listed in
        ``form_guards`` and checked when the transition is submitted.
        """
        with self.uow(read_only=True) as uow:
            case = self._visible_case(uow, case_id, actor, lock=False)
            return self._availability(uow, case, actor, now, lang)

    def _availability(
        self,
        uow: UnitOfWork,
        case: Case,
        actor: Actor,
        now: datetime | None,
        lang: str,
        active: list[Document] | None = None,
    ) -> list[Availability]:
        """``active``: the case's active documents when the caller has them already."""
        d = self.definition_of(case)
        today = business_date(now) if now else date.today()
        docs = self._active_documents(uow.session, case.id) if active is None else active
        out = []
        for t in d.transitions_from(case.state):
            if t.automatic or not t.permits(actor.agency_type, actor.role):
                continue
            ctx = self._context(d, case, {}, today)
            unmet, form_guards = [], []
            for g in t.guards:
                if any(r.startswith("form.") for r in references(g.test)):
                    form_guards.append(g.key)
                elif not evaluate(g.test, ctx):
                    unmet.append(g.key)
            out.append(
                Availability(
                    t.key,
                    t.label.get(lang),
                    t.dest,
                    tuple(self._missing(t, docs)),
                    tuple(unmet),
                    tuple(form_guards),
                )
            )
        return out

    def get_case(self, case_id: int, actor: Actor, now: datetime) -> dict[str, Any]:
        """Everything about a case the actor may see; the read is recorded in the access log."""
        self._check_now(now)
        with self.uow(autocommit=True) as uow:
            case, open_deadlines, docs, logged = self._case_details(uow, case_id, actor, now)
            self._check_visible(uow, case, actor)
            if actor.user_id is not None and not logged:  # a Core insert: nothing to flush
                row = {"at": now, "user_id": actor.user_id, "case_id": case.id}
                uow.session.execute(_INSERT_ACCESS, row | {"action": "case.read"})
            details = self._details(uow, case, actor, now, open_deadlines, docs)
            uow.commit()
            return details

    @staticmethod
    def _case_details(
        uow: UnitOfWork, case_id: int, actor: Actor, now: datetime
    ) -> tuple[
        Case, list[Deadline] | list[DeadlineView], list[Document] | list[DocumentView], bool
    ]:
        """A case with its open deadlines (by due date) and all its documents; and whether
        the read was logged with them (the case in one of the actor's own units).

        PostgreSQL: one statement (:data:`_CASE_DETAILS`); SQLite: three, logging nothing."""
        if uow.dialect != "postgresql":
            case = uow.get_case(case_id)
            params = {"case_id": case_id}
            open_deadlines = uow.session.execute(_OPEN_DEADLINE_ROWS, params).scalars().all()
            docs = list(uow.session.execute(_ALL_DOCUMENTS, params).scalars())
            return case, list(open_deadlines), docs, False
        units = sorted(actor.units) if actor.user_id is not None else []
        params = {"case_id": case_id, "at": now, "user_id": actor.user_id, "units": units}
        case, (deadline_rows, document_rows) = uow.read_case(_CASE_DETAILS, params)
        return (
            case,
            [DeadlineView(i, k, date.fromisoformat(due), lvl) for i, k, due, lvl in deadline_rows],
            [
                DocumentView(*head, _utc(uploaded), _utc(revoked), reason)
                for *head, uploaded, revoked, reason in document_rows
            ],
            case.unit_code in units,
        )

    def _details(
        self,
        uow: UnitOfWork,
        case: Case,
        actor: Actor,
        now: datetime,
        open_deadlines: list[Deadline] | list[DeadlineView],
        docs: list[Document] | list[DocumentView],
    ) -> dict[str, Any]:
        d = self.definition_of(case)
        today = business_date(now)
        s = case.subject if self.shows_person(case, actor) else None
        return {
            "id": case.id,
            "number": case.number,
            "state": case.state,
            "group": case.group,
            "version": case.version,
            "definition": {"key": case.definition_key, "version": case.definition_version},
            "unit_code": case.unit_code,
            "province_code": case.province_code,
            "fields": dict(case.fields or {}),
            "opened_at": case.opened_at,
            "state_entered_at": case.state_entered_at,
            "closed_at": case.closed_at,
            "subject": None
            if s is None
            else {
                "full_name": s.full_name,
                "date_of_birth": s.date_of_birth,
                "sex": s.sex,
                "national_id": s.national_id,
                "address": s.address,
                "unit_code": s.unit_code,
            },
            "deadlines": [
                {
                    "id": x.id,
                    "key": x.key,
                    "label": d.deadlines[x.key].label.vi if x.key in d.deadlines else x.key,
                    "due_on": x.due_on,
                    "overdue": x.due_on < today,
                    "working_days_left": self.calendar.working_days_between(today, x.due_on),
                    "escalation_level": x.escalation_level,
                }
                for x in open_deadlines
            ],
            "documents": [
                {
                    "id": x.id,
                    "type": x.type,
                    "filename": x.filename,
                    "media_type": x.media_type,
                    "size": x.size,
                    "sha256": x.sha256,
                    "uploaded_at": x.uploaded_at,
                    "revoked": x.revoked_at is not None,
                    "revoke_reason": x.revoke_reason,
                }
                for x in docs
            ],
            "available_transitions": [
                a.__dict__ | {"ready": a.ready}
                for a in self._availability(
                    uow, case, actor, now, "vi", [x for x in docs if x.revoked_at is None]
                )
            ],
            "available_activities": [
                a.key
                for a in d.activities_in(case.state)
                if a.permits(actor.agency_type, actor.role)
            ],
        }

    def list_cases(
        self,
        actor: Actor,
        f: CaseFilter,
        now: datetime,
        *,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Case], str | None]:
        """One page of the cases the actor may see (see :func:`workflow.queries.list_cases`)."""
        if (
            f.q
            and not actor.is_system
            and not any(d.shows_person_to(actor.agency_type) for d in self.registry.all())
        ):
            f = replace(f, by_person=False)  # who does not see persons cannot find them
        elif f.q and NATIONAL_ID_RE.match(f.q.strip()):
            f = replace(f, national_id_hash=self.national_id_hash(f.q))
        with self.uow(read_only=True) as uow:
            return list_cases(
                uow.session,
                actor,
                f,
                business_date(now),
                limit=limit,
                cursor=cursor,
                fold=fold,
                routed_states=self.routed_states(actor.agency_type),
            )

    def read_document(
        self, case_id: int, document_id: int, actor: Actor, now: datetime
    ) -> tuple[Document, bytes]:
        """A document's metadata and bytes; the read is recorded in the access log."""
        self._check_now(now)
        with self.uow() as uow:
            case = self._visible_case(uow, case_id, actor, lock=False)
            doc = uow.session.get(Document, document_id)
            if doc is None or doc.case_id != case.id:
                raise DocumentNotFound(f"document {document_id} not found", document_id=document_id)
            content = self.blobs.get(doc.sha256)
            if actor.user_id is not None:
                uow.session.add(
                    AccessLog(
                        at=now,
                        user_id=actor.user_id,
                        case_id=case.id,
                        document_id=doc.id,
                        action="document.read",
                    )
                )
            uow.commit()
            return doc, content

    def access_log(
        self, actor: Actor, case_id: int | None = None, limit: int = 200
    ) -> list[AccessLog]:
        if not actor.is_admin:
            raise NotPermitted("only administrators may read the access log")
        with self.uow(read_only=True) as uow:
            stmt = select(AccessLog).order_by(AccessLog.id.desc()).limit(limit)
            if case_id is not None:
                stmt = stmt.where(AccessLog.case_id == case_id)
            return list(uow.session.execute(stmt).scalars())

    def events(self, case_id: int, actor: Actor, now: datetime | None = None) -> list[AuditEvent]:
        """The audit of a case. A commune that handed the case over sees its history up to
        the hand-over (read-only); the read is then recorded in the access log."""
        with self.uow(read_only=now is None) as uow:
            stmt = select(AuditEvent).where(AuditEvent.case_id == case_id)
            try:
                self._visible_case(uow, case_id, actor, lock=False)
            except OutOfJurisdiction:
                custody = self._former_custody(uow, case_id, actor)
                if custody is None:
                    raise
                stmt = stmt.where(AuditEvent.seq <= custody.until_seq)
            rows = list(uow.session.execute(stmt.order_by(AuditEvent.seq)).scalars())
            if now is not None and actor.user_id is not None:
                uow.session.add(
                    AccessLog(at=now, user_id=actor.user_id, case_id=case_id, action="case.history")
                )
                uow.commit()
            return rows

    def custody(self, case_id: int, actor: Actor) -> list[CaseCustody]:
        """The communes that held the case before (oldest first), for those who may see it."""
        with self.uow(read_only=True) as uow:
            try:
                self._visible_case(uow, case_id, actor, lock=False)
            except OutOfJurisdiction:
                if self._former_custody(uow, case_id, actor) is None:
                    raise
            return list(
                uow.session.execute(
                    select(CaseCustody)
                    .where(CaseCustody.case_id == case_id)
                    .order_by(CaseCustody.until_seq)
                ).scalars()
            )

    def verify_audit(self) -> audit.VerifyResult:
        with self.uow(read_only=True) as uow:
            return audit.verify(uow.session)
