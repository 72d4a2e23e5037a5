"""Tampering with the hash-chained audit log is detected, on SQLite and PostgreSQL.

A real history is built through the service (three cases with documents and transitions); then
the tables are edited directly, as someone with database access would, and ``audit.verify``
must name exactly the first bad event.

Most tests share one history per database (built once per module) and tamper inside a
transaction that is rolled back afterwards, verifying on that same connection; ``TestCommitted``
tampers for real on the conftest ``engine``/``service`` fixtures and verifies through
``CaseService.verify_audit``. On PostgreSQL a trigger refuses UPDATE and DELETE on
``audit_events``, so tampering sets ``session_replication_role = replica`` (superuser) in its
transaction; ``TestPostgresTrigger`` checks that without it the database refuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from workflow import audit, schema
from workflow.db import make_engine, make_session_factory
from workflow.errors import AuditChainBroken
from workflow.model import AuditEvent, AuditHead
from workflow.service import CaseService
from workflow.storage import MemoryBlobStore

from ..conftest import PG_AVAILABLE, PG_URL, Actors
from .helpers import Driver

# these tests edit and delete audit rows behind the engine's back: no counter check after
pytestmark = pytest.mark.tampers

EVENTS = AuditEvent.__table__
HEAD = AuditHead.__table__
COLUMNS = [c.name for c in EVENTS.columns]
BODY = [c for c in COLUMNS if c != "seq"]


# ---------------------------------------------------------------------------- history
def build_history(service: CaseService, actors: Actors) -> int:
    """Three cases walked through several transitions; returns the number of audit events."""
    drive = Driver(service, actors)
    day = date(2026, 3, 2)
    a = drive.open(day, name="Trần Văn Bình").case_id
    b = drive.open(day, name="Lê Thị Cúc", born=date(1988, 11, 2)).case_id
    c = drive.open(day + timedelta(days=1), name="Nguyễn Văn Nam").case_id
    for cid in (a, b, c):
        drive.fire(cid, "request_determination", day + timedelta(days=1))
        drive.fire(cid, "record_addiction_result", day + timedelta(days=2))
    drive.fire(a, "register_voluntary_home", day + timedelta(days=3), registered_by="self")
    drive.fire(a, "decide_voluntary_home", day + timedelta(days=4), term_months=6)
    drive.fire(b, "open_compulsory_dossier", day + timedelta(days=3), violation="not_registered")
    drive.fire(b, "notify_dossier_reading", day + timedelta(days=7))
    with service.uow(read_only=True) as uow:
        n = uow.session.scalar(select(func.count()).select_from(AuditEvent))
    assert n >= 20  # opens, attachments and transitions of three cases
    assert service.verify_audit() == audit.VerifyResult(True, n)
    return n


@dataclass
class Shared:
    engine: Engine
    n: int


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shared(request: pytest.FixtureRequest, tmp_path_factory, registry) -> Iterator[Shared]:  # noqa: ANN001
    """One history per database for the whole module (PostgreSQL: in its own schema)."""
    admin = name = None
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('audit') / 'audit.db'}")
    else:
        if not PG_AVAILABLE:
            pytest.skip("PostgreSQL is not reachable")
        name = f"rfaudit_{os.getpid()}"
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {name}"))
        engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={name}"})
    schema.upgrade(engine)
    factory = make_session_factory(engine)
    with factory() as session:  # one chain here (PostgreSQL's lanes: test_audit_lanes.py)
        audit.set_lanes(session, 1)
        session.commit()
    service = CaseService(factory, registry, secret_key="test-secret", blobs=MemoryBlobStore())
    n = build_history(service, Actors(factory))
    yield Shared(engine, n)
    engine.dispose()
    if admin is not None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


@pytest.fixture
def n(shared: Shared) -> int:
    return shared.n


@pytest.fixture
def db(shared: Shared) -> Iterator[Connection]:
    """A transaction on the shared history that may UPDATE/DELETE audit rows; rolled back."""
    with shared.engine.connect() as conn:
        conn.begin()
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn
        conn.rollback()


def verify(conn: Connection) -> audit.VerifyResult:
    """``audit.verify`` seeing the uncommitted tampering of ``conn``."""
    with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
        return audit.verify(session)


# ---------------------------------------------------------------------------- helpers
def row(conn: Connection, seq: int) -> dict[str, Any]:
    return dict(conn.execute(select(EVENTS).where(EVENTS.c.seq == seq)).mappings().one())


def set_row(conn: Connection, at_seq: int, **values: Any) -> None:
    conn.execute(update(EVENTS).where(EVENTS.c.seq == at_seq).values(**values))


def as_event(values: dict[str, Any]) -> AuditEvent:
    return AuditEvent(**values)


def assert_broken_at(
    result: audit.VerifyResult, seq: int, reason: str = "", *, checked: int | None = None
) -> None:
    """Not ok, ``seq`` named, and every event before it counted as verified."""
    assert not result.ok, result
    assert result.first_bad_seq == seq, result
    assert result.checked == (seq - 1 if checked is None else checked), result
    assert reason in result.reason, result


# ---------------------------------------------------------------------------- tests
class TestIntact:
    def test_history_verifies(self, db: Connection, n: int) -> None:
        assert verify(db) == audit.VerifyResult(True, n)

    def test_head_matches_the_last_event(self, db: Connection, n: int) -> None:
        head = db.execute(select(HEAD.c.seq, HEAD.c.hash)).one()
        assert head.seq == n and head.hash == row(db, n)["hash"]
        assert row(db, 1)["prev_hash"] == audit.GENESIS
        for seq in range(2, n + 1):
            assert row(db, seq)["prev_hash"] == row(db, seq - 1)["hash"]

    def test_empty_log_verifies(self, service) -> None:  # noqa: ANN001
        assert service.verify_audit() == audit.VerifyResult(True, 0)


class TestEdits:
    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("action", "transition:decide_voluntary_home"),
            ("to_state", "closed"),
            ("from_state", None),
            ("actor", "someone.else"),
            ("case_id", 999),
            ("data_hash", "0" * 64),
            ("documents", []),
            ("extra", {"document_type": "forged"}),
        ],
    )
    def test_editing_a_column_is_detected_at_that_event(
        self, db: Connection, n: int, column: str, value: Any
    ) -> None:
        target = next(seq for seq in range(n // 2, n + 1) if row(db, seq)[column] != value)
        set_row(db, target, **{column: value})
        assert_broken_at(verify(db), target, "edited")

    def test_moving_the_time_by_one_microsecond_is_detected(self, db: Connection, n: int) -> None:
        target = 3
        set_row(db, target, at=row(db, target)["at"] + timedelta(microseconds=1))
        assert_broken_at(verify(db), target, "edited")

    def test_editing_the_first_event_is_detected(self, db: Connection, n: int) -> None:
        set_row(db, 1, actor="x")
        assert_broken_at(verify(db), 1, "edited")

    def test_editing_the_last_event_is_detected(self, db: Connection, n: int) -> None:
        set_row(db, n, to_state="closed")
        assert_broken_at(verify(db), n, "edited")

    def test_rehashing_an_edited_event_breaks_the_next_link(self, db: Connection, n: int) -> None:
        """Recomputing the edited row's own hash moves the break to the following event."""
        target = n // 2
        set_row(db, target, action="forged")
        forged = as_event(row(db, target))
        set_row(db, target, hash=audit.chain_hash(forged.prev_hash, forged))
        assert_broken_at(verify(db), target + 1, "prev_hash")

    def test_editing_prev_hash_is_detected(self, db: Connection, n: int) -> None:
        set_row(db, 4, prev_hash="f" * 64)
        assert_broken_at(verify(db), 4, "prev_hash")

    def test_editing_hash_is_detected(self, db: Connection, n: int) -> None:
        set_row(db, 4, hash="f" * 64)
        assert_broken_at(verify(db), 4, "edited")


