"""SQLAlchemy 2 typed models: the tables of rehabflow.

The schema itself is created only by the Alembic migrations in ``workflow/migrations``; these
classes describe it for the ORM. Personal data lives in ``subjects`` apart from ``cases``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes stored as UTC (SQLite keeps no offset, so we normalise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; rehabflow stores only aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
STATE_CHANGE = "to_state IS NOT NULL AND (from_state IS NULL OR from_state <> to_state)"
# the activities that set and clear "absent from the locality" (workflow.reports)
ABSENCE_KEYS = "key IN ('report_absence', 'report_return')"
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Agency(Base):
    __tablename__ = "agencies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    units: Mapped[list[AgencyUnit]] = relationship(
        back_populates="agency", cascade="all, delete-orphan", lazy="selectin"
    )


class AgencyUnit(Base):
    """An administrative unit (commune/ward code or province code) an agency covers."""

    __tablename__ = "agency_units"

    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), primary_key=True)
    unit_code: Mapped[str] = mapped_column(String(8), primary_key=True, index=True)
    agency: Mapped[Agency] = relationship(back_populates="units")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(255), default="")
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"), index=True)
    role: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    agency: Mapped[Agency] = relationship(lazy="joined")


class Subject(Base):
    """The person of a case. Personal data: never logged, never copied into audit or outbox."""

    __tablename__ = "subjects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    full_name: Mapped[str] = mapped_column(String(255))
    full_name_folded: Mapped[str] = mapped_column(String(255), index=True)
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(16))
    national_id: Mapped[str | None] = mapped_column(String(32))
    national_id_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    address: Mapped[str | None] = mapped_column(Text)
    unit_code: Mapped[str] = mapped_column(String(8))


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str | None] = mapped_column(String(40), unique=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    definition_key: Mapped[str] = mapped_column(String(64))
    definition_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(64))
    group: Mapped[str] = mapped_column("state_group", String(64))
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_code: Mapped[str] = mapped_column(String(8))
    province_code: Mapped[str] = mapped_column(String(8))
    fields: Mapped[dict] = mapped_column(JSONType, default=dict)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state_entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    subject: Mapped[Subject] = relationship(lazy="joined", innerjoin=True)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        # a commune's cases in a state, newest first: the case list (migration 0008)
        Index("ix_cases_unit_state", "unit_code", "state", "id"),
        # … and in a state group, newest first: the case list by group (migration 0009)
        Index("ix_cases_unit_group", "unit_code", "state_group", "id"),
        Index(  # the reports: when the closed cases were closed (migration 0006)
            "ix_cases_closed",
            "id",
            postgresql_where=text("closed_at IS NOT NULL"),
            sqlite_where=text("closed_at IS NOT NULL"),
            postgresql_include=["closed_at"],
        ),
        Index("ix_cases_province_group", "province_code", "state_group"),
        Index("ix_cases_definition", "definition_key", "definition_version", "state"),
        # the reports: a place's cases read from the index alone (migration 0006)
        Index(
            "ix_cases_place",
            "province_code",
            "unit_code",
            postgresql_include=["id", "closed_at", "state_group"],
        ),
    )


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    revoke_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(  # the few revoked documents (reports; migration 0005)
            "ix_documents_revoked",
            "case_id",
            postgresql_where=text("revoked_at IS NOT NULL"),
            sqlite_where=text("revoked_at IS NOT NULL"),
            postgresql_include=["type"],
        ),
    )


class ActivityRecord(Base):
    __tablename__ = "activity_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    data: Mapped[dict] = mapped_column(JSONType, default=dict)
    audit_seq: Mapped[int] = mapped_column(BigId)

    __table_args__ = (
        Index("ix_activity_key_at", "key", "at", postgresql_include=["case_id", "id"]),
        Index(  # the reports' absence intervals, in the order of their window (migration 0006)
            "ix_activity_absences",
            "case_id",
            "at",
            "id",
            postgresql_where=text(ABSENCE_KEYS),
            sqlite_where=text(ABSENCE_KEYS),
            postgresql_include=["key"],
        ),
    )


class Deadline(Base):
    __tablename__ = "deadlines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # open | met | cancelled
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    anchor_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    remind_on: Mapped[date | None] = mapped_column(Date)
    next_action_on: Mapped[date | None] = mapped_column(Date)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    reminded_on: Mapped[date | None] = mapped_column(Date)
    auto_transition: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_deadlines_sweep", "status", "next_action_on"),
        Index("ix_deadlines_due", "status", "due_on"),
        Index(  # reports (migration 0005)
            "ix_deadlines_due_on",
            "due_on",
            postgresql_include=["key", "status", "closed_at", "case_id"],
        ),
    )


class AuditEvent(Base):
    """Append-only, hash-chained; on PostgreSQL a trigger rejects UPDATE and DELETE."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    case_id: Mapped[int | None] = mapped_column(BigId, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    agency_id: Mapped[int | None] = mapped_column(Integer)
    agency_type: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(128))
    from_state: Mapped[str | None] = mapped_column(String(64))
    to_state: Mapped[str | None] = mapped_column(String(64))
    definition: Mapped[str | None] = mapped_column(String(80))
    data_hash: Mapped[str | None] = mapped_column(String(64))
    documents: Mapped[list] = mapped_column(JSONType, default=list)
    extra: Mapped[dict] = mapped_column(JSONType, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    # the events that move a case, for the reports (migration 0005; workflow.reports)
    __table_args__ = (
        Index(
            "ix_audit_state_changes",
            "at",
            postgresql_where=text(STATE_CHANGE),
            sqlite_where=text(STATE_CHANGE),
            postgresql_include=["case_id", "seq", "action", "definition", "from_state", "to_state"],
        ),
        Index(
            "ix_audit_state_actions",
            "action",
            "at",
            postgresql_where=text(STATE_CHANGE),
            sqlite_where=text(STATE_CHANGE),
            postgresql_include=["case_id", "seq"],
        ),
    )


class AuditHead(Base):
    """The head of one *lane* of the audit chain (``workflow.audit``): row ``id`` is lane
    ``id - 1``. It holds the lane's last sequence number and hash (locked while appending),
    and the hash before it (the last event's ``prev_hash``: what PostgreSQL's one-statement
    append returns of the hash it replaced, ``workflow.audit.PG_APPEND_CTES``).

    The lanes started at the *split*: events up to ``base_seq`` form one chain from the
    genesis hash to ``base_hash``; after it, lane ``l`` of ``stride`` lanes holds the events
    ``base_seq + 1 + l + k * stride`` (k = 0, 1, …), each chained to the one before it in
    the lane, the first to ``base_hash``. One lane (``stride`` 1) is the single chain."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId)
    hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    stride: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    base_seq: Mapped[int] = mapped_column(BigId, server_default=text("0"))
    base_hash: Mapped[str] = mapped_column(String(64), server_default="0" * 64)


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_id: Mapped[int | None] = mapped_column(BigId, index=True)
    audit_seq: Mapped[int | None] = mapped_column(BigId)
    topic: Mapped[str] = mapped_column(String(128))
    recipients: Mapped[dict] = mapped_column(JSONType)
    payload: Mapped[dict] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_outbox_pending", "status", "available_at"),)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    actor_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccessLog(Base):
    """Every read of a case or a document by a person (who, what, when)."""

    __tablename__ = "access_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    case_id: Mapped[int] = mapped_column(BigId, index=True)
    document_id: Mapped[int | None] = mapped_column(BigId)
    action: Mapped[str] = mapped_column(String(32))


class ApiToken(Base):
    """A bearer token: only its SHA-256 is stored; the token is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    user: Mapped[User] = relationship(lazy="joined")


class InboxItem(Base):
    """A notification in an agency's in-app inbox; (message_id, agency_id) is unique, so a
    redelivered message never shows twice."""

    __tablename__ = "inbox_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(80))
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    case_id: Mapped[int | None] = mapped_column(BigId)
    topic: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_by: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ux_inbox_message_agency", "message_id", "agency_id", unique=True),
        Index("ix_inbox_agency_read", "agency_id", "read_at"),
    )


