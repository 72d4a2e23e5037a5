"""A command's round trips on PostgreSQL (issue #8), and that fewer of them write the same rows.

On PostgreSQL a command (``advance``, ``record_activity``) reads its case with its documents
and open deadlines in one statement, without a lock, and writes everything in one more, its
own transaction: the case (version-checked) and deadline rows, then the audit event (its seq
and hash given by the database under the chain head's lock), the outbox rows, the report
counters, an activity's record and an idempotency key's record. If the case changed between
the two, the write writes nothing and the command runs again with its case row locked
(``SELECT … FOR UPDATE``), its documents and deadlines read after the lock. SQLite keeps one
statement per table (the generic path), so the same walk on both databases must leave the
same rows: the same audit chain (hashes included), outbox rows, deadline rows, cases,
custody and activity rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from itertools import count
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from workflow import audit, prepared
from workflow.db import make_session_factory
from workflow.errors import (
    AuditChainBroken,
    CaseNotFound,
    IdempotencyConflict,
    MissingDocuments,
    OutOfJurisdiction,
    StaleCase,
)
from workflow.model import (
    AccessLog,
    ActivityRecord,
    AuditEvent,
    AuditHead,
    Case,
    CaseCustody,
    Deadline,
    Document,
    IdempotencyRecord,
    OutboxMessage,
    Subject,
)
from workflow.registry import Registry
from workflow.service import CaseService, DeadlineWrites, _Request
from workflow.simulate import fake_pdf
from workflow.storage import MemoryBlobStore
from workflow.uow import UnitOfWork

from .. import conftest
from ..conftest import OTHER_COMMUNE, PROVINCE, Actors, _truncate_pg
from .helpers import Driver, at

DAY = date(2026, 3, 2)
TABLES = (
    Case,
    Subject,
    Deadline,
    AuditEvent,
    AuditHead,
    OutboxMessage,
    CaseCustody,
    ActivityRecord,
    IdempotencyRecord,
)


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements sent inside the block (``BEGIN`` is not counted, nor a ``COMMIT``
    sent on its own).

    PostgreSQL: as the driver sends them (psycopg's ``Cursor.execute``), so statements the
    engine sends past SQLAlchemy count too; one sent in a pipeline is marked ``[pipeline N]``
    (N: the block's Nth pipeline; one pipeline is one round trip), and a ``COMMIT`` sent in a
    pipeline is listed there. SQLite: SQLAlchemy's ``before_cursor_execute``."""
    seen: list[str] = []
    if engine.dialect.name == "postgresql":
        real, real_commit = psycopg.Cursor.execute, psycopg.Connection.commit
        pipelines: list[Any] = []  # held, so that no two share an id()

        def mark(connection: psycopg.Connection) -> str:
            pipeline = connection._pipeline  # noqa: SLF001 - no public accessor
            if pipeline is None:
                return ""
            if not any(p is pipeline for p in pipelines):
                pipelines.append(pipeline)
            n = next(i for i, p in enumerate(pipelines, 1) if p is pipeline)
            return f" [pipeline {n}]"

        def execute(self, query, params=None, **kw):  # noqa: ANN001, ANN202
            text_ = query if isinstance(query, str) else query.decode()
            seen.append(" ".join(text_.split()) + mark(self.connection))
            return real(self, query, params, **kw)

        def commit(self):  # noqa: ANN001, ANN202
            if marked := mark(self):
                seen.append("COMMIT" + marked)
            return real_commit(self)

        real_fetch = prepared.fetch

        def fetch(raw, sql, values, *, first):  # noqa: ANN001, ANN202
            seen.append(" ".join(sql.split()))  # (never in a pipeline: raw in autocommit)
            return real_fetch(raw, sql, values, first=first)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(psycopg.Cursor, "execute", execute)
            mp.setattr(psycopg.Connection, "commit", commit)
            mp.setattr(prepared, "fetch", fetch)
            yield seen
        return

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def in_lane_of(case_id: int) -> Any:
    """The head of the audit lane of ``case_id``'s events (``workflow.audit``)."""
    return AuditHead.id == 1 + case_id % AuditHead.stride