class TestDeletions:
    def test_deleting_a_middle_event_is_detected(self, db: Connection, n: int) -> None:
        target = n // 2
        db.execute(delete(EVENTS).where(EVENTS.c.seq == target))
        # Named: the first event present that is out of line (the one after the gap); the
        # reason names the missing one.
        assert_broken_at(
            verify(db),
            target + 1,
            f"expected event {target}, found {target + 1}",
            checked=target - 1,
        )

    def test_deleting_the_first_event_is_detected(self, db: Connection, n: int) -> None:
        db.execute(delete(EVENTS).where(EVENTS.c.seq == 1))
        assert_broken_at(verify(db), 2, "expected event 1, found 2", checked=0)

    def test_deleting_and_renumbering_is_detected(self, db: Connection, n: int) -> None:
        """Closing the gap by renumbering the later events leaves a broken prev_hash link."""
        target = n // 2
        db.execute(delete(EVENTS).where(EVENTS.c.seq == target))
        for seq in range(target + 1, n + 1):
            set_row(db, seq, seq=seq - 1)
        db.execute(update(HEAD).values(seq=n - 1))
        assert_broken_at(verify(db), target, "prev_hash")

    def test_deleting_the_last_event_is_detected_by_the_head(self, db: Connection, n: int) -> None:
        db.execute(delete(EVENTS).where(EVENTS.c.seq == n))
        assert_broken_at(verify(db), n, "deleted at the end")

    def test_deleting_the_last_three_events_names_the_first_missing(
        self, db: Connection, n: int
    ) -> None:
        db.execute(delete(EVENTS).where(EVENTS.c.seq > n - 3))
        assert_broken_at(
            verify(db), n - 2, f"the chain ends at event {n - 3} but the head says {n}"
        )

    def test_wiping_the_whole_log_is_detected(self, db: Connection, n: int) -> None:
        db.execute(delete(EVENTS))
        assert_broken_at(verify(db), 1, f"the head says {n}")

    def test_deleting_the_tail_and_rewinding_the_head_is_not_detectable(
        self, db: Connection, n: int
    ) -> None:
        """Known limit: the chain has no secret and no outside anchor. Whoever removes the
        newest events *and* rewinds ``audit_head`` to the new last event leaves a consistent
        chain; only a copy of the head kept elsewhere (a backup, an export) reveals it."""
        db.execute(delete(EVENTS).where(EVENTS.c.seq == n))
        db.execute(update(HEAD).values(seq=n - 1, hash=row(db, n - 1)["hash"]))
        assert verify(db) == audit.VerifyResult(True, n - 1)

    def test_a_wrong_head_hash_is_detected(self, db: Connection, n: int) -> None:
        db.execute(update(HEAD).values(hash="e" * 64))
        result = verify(db)
        assert not result.ok and result.first_bad_seq == n, result