class Delivery(Base):
    """One message to one agency over one channel: queued, delivered, retry or dead."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(80))
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    channel: Mapped[str] = mapped_column(String(16))  # inbox | email | webhook
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ux_delivery", "message_id", "agency_id", "channel", unique=True),
        Index("ix_delivery_due", "status", "next_attempt_at"),
    )


class CaseCustody(Base):
    """A commune that held a case before it was transferred away (change of residence).

    The former holder keeps read access to the case's history up to ``until_seq`` (the audit
    sequence of the hand-over) and nothing else."""

    __tablename__ = "case_custody"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    unit_code: Mapped[str] = mapped_column(String(8), index=True)
    province_code: Mapped[str] = mapped_column(String(8))
    until_at: Mapped[datetime] = mapped_column(UTCDateTime)
    until_seq: Mapped[int] = mapped_column(BigId)


class MigrationRun(Base):
    """One run of ``rehabflow cases migrate``: what it moved, from where to where."""

    __tablename__ = "migration_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition_key: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    criteria: Mapped[dict] = mapped_column(JSONType, default=dict)
    actor: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running | finished | interrupted
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)


class ReportTarget(Base):
    """A plan target set by an administrator: e.g. 60 people in home/community rehab in
    commune 17662 in 2026."""

    __tablename__ = "report_targets"

    unit_code: Mapped[str] = mapped_column(String(8), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    indicator: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[int] = mapped_column(Integer)
    set_by: Mapped[int | None] = mapped_column(Integer)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginAttempt(Base):
    """A failed web login, for lockout and rate limiting (username folded; no password)."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_login_attempts_user_at", "username", "at"),)