def written(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row a command writes, as the ORM's column types read them back."""
    with engine.connect() as conn:
        return {
            model.__tablename__: [
                dict(row._mapping)
                for row in conn.execute(
                    select(model.__table__).order_by(*model.__table__.primary_key.columns)
                )
            ]
            for model in TABLES
        }


def walk(drive: Driver) -> None:
    """Deadlines started, met (a repeating one restarted), cancelled by a terminal transition;
    activities; a hand-over (outbox rows for both communes, a custody row); an idempotent
    command replayed."""
    cid = drive.open(DAY).case_id
    drive.fire(cid, "request_determination", DAY)
    drive.fire(cid, "record_addiction_result", DAY)
    drive.fire(cid, "register_voluntary_home", DAY, registered_by="self")
    d = drive.definition(cid)
    form = drive.form(cid, "decide_voluntary_home", DAY, term_months=6)
    drive.attach(
        cid, [req.any_of[0] for req in d.transitions["decide_voluntary_home"].documents], DAY
    )
    head = drive.actor_for(d.transitions["decide_voluntary_home"])
    first = drive.service.advance(
        cid, "decide_voluntary_home", form, head, at(DAY), idempotency_key="k-1"
    )
    again = drive.service.advance(
        cid, "decide_voluntary_home", form, head, at(DAY), idempotency_key="k-1"
    )
    assert again == first
    drive.activity(cid, "check_in", date(2026, 4, 1))  # meets check_in_due, starts the next
    police = drive.actors.get("commune_police", "officer")
    drive.service.record_activity(
        cid,
        "change_residence",
        {"moved_date": "2026-04-02", "new_unit": OTHER_COMMUNE, "reason": "chuyển nhà"},
        police,
        at(date(2026, 4, 2)),
    )
    closer = d.transitions["close_case"].allowed[0]
    drive.fire(
        cid,
        "close_case",
        date(2026, 4, 3),
        actor=drive.actors.get(closer.agency, closer.roles[0], OTHER_COMMUNE),
    )


@contextmanager
def plan_modes_at_checkin(engine: Engine) -> Iterator[list[str]]:
    """The plan cache mode of every connection given back to the pool inside the block,
    marked `` (autocommit)`` if the connection is still in psycopg's autocommit mode (an
    optimistic command's unit of work puts it there, and must take it out again: a later
    unit of work would otherwise commit statement by statement)."""
    modes: list[str] = []

    def checkin(dbapi_connection: psycopg.Connection, record: Any) -> None:
        if dbapi_connection is None:  # invalidated
            return
        # through libpq itself: no transaction opened, and not among the statements counted
        shown = dbapi_connection.pgconn.exec_(b"SHOW plan_cache_mode")
        mode = shown.get_value(0, 0).decode()
        modes.append(mode + (" (autocommit)" if dbapi_connection.autocommit else ""))

    event.listen(engine, "checkin", checkin)
    try:
        yield modes
    finally:
        event.remove(engine, "checkin", checkin)


@pytest.mark.postgres
def test_one_advance_is_two_statements_on_postgresql(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An advance without an idempotency key runs optimistically: one read (the case, its
    subject, documents and open deadlines: one snapshot), then one write, each its own
    transaction: no lock, no BEGIN, no COMMIT; two round trips in all."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the round trips counted are PostgreSQL's (SQLite keeps one per table)")
    cid, form, officer = _ready_for_determination(drive)
    commits: list[str] = []
    real_commit = psycopg.Connection.commit

    def commit(self: psycopg.Connection) -> None:
        commits.append(str(self.info.transaction_status.name))
        real_commit(self)

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    with statements(engine) as sent, plan_modes_at_checkin(engine) as modes:
        result = service.advance(cid, "request_determination", form, officer, at(DAY))
    assert [s.split()[0] for s in sent] == ["SELECT", "WITH"], sent
    assert "FOR UPDATE" not in sent[0] and sent[0].count("json_agg") == 2  # documents, deadlines
    # generic plans for the session from the read on; the write resets them, as its last column
    assert "set_config('plan_cache_mode', 'force_generic_plan', false)" in sent[0]
    assert (
        "set_config('plan_cache_mode', NULL, false) FROM hashed LEFT JOIN head ON true WHERE"
        in sent[1]
    )
    # and it fails as a whole if the case row matched but no lane head did (a split)
    assert sent[1].endswith("THEN CAST('audit lane split' || hashed.alike AS int) END IS NULL")
    assert modes == ["auto"], modes  # the connection goes back to the pool as it came
    # in autocommit the write is its own transaction: no commit is asked of the driver
    assert not any("[pipeline" in s for s in sent), sent
    assert commits == [], commits
    assert sent[1].startswith("WITH hashed AS")  # the audit hash checked before any write
    assert "updated_case AS ( UPDATE cases" in sent[1]  # + deadline rows
    assert "WHERE id = %(case_id)s::BIGINT AND version = %(old_version)s AND" in sent[1]
    for cte in ("head AS ( UPDATE audit_head", "INSERT INTO audit_events", "INSERT INTO outbox"):
        assert cte in sent[1]
    assert "INSERT INTO report_moves" in sent[1] and "INSERT INTO report_deadlines" in sent[1]
    with service.uow(read_only=True) as uow:
        head = uow.session.execute(select(AuditHead).where(in_lane_of(cid))).scalar_one()
        event_ = uow.session.get(AuditEvent, result.audit_seq)
        outbox = uow.session.execute(select(OutboxMessage.audit_seq)).scalars().all()
        case = uow.session.get(Case, cid)
    # the event the database hashed is the head, and its outbox rows point at it
    assert (head.seq, head.hash, head.prev_hash) == (event_.seq, event_.hash, event_.prev_hash)
    assert result.audit_seq in outbox
    assert (case.state, case.version) == (result.state, result.version)
    with service.uow(read_only=True) as uow:
        rows = uow.session.execute(select(Deadline.key, Deadline.status)).all()
    assert ("determination", "open") in rows
    assert service.verify_audit().ok


def _open_deadline(service: CaseService, case_id: int, key: str) -> int:
    with service.uow(read_only=True) as uow:
        return uow.session.execute(
            select(Deadline.id).where(
                Deadline.case_id == case_id, Deadline.key == key, Deadline.status == "open"
            )
        ).scalar_one()


@pytest.mark.postgres
def test_one_activity_is_two_statements_with_its_record_on_postgresql(
    engine: Engine, service: CaseService, drive: Driver
) -> None:
    """A check-in runs optimistically too: its record (key, data, actor, time) is written by
    the command's one write, pointing at the event the database numbered, and the check-in
    deadline it meets is closed and the next one started by the same statement."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the statements counted are PostgreSQL's")
    cid = drive.open(DAY).case_id
    drive.fire(cid, "request_determination", DAY)
    drive.fire(cid, "record_addiction_result", DAY)
    drive.fire(cid, "register_voluntary_home", DAY, registered_by="self")
    d = drive.definition(cid)
    drive.attach(
        cid, [req.any_of[0] for req in d.transitions["decide_voluntary_home"].documents], DAY
    )
    drive.fire(cid, "decide_voluntary_home", DAY, term_months=6)
    act = d.activities["check_in"]
    day = date(2026, 4, 1)
    drive.attach(cid, [req.any_of[0] for req in act.documents], day)
    form = drive.form(cid, "check_in", day)
    officer = drive.actor_for(act)
    due = _open_deadline(service, cid, "check_in_due")
    with statements(engine) as sent, plan_modes_at_checkin(engine) as modes:
        result = service.record_activity(cid, "check_in", form, officer, at(day))
    assert [x.split()[0] for x in sent] == ["SELECT", "WITH"], sent
    assert "new_activity AS ( INSERT INTO activity_records" in sent[1]
    assert modes == ["auto"]
    with service.uow(read_only=True) as uow:
        (record,) = uow.session.execute(
            select(ActivityRecord).where(ActivityRecord.case_id == cid)
        ).scalars()
        met = uow.session.get(Deadline, due)
    started = _open_deadline(service, cid, "check_in_due")
    assert (record.key, record.audit_seq, record.actor_id) == (
        "check_in",
        result.audit_seq,
        officer.user_id,
    )
    assert record.at == at(day) and record.data == form  # (the form's values: JSON already)
    assert met.status == "met" and started != due
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_an_advance_with_an_idempotency_key_writes_its_record_in_the_same_statement(
    engine: Engine, service: CaseService, drive: Driver
) -> None:
    """With an idempotency key the advance is optimistic too, and two statements as well:
    the key's record is read with the case, and written (the request's digest, the result
    with the event's seq from the head) by the command's one write. The same request again
    gets the same result from its read; another request with that key is refused."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the statements counted are PostgreSQL's")
    cid, form, officer = _ready_for_determination(drive)
    with statements(engine) as sent, plan_modes_at_checkin(engine) as modes:
        result = service.advance(
            cid, "request_determination", form, officer, at(DAY), idempotency_key="k-1"
        )
    assert [x.split()[0] for x in sent] == ["SELECT", "WITH"], sent
    assert "FROM idempotency_keys" in sent[0] and "FROM cases" in sent[0], sent[0]
    assert "FOR UPDATE" not in sent[0]
    assert "new_key AS ( INSERT INTO idempotency_keys" in sent[1]
    assert modes == ["auto"], modes
    with service.uow(read_only=True) as uow:
        record = uow.session.get(IdempotencyRecord, (officer.user_id, "k-1"))
    assert record is not None and record.response == result.to_dict()
    assert record.created_at == at(DAY)
    with statements(engine) as again_sent:
        again = service.advance(
            cid, "request_determination", form, officer, at(DAY), idempotency_key="k-1"
        )
    # the read, and the plan cache mode it set reset as no write follows to reset it
    assert again == result and len(again_sent) == 2, again_sent
    assert "FROM idempotency_keys" in again_sent[0] and "plan_cache_mode" in again_sent[1]
    with pytest.raises(IdempotencyConflict):
        service.advance(
            cid,
            "request_determination",
            {**form, "reason": "khác"},
            officer,
            at(DAY),
            idempotency_key="k-1",
        )
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_a_key_committed_meanwhile_gives_its_result_and_writes_nothing(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with the same key: the second looked the key up before the first
    committed. Its write fails on the key's record and writes nothing (one statement); it
    returns the first request's result."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's path")
    cid, form, officer = _ready_for_determination(drive)
    first: list[Any] = []
    real = CaseService._replayed

    def replay_then_the_first_commits(*args: Any) -> Any:
        found = real(*args)
        if not first:  # the first lookup of the key: the other request commits right after
            first.append(None)
            first[0] = service.advance(
                cid, "request_determination", form, officer, at(DAY), idempotency_key="k-2"
            )
        return found

    monkeypatch.setattr(CaseService, "_replayed", staticmethod(replay_then_the_first_commits))
    before_events = len(written(engine)["audit_events"])
    second = service.advance(
        cid, "request_determination", form, officer, at(DAY), idempotency_key="k-2"
    )
    monkeypatch.undo()
    assert second == first[0]
    after = written(engine)
    assert len(after["audit_events"]) == before_events + 1  # the first request's only
    assert service.verify_audit().ok


def _interleaved(monkeypatch: pytest.MonkeyPatch, other: Any) -> list[int]:
    """Run ``other`` (another command, in its own unit of work) right after every optimistic
    read of a command, the first time only; the versions the reads saw."""
    real = UnitOfWork.read_for_command
    seen: list[int] = []

    def read_then_other(self: UnitOfWork, *args: Any) -> Any:
        case, rest = real(self, *args)
        seen.append(case.version)
        if len(seen) == 1:
            other()
        return case, rest

    monkeypatch.setattr(UnitOfWork, "read_for_command", read_then_other)
    return seen


@pytest.mark.postgres
def test_a_revocation_after_an_optimistic_read_is_not_missed(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The optimistic read saw the required document active; before its write, an officer
    revokes it. The revocation changes the case's version, so the write writes nothing; the
    command runs again with the case locked, finds the document revoked and is refused:
    nothing of it is written, and the revocation stands."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's commands hold the writer's lock from BEGIN: nothing interleaves")
    cid, form, officer = _ready_for_determination(drive)
    with service.uow(read_only=True) as uow:
        (doc_id,) = uow.session.execute(
            select(Document.id).where(Document.case_id == cid)
        ).scalars()
    police = drive.actors.get("commune_police", "officer")
    reads = _interleaved(
        monkeypatch,
        lambda: service.revoke_document(cid, doc_id, "bản sao không hợp lệ", police, at(DAY, 9)),
    )
    before = written(engine)
    with statements(engine) as sent, pytest.raises(MissingDocuments) as refused:
        service.advance(cid, "request_determination", form, officer, at(DAY, 10))
    assert refused.value.details["missing_documents"] == ["determination_request"]
    assert reads == [before["cases"][0]["version"]]  # one optimistic read, then the locked one
    assert any("FOR UPDATE" in s for s in sent), sent
    after = written(engine)
    # only the revocation's event, and the case's new version (bumped by the revocation)
    assert [e["action"] for e in after["audit_events"][len(before["audit_events"]) :]] == [
        "document.revoked"
    ]
    assert after["cases"][0]["version"] == before["cases"][0]["version"] + 1
    assert after["cases"][0]["state"] == before["cases"][0]["state"]
    assert after["deadlines"] == before["deadlines"]
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_an_optimistic_command_that_lost_its_race_runs_again_locked(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command changes the case between the optimistic read and its write, without
    making the transition impossible (a document the transition does not need revoked): the
    optimistic write writes nothing (no event, the head unmoved), and the command runs again,
    locked, on the case as the other left it: one event each, two versions on."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's commands hold the writer's lock from BEGIN: nothing interleaves")
    cid, form, officer = _ready_for_determination(drive)
    drive.attach(cid, ["addiction_result"], DAY)
    with service.uow(read_only=True) as uow:
        extra = uow.session.execute(
            select(Document.id).where(Document.case_id == cid, Document.type == "addiction_result")
        ).scalar_one()
    police = drive.actors.get("commune_police", "officer")
    reads = _interleaved(
        monkeypatch,
        lambda: service.revoke_document(cid, extra, "nhầm hồ sơ", police, at(DAY, 9)),
    )
    before = written(engine)
    version = before["cases"][0]["version"]
    with statements(engine) as sent, plan_modes_at_checkin(engine) as modes:
        result = service.advance(cid, "request_determination", form, officer, at(DAY, 10))
    # the revocation's, the optimistic unit's and the locked one's: each as it came
    assert modes == ["auto"] * 3, modes
    writes = [s for s in sent if s.startswith("WITH hashed AS")]
    assert len(writes) == 2, sent  # the optimistic one (nothing written), the locked one
    assert reads == [version]
    assert (result.state, result.version) == ("addiction_determination", version + 2)
    after = written(engine)
    actions = [e["action"] for e in after["audit_events"][len(before["audit_events"]) :]]
    assert actions == ["document.revoked", "transition:request_determination"]
    (lane,) = [h for h in before["audit_head"] if h["id"] == 1 + cid % h["stride"]]
    (moved,) = [h for h in after["audit_head"] if h["id"] == lane["id"]]
    assert moved["seq"] == lane["seq"] + 2 * lane["stride"]  # two events in the case's lane
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_an_optimistic_command_refused_resets_the_plan_cache_mode(
    engine: Engine, service: CaseService, drive: Driver
) -> None:
    """A command refused after its optimistic read (no write to reset the setting) still
    gives its connection back with the server's default plan cache mode."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's setting")
    cid = drive.open(DAY).case_id  # the required document is missing
    form = drive.form(cid, "request_determination", DAY)
    officer = drive.actor_for(drive.definition(cid).transitions["request_determination"])
    with plan_modes_at_checkin(engine) as modes, pytest.raises(MissingDocuments):
        service.advance(cid, "request_determination", form, officer, at(DAY))
    assert modes == ["auto"], modes


def test_the_commands_statements_stay_short_enough_for_psycopg_to_cache_their_parsing() -> None:
    """psycopg parses a statement's ``%(name)s`` placeholders once and caches the result,
    but only for statements of at most 4096 bytes (``psycopg._queries``'s
    MAX_CACHED_STATEMENT_LENGTH): above it, every execution parses again. The command's
    write went to 4301 bytes once, and cost 0.1 ms of CPU per command (measured)."""
    from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

    from workflow import service as service_module
    from workflow import uow as uow_module

    dialect = pg_psycopg.dialect()
    assert len(service_module._WRITES) == 4  # with or without an activity's, a key's record
    for statement in (
        *service_module._WRITES.values(),
        service_module._COMMAND_READ,
        service_module._DOCUMENTS_AND_OPEN_DEADLINES,
        uow_module._CASE_ROW,
        audit._APPEND,
    ):
        assert len(str(statement.compile(dialect=dialect)).encode()) <= 4096


def _ready_for_determination(drive: Driver) -> tuple[int, dict, Any]:
    cid = drive.open(DAY).case_id
    drive.attach(cid, ["determination_request"], DAY)
    form = drive.form(cid, "request_determination", DAY)
    return cid, form, drive.actor_for(drive.definition(cid).transitions["request_determination"])


@pytest.mark.postgres
def test_a_hash_the_database_would_make_differently_writes_nothing(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit hash is checked in the write statement itself, before anything is
    written: bytes of the event the database would hash otherwise than rehabflow (here: a
    digest that does not match) leave the case, its deadlines, the chain and the outbox
    as they were, and the command fails with AuditChainBroken."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite appends with the hash computed in Python")
    cid, form, officer = _ready_for_determination(drive)
    before = written(engine)
    real = audit.append_parameters

    def other_bytes(*args: Any, **kw: Any) -> dict[str, Any]:
        params = real(*args, **kw)
        params["hash_parts_digest"] = "0" * 64
        return params

    monkeypatch.setattr(audit, "append_parameters", other_bytes)
    with pytest.raises(AuditChainBroken, match="nothing was written"):
        service.advance(cid, "request_determination", form, officer, at(DAY))
    assert written(engine) == before
    monkeypatch.setattr(audit, "append_parameters", real)
    assert service.advance(cid, "request_determination", form, officer, at(DAY)).state == (
        "addiction_determination"
    )
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_an_error_in_the_write_sent_past_sqlalchemy_rolls_it_back(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write the command sends straight to the driver fails: nothing is committed, the
    error is SQLAlchemy's (parameters hidden), nothing is written, and the connection goes
    back to the pool fit for the next command."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writes go through SQLAlchemy")
    cid, form, officer = _ready_for_determination(drive)
    before = written(engine)
    real = CaseService._deadline_parameters

    def not_json(deadlines: DeadlineWrites) -> dict[str, Any]:
        return {**real(deadlines), "started": "not json"}

    monkeypatch.setattr(CaseService, "_deadline_parameters", staticmethod(not_json))
    with pytest.raises(DBAPIError) as failed:
        service.advance(cid, "request_determination", form, officer, at(DAY))
    assert isinstance(failed.value.orig, psycopg.errors.InvalidTextRepresentation)
    assert "not json" not in str(failed.value)  # parameters hidden
    assert written(engine) == before
    monkeypatch.setattr(CaseService, "_deadline_parameters", staticmethod(real))
    done = service.advance(cid, "request_determination", form, officer, at(DAY))
    assert done.state == "addiction_determination"
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_a_connection_lost_under_the_write_is_not_reused(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the command's connection between its lock and its write: the error
    says the connection was invalidated, nothing is written, and the next command gets a
    new connection from the pool instead of the dead one."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's connections")
    cid, form, officer = _ready_for_determination(drive)
    before = written(engine)
    real = UnitOfWork.write_and_commit
    killed: list[int] = []

    def killed_first(self: UnitOfWork, statement: Any, params: dict[str, Any]) -> Any:
        pid = self.session.connection().connection.driver_connection.info.backend_pid
        with engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        killed.append(pid)
        return real(self, statement, params)

    monkeypatch.setattr(UnitOfWork, "write_and_commit", killed_first)
    with pytest.raises(DBAPIError) as failed:
        service.advance(cid, "request_determination", form, officer, at(DAY))
    assert failed.value.connection_invalidated and killed
    assert written(engine) == before
    monkeypatch.setattr(UnitOfWork, "write_and_commit", real)
    done = service.advance(cid, "request_determination", form, officer, at(DAY))
    assert done.state == "addiction_determination"
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_postgresql_writes_what_the_generic_path_writes(
    sqlite_engine: Engine,
    pg_engine: Engine,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _truncate_pg(pg_engine)
    results = {}
    for engine in (sqlite_engine, pg_engine):
        # the same names, outbox ids and clock on both databases
        monkeypatch.setattr(conftest, "_ids", count(1))
        uuids = (uuid.UUID(int=i) for i in count(1))
        monkeypatch.setattr("workflow.service.uuid", SimpleNamespace(uuid4=uuids.__next__))
        factory = make_session_factory(engine)
        service = CaseService(factory, registry, secret_key="test-secret", blobs=MemoryBlobStore())
        if engine is sqlite_engine:  # the audit lanes of the PostgreSQL test database
            with factory() as session:
                audit.set_lanes(session, conftest.PG_LANES)
                session.commit()
        walk(Driver(service, Actors(factory)))
        assert service.verify_audit().ok
        results[engine.dialect.name] = written(engine)
    generic, pg = results["sqlite"], results["postgresql"]
    assert len(generic["audit_events"]) == 14 and len(generic["outbox"]) == 8
    # two started by one command (ids in order), a repeating one met and restarted, the
    # rest cancelled by the terminal transition
    assert [(r["key"], r["status"]) for r in generic["deadlines"]] == [
        ("determination", "met"),
        ("register_voluntary", "met"),
        ("voluntary_home_decision", "met"),
        ("voluntary_term", "cancelled"),
        ("check_in_due", "met"),
        ("check_in_due", "cancelled"),
    ]
    assert len(generic["case_custody"]) == 1 and len(generic["idempotency_keys"]) == 1
    for table in generic:
        assert pg[table] == generic[table], table


def test_a_case_changed_meanwhile_is_stale_and_nothing_is_written(
    engine: Engine, service: CaseService, drive: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version check of the case's write: the case as read before another command bumped
    its version is a StaleCase, and nothing of the command (case, deadlines, event, head,
    outbox) is written. SQLite raises it before the audit head is taken; PostgreSQL's one
    statement moves the head only if the case row matched."""
    cid = drive.open(DAY).case_id
    drive.fire(cid, "request_determination", DAY)  # the determination deadline runs
    drive.attach(cid, ["addiction_result"], DAY)
    form = drive.form(cid, "record_addiction_result", DAY)
    actor = drive.actor_for(drive.definition(cid).transitions["record_addiction_result"])
    before = written(engine)
    real_get_case, real_lock = UnitOfWork.get_case, UnitOfWork.lock_case_and_read
    real_read = UnitOfWork.read_case

    def read_before_the_other_command(self: UnitOfWork, case_id: int, **kw: Any) -> Case:
        case = real_get_case(self, case_id, **kw)
        case.version -= 1
        return case

    def locked_before_the_other_command(self: UnitOfWork, case_id: int, then: Any) -> Any:
        case, row = real_lock(self, case_id, then)
        case.version -= 1
        return case, row

    def optimistic_read_before_the_other_command(self: UnitOfWork, *args: Any) -> Any:
        case, rest = real_read(self, *args)
        case.version -= 1
        return case, rest

    monkeypatch.setattr(UnitOfWork, "get_case", read_before_the_other_command)
    monkeypatch.setattr(UnitOfWork, "lock_case_and_read", locked_before_the_other_command)
    monkeypatch.setattr(UnitOfWork, "read_case", optimistic_read_before_the_other_command)
    with statements(engine) as sent, pytest.raises(StaleCase):
        service.advance(cid, "record_addiction_result", form, actor, at(DAY))
    writes = [s for s in sent if "UPDATE cases" in s]
    # PostgreSQL: the optimistic write, then the locked one; each wrote nothing
    assert len(writes) == (2 if engine.dialect.name == "postgresql" else 1), sent
    if engine.dialect.name == "sqlite":
        assert not any("audit_head" in s for s in sent), sent
    monkeypatch.undo()
    assert written(engine) == before
    assert service.verify_audit().ok


@pytest.mark.postgres
def test_postgresql_writes_nothing_unless_the_case_row_matched(
    engine: Engine, service: CaseService, drive: Driver
) -> None:
    """The deadline rows, the event, the head and the outbox rows ride in the case's
    statement only if its version check matched (not merely rolled back afterwards)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writes the deadline rows by separate statements")
    cid = drive.open(DAY).case_id
    drive.fire(cid, "request_determination", DAY)
    started = {
        "case_id": cid,
        "key": "determination",
        "status": "open",
        "started_at": at(DAY),
        "anchor_on": DAY,
        "due_on": DAY,
        "escalation_level": 0,
    }
    actor = drive.actors.get("commune_police", "officer")
    request = _Request({}, cid, "x", {}, actor, at(DAY), None, None, "vi")
    with service.uow() as uow:
        case, _, open_deadlines = service._command_case(uow, request)
        assert [key for _, key, _ in open_deadlines] == ["determination"]
        ids = [i for i, _, _ in open_deadlines]
        closing = [(due_on, key, "met") for _, key, due_on in open_deadlines]
        plan = DeadlineWrites(ids, [], [started], at(DAY), "x", closing)
        head = uow.session.execute(select(AuditHead.seq, AuditHead.hash)).all()
        n_events = len(uow.session.execute(select(AuditEvent.seq)).all())
        n_outbox = len(uow.session.execute(select(OutboxMessage.id)).all())
        case.version -= 1
        notify = drive.definition(cid).transitions["record_addiction_result"]
        assert notify.notify  # it has outbox rows to write
        with pytest.raises(StaleCase):
            service._write(uow, case, plan, actor, at(DAY), "transition:x", notify=notify)
        rows = uow.session.execute(
            select(Deadline.id, Deadline.status).where(Deadline.case_id == cid)
        ).all()
        assert rows == [(ids[0], "open")]
        assert uow.session.execute(select(AuditHead.seq, AuditHead.hash)).all() == head
        assert len(uow.session.execute(select(AuditEvent.seq)).all()) == n_events
        assert len(uow.session.execute(select(OutboxMessage.id)).all()) == n_outbox


def page_walk(drive: Driver) -> tuple[int, Any]:
    """A case with open deadlines, an escalated one, active and revoked documents, uploaded
    at times with microseconds; (its id, an officer who may read it)."""
    cid = drive.open(DAY).case_id
    drive.attach(cid, ["determination_request"], DAY)
    officer = drive.actors.get("commune_police", "officer")
    odd = at(DAY, 10).replace(microsecond=123457)
    extra = drive.service.attach_document(
        cid,
        "addiction_result",
        fake_pdf("extra"),
        officer,
        odd,
        filename="x.pdf",
        media_type="application/pdf",
    )
    drive.service.revoke_document(cid, extra.id, "nhầm hồ sơ", officer, odd.replace(second=5))
    drive.fire(cid, "request_determination", DAY)  # starts the determination deadline
    with drive.service.uow() as uow:
        uow.session.execute(
            Deadline.__table__.update()
            .where(Deadline.__table__.c.case_id == cid)
            .values(escalation_level=2)
        )
        uow.commit()
    return cid, officer


def _reads_logged(engine: Engine, case_id: int) -> list[int]:
    """The users whose reads of the case are in the access log, as another connection sees
    them (so committed)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(AccessLog.user_id)
                .where(AccessLog.case_id == case_id, AccessLog.action == "case.read")
                .order_by(AccessLog.id)
            ).scalars()
        )