class TestReordering:
    def test_swapping_the_contents_of_two_events_is_detected(self, db: Connection, n: int) -> None:
        first, second = 5, n - 3
        a, b = row(db, first), row(db, second)
        set_row(db, first, **{k: b[k] for k in BODY})
        set_row(db, second, **{k: a[k] for k in BODY})
        assert_broken_at(verify(db), first, "prev_hash")

    @pytest.mark.parametrize("gap", [1, 4])
    def test_exchanging_the_seq_of_two_events_is_detected(
        self, db: Connection, n: int, gap: int
    ) -> None:
        first, second = 6, 6 + gap
        set_row(db, first, seq=-1)
        set_row(db, second, seq=first)
        set_row(db, -1, seq=second)
        assert_broken_at(verify(db), first, "prev_hash")

    def test_swapping_neighbours_but_keeping_the_hash_columns_is_detected(
        self, db: Connection, n: int
    ) -> None:
        first = n // 2
        a, b = row(db, first), row(db, first + 1)
        keep = [k for k in BODY if k not in ("prev_hash", "hash")]
        set_row(db, first, **{k: b[k] for k in keep})
        set_row(db, first + 1, **{k: a[k] for k in keep})
        assert_broken_at(verify(db), first, "edited")


class TestSeqIsHashed:
    def test_changing_only_the_seq_of_the_last_event_is_detected(
        self, db: Connection, n: int
    ) -> None:
        set_row(db, n, seq=n + 1)
        db.execute(update(HEAD).values(seq=n + 1))
        assert_broken_at(verify(db), n + 1, f"expected event {n}, found {n + 1}", checked=n - 1)

    def test_the_hash_covers_seq(self, db: Connection, n: int) -> None:
        """With contiguity and prev_hash satisfied, the hash alone rejects a renumbered event."""
        last = as_event(row(db, n))
        assert audit.chain_hash(last.prev_hash, last) == last.hash
        assert audit.event_body(last)["seq"] == n
        # The last event presented as the first of a chain, hashed with its real seq ...
        moved = as_event({**row(db, n), "seq": 1, "prev_hash": audit.GENESIS})
        moved.hash = audit.chain_hash(audit.GENESIS, last)
        assert audit.verify_events([moved], None) == audit.VerifyResult(
            False, 0, 1, "content does not match its hash (edited)"
        )
        # ... while the same event hashed with seq 1 is accepted.
        moved.hash = audit.chain_hash(audit.GENESIS, moved)
        assert audit.verify_events([moved], None) == audit.VerifyResult(True, 1)