class ReportMove(Base):
    """How many audit events moved cases from one state to another, per business day
    (Vietnam) and per place: a count kept by the transaction that writes the event
    (:mod:`workflow.rollup`), so a report reads a few hundred thousand counts for a year of
    the whole country instead of millions of events. ``level`` is ``commune`` (``unit`` a
    commune code) or ``province`` (``unit`` a province code); every move is counted once at
    each level, at the case's current commune and province (a hand-over moves the case's
    counts). ``from_state`` is ``''`` for the opening of a case."""

    __tablename__ = "report_moves"

    level: Mapped[str] = mapped_column(String(8), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    unit: Mapped[str] = mapped_column(String(8), primary_key=True)
    action: Mapped[str] = mapped_column(String(128), primary_key=True)
    definition: Mapped[str] = mapped_column(String(80), primary_key=True)
    from_state: Mapped[str] = mapped_column(String(64), primary_key=True)
    to_state: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index(
            "ix_report_moves_unit_day",
            "level",
            "unit",
            "day",
            postgresql_include=["action", "definition", "from_state", "to_state"],
        ),
    )


class ReportDeadline(Base):
    """How many deadlines fall due on each day, per place, key, status and whether they were
    closed after their due date (Vietnam): counts kept by the transactions that start, close
    or move deadlines (:mod:`workflow.rollup`), for the reports' deadline figures. Levels and
    places as in :class:`ReportMove`."""

    __tablename__ = "report_deadlines"

    level: Mapped[str] = mapped_column(String(8), primary_key=True)
    due_on: Mapped[date] = mapped_column(Date, primary_key=True)
    unit: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    late: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index(
            "ix_report_deadlines_unit_due",
            "level",
            "unit",
            "due_on",
            postgresql_include=["key", "status", "late"],
        ),
    )


def _delta_table(counters: Any, name: str) -> Table:
    """The deltas of ``counters`` not folded into it yet (``workflow.rollup``): its columns,
    no key, so a writer never waits for another's row; PostgreSQL's commands insert here, the
    sweep folds (``rollup.fold``)."""
    return Table(
        name,
        Base.metadata,
        *[Column(c.name, c.type, nullable=c.nullable) for c in counters.__table__.columns],
    )


REPORT_MOVES_DELTA = _delta_table(ReportMove, "report_moves_delta")
REPORT_DEADLINES_DELTA = _delta_table(ReportDeadline, "report_deadlines_delta")