@pytest.mark.postgres
def test_the_case_page_is_one_statement_on_postgresql(
    engine: Engine, service: CaseService, drive: Driver
) -> None:
    """The case page of a case in the reader's own commune: the case, its subject, open
    deadlines and documents read, and the read logged, by one autocommit statement. A
    province agency's read (visible by routing) is logged by a second statement; a read
    refused is not logged."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads the case page with a statement per table")
    cid, officer = page_walk(drive)
    with statements(engine) as sent:
        details = service.get_case(cid, officer, at(DAY, 11))
    assert [s.split()[0] for s in sent] == ["WITH"], sent
    assert "INSERT INTO access_log" in sent[0] and "json_agg" in sent[0]
    assert "FOR UPDATE" not in sent[0]
    assert [d["key"] for d in details["deadlines"]] == ["determination"]
    assert [d["revoked"] for d in details["documents"]] == [False, True, False]
    assert _reads_logged(engine, cid) == [officer.user_id]

    # the province's court sees the case once it is routed to it: logged by its own INSERT
    court = drive.actors.get("court", "judge", PROVINCE)
    with pytest.raises(OutOfJurisdiction):
        service.get_case(cid, court, at(DAY, 11))
    assert _reads_logged(engine, cid) == [officer.user_id]  # the refused read: not logged
    for key in (
        "record_addiction_result",
        "open_compulsory_dossier",
        "notify_dossier_reading",
        "send_for_legal_check",
        "transfer_to_court",
    ):
        drive.fire(cid, key, DAY)
    with statements(engine) as sent:
        assert service.get_case(cid, court, at(DAY, 11))["state"] == "court_filing"
    assert [s.split()[0] for s in sent] == ["WITH", "INSERT"], sent
    assert _reads_logged(engine, cid) == [officer.user_id, court.user_id]


def test_the_page_of_a_case_that_does_not_exist_is_not_found_and_logs_nothing(
    engine: Engine, service: CaseService, drive: Driver
) -> None:
    """On PostgreSQL the case page is read straight through the driver: no row is
    ``CaseNotFound`` (the API's 404), as on SQLite, and no read is logged."""
    cid, officer = page_walk(drive)
    with pytest.raises(CaseNotFound) as raised:
        service.get_case(cid + 1000, officer, at(DAY, 11))
    assert raised.value.status == 404
    assert _reads_logged(engine, cid + 1000) == []
    assert service.get_case(cid, officer, at(DAY, 11))["id"] == cid  # the connection is fine


@pytest.mark.postgres
def test_the_case_page_reads_the_same_on_both_databases(
    sqlite_engine: Engine,
    pg_engine: Engine,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL's one statement (JSON arrays of deadlines and documents) gives the same
    page as SQLite's ORM reads: dates, times to the microsecond, revoked documents."""
    _truncate_pg(pg_engine)
    pages = {}
    for engine in (sqlite_engine, pg_engine):
        monkeypatch.setattr(conftest, "_ids", count(1))
        factory = make_session_factory(engine)
        service = CaseService(factory, registry, secret_key="test-secret", blobs=MemoryBlobStore())
        drive = Driver(service, Actors(factory))
        cid, officer = page_walk(drive)
        pages[engine.dialect.name] = service.get_case(cid, officer, at(DAY, 11))
    generic, pg = pages["sqlite"], pages["postgresql"]
    docs = generic["documents"]
    assert [d["revoked"] for d in docs] == [False, True, False]  # fire attached the third
    assert docs[1]["uploaded_at"].microsecond == 123457
    assert docs[1]["uploaded_at"].tzinfo is not None
    assert generic["deadlines"][0]["escalation_level"] == 2
    assert pg == generic


def test_a_case_locked_twice_in_one_unit_of_work_is_one_instance(
    engine: Engine, service: CaseService, drive: Driver
) -> None:
    """The locking read sent straight to the driver builds its case outside the ORM's
    loading (and, on PostgreSQL, outside the session); a unit of work that holds the case
    already gets that same instance back (and its documents)."""
    cid = drive.open(DAY).case_id
    drive.attach(cid, ["determination_request"], DAY)
    officer = drive.actors.get("commune_police", "officer")
    request = _Request({}, cid, "request_determination", {}, officer, at(DAY), None, None, "vi")
    with service.uow() as uow:
        first, docs, _ = service._command_case(uow, request)
        again, docs_again, _ = service._command_case(uow, request)
        assert again is first and first.subject is again.subject
        assert [d.type for d in docs] == [d.type for d in docs_again] == ["determination_request"]
        assert first.subject.full_name == "Trần Văn Bình"
        # on PostgreSQL the case stays out of the session: the command writes it with its own
        # statement, and no flush of the session may write it too
        assert (first in uow.session) is (uow.dialect != "postgresql")