class TestAppendedBehindTheHead:
    def _forge(self, db: Connection, n: int) -> None:
        """A well-chained event inserted after the last one, without moving the head."""
        values = {**row(db, n), "seq": n + 1, "prev_hash": row(db, n)["hash"], "action": "forged"}
        values["hash"] = audit.chain_hash(values["prev_hash"], as_event(values))
        db.execute(insert(EVENTS).values(**values))

    def test_is_detected(self, db: Connection, n: int) -> None:
        self._forge(db, n)
        result = verify(db)
        assert not result.ok and result.checked == n + 1, result

    def test_names_the_forged_event(self, db: Connection, n: int) -> None:
        self._forge(db, n)
        result = verify(db)
        assert result.first_bad_seq == n + 1, result
        assert "deleted" not in result.reason, result


class TestCommitted:
    """End to end on the conftest fixtures: committed tampering, CaseService.verify_audit."""

    @contextmanager
    def tampering(self, engine: Engine) -> Iterator[Connection]:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn

    def test_committed_edit_is_detected(self, engine: Engine, service, actors) -> None:  # noqa: ANN001
        # (on PostgreSQL the conftest database runs in lanes: seqs are not 1..n)
        build_history(service, actors)
        with self.tampering(engine) as conn:
            seventh = sorted(conn.scalars(select(EVENTS.c.seq)))[6]
            set_row(conn, seventh, to_state="closed")
        assert_broken_at(service.verify_audit(), seventh, "edited", checked=6)

    def test_committed_tail_deletion_is_detected(self, engine: Engine, service, actors) -> None:  # noqa: ANN001
        build_history(service, actors)
        with self.tampering(engine) as conn:
            heads = conn.execute(select(HEAD).order_by(HEAD.c.id)).mappings().all()
            first = min(  # the first event of the first lane that holds any
                h["base_seq"] + h["id"]
                for h in heads
                if h["seq"] != h["base_seq"] + h["id"] - h["stride"]
            )
            if engine.dialect.name == "postgresql":
                # TRUNCATE is not a row operation: the append-only trigger does not fire.
                conn.execute(text("TRUNCATE audit_events"))
            else:
                conn.execute(delete(EVENTS))
        result = service.verify_audit()
        assert_broken_at(result, first, "the head says", checked=0)
        with self.tampering(engine) as conn:  # every head back where its lane starts
            conn.execute(update(HEAD).values(seq=HEAD.c.base_seq + HEAD.c.id - HEAD.c.stride))
            conn.execute(update(HEAD).values(hash=HEAD.c.base_hash))
        assert service.verify_audit() == audit.VerifyResult(True, 0)


@pytest.mark.postgres
class TestPostgresTrigger:
    """Without ``session_replication_role = replica`` PostgreSQL refuses UPDATE and DELETE."""

    @pytest.fixture
    def conn(self, shared: Shared) -> Iterator[Connection]:
        if shared.engine.dialect.name != "postgresql":
            pytest.skip("the append-only trigger exists only on PostgreSQL")
        with shared.engine.connect() as conn:
            yield conn
            conn.rollback()

    @pytest.mark.parametrize(
        "stmt",
        [
            update(EVENTS).where(EVENTS.c.seq == 2).values(action="forged"),
            update(EVENTS).where(EVENTS.c.seq == 2).values(seq=10_000),
            update(EVENTS).values(actor="x"),
        ],
        ids=["column", "seq", "all"],
    )
    def test_update_is_refused(self, conn: Connection, n: int, stmt: Any) -> None:
        with pytest.raises(DBAPIError, match=r"audit_events is append-only \(UPDATE refused\)"):
            conn.execute(stmt)
        conn.rollback()
        assert verify(conn).ok

    @pytest.mark.parametrize(
        "where", [lambda n: EVENTS.c.seq == n, lambda n: EVENTS.c.seq > 0], ids=["last", "all"]
    )
    def test_delete_is_refused(self, conn: Connection, n: int, where: Any) -> None:
        with pytest.raises(DBAPIError, match=r"audit_events is append-only \(DELETE refused\)"):
            conn.execute(delete(EVENTS).where(where(n)))
        conn.rollback()
        assert conn.scalar(select(func.count()).select_from(EVENTS)) == n
        assert verify(conn) == audit.VerifyResult(True, n)

    def test_insert_is_allowed(self, conn: Connection, n: int) -> None:
        """The trigger is only on UPDATE and DELETE: appending keeps working (rolled back)."""
        conn.execute(insert(EVENTS).values(**{**row(conn, n), "seq": n + 1}))
        assert conn.scalar(select(func.max(EVENTS.c.seq))) == n + 1


class TestDatabaseHashing:
    """PostgreSQL's one-statement append (``audit.write_one``) hashes in the database: its
    hashes must be the ones ``audit.chain_hash`` computes, whatever the text, so the chain
    verifies; a mismatch would fail the command (``audit.appended``), not write the event."""

    AWKWARD = [
        {"lý_do": "Nghiện ma tuý — cai nghiện tự nguyện 'tại gia đình'"},
        {"quote": 'a "b" \\ c', "tab": "x\ty\nz", "control": "\u0001\u001f", "emoji": "🙂"},
        {"seq": 5, "nested": {"seq": "999", "to_state": ["a", {"role": None}]}},
        {},
    ]

    def test_the_database_hashes_as_rehabflow_does(self, engine: Engine, service) -> None:  # noqa: ANN001
        if engine.dialect.name != "postgresql":
            pytest.skip("SQLite appends with the hash computed in Python")
        from workflow.actors import SYSTEM

        with service.uow() as uow:
            for extra in self.AWKWARD:
                event = service._event(SYSTEM, datetime.now(UTC), "admin.test", None, extra=extra)
                written = audit.write_one(uow.session, event)
                assert written.hash == audit.chain_hash(written.prev_hash, written)
            uow.commit()
        result = service.verify_audit()
        assert result.ok and result.checked == len(self.AWKWARD)

    def test_a_different_hash_fails_the_append(self, engine: Engine, service) -> None:  # noqa: ANN001
        if engine.dialect.name != "postgresql":
            pytest.skip("SQLite appends with the hash computed in Python")
        from workflow.actors import SYSTEM

        event = service._event(SYSTEM, datetime.now(UTC), "admin.test", None, extra={"a": 1})
        with pytest.raises(AuditChainBroken, match="hashed audit event 1 differently"):
            audit.appended(event, 1, audit.GENESIS, "f" * 64)

    def test_the_check_from_the_hash_parts_is_chain_hash(self, service) -> None:  # noqa: ANN001
        """A command checks the database's hash from the parts it sent (not serialising the
        event again): the same verdict as chain_hash, awkward text included."""
        from workflow.actors import SYSTEM

        for seq, extra in enumerate(self.AWKWARD, 7):
            event = service._event(SYSTEM, datetime.now(UTC), "admin.test", None, extra=extra)
            event.at = audit._normalise(event.at)
            parts = audit.hash_parts(event)
            event.seq = seq
            good = audit.chain_hash(audit.GENESIS, event)
            assert audit.appended(event, seq, audit.GENESIS, good, parts).hash == good
            with pytest.raises(AuditChainBroken):
                audit.appended(event, seq, audit.GENESIS, good[::-1], parts)
            with pytest.raises(AuditChainBroken):  # the parts are another seq's
                audit.appended(event, seq + 1, audit.GENESIS, good, parts)
