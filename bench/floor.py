"""The raw floor: one transition's transaction shape in hand-written SQL, nothing else.

Per case, in one transaction: lock the case row, update its state and version, lock the head
of the case's audit lane (as the engine does, ``workflow.audit``), insert the chained audit
event (the same SHA-256 chain as ``workflow.audit``, so
``rehabflow audit verify`` stays valid) and move the head, insert one outbox row, commit. That
is the least any engine writing a transition, its audit event and its notification must send
to the database; ``bench.run`` compares the engine with it.

PostgreSQL through psycopg 3 (no ORM, no SQLAlchemy), SQLite through ``sqlite3`` with
``BEGIN IMMEDIATE`` and the pragmas of ``workflow.db`` (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from workflow.audit import canonical

TRANSITION = "request_determination"
FROM_STATE, TO_STATE, TO_GROUP = "detected", "addiction_determination", "determination"


def _body(seq: int, case_id: int, at: datetime, actor: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": seq,
        "case_id": case_id,
        "at": at.isoformat(timespec="microseconds"),
        "actor_id": actor["user_id"],
        "actor": actor["username"],
        "agency_id": actor["agency_id"],
        "agency_type": actor["agency_type"],
        "role": actor["role"],
        "action": f"transition:{TRANSITION}",
        "from_state": FROM_STATE,
        "to_state": TO_STATE,
        "definition": None,
        "data_hash": None,
        "documents": [],
        "extra": {"bench": "floor"},
    }


def _outbox(case_id: int, number: str, seq: int, at: datetime) -> tuple:
    payload = {
        "case_id": case_id,
        "case_number": number,
        "action": TRANSITION,
        "from_state": FROM_STATE,
        "to_state": TO_STATE,
        "at": at.isoformat(),
    }
    return (
        str(uuid.uuid4()),
        case_id,
        seq,
        TRANSITION,
        json.dumps({"agency_types": ["health_facility"]}),
        json.dumps(payload, ensure_ascii=False),
    )


AUDIT_INSERT = (
    "INSERT INTO audit_events (seq, case_id, at, actor_id, actor, agency_id, agency_type, role, "
    "action, from_state, to_state, definition, data_hash, documents, extra, prev_hash, hash) "
    "VALUES ({p})"
)
OUTBOX_INSERT = (
    "INSERT INTO outbox (id, case_id, audit_seq, topic, recipients, payload, status, attempts, "
    "created_at, available_at) VALUES ({p})"
)


def _audit_params(body: dict[str, Any], at: Any, prev: str, digest: str) -> tuple:
    return (
        body["seq"],
        body["case_id"],
        at,
        body["actor_id"],
        body["actor"],
        body["agency_id"],
        body["agency_type"],
        body["role"],
        body["action"],
        body["from_state"],
        body["to_state"],
        f"drug_rehab@{body['definition']}" if body["definition"] else None,
        None,
        "[]",
        json.dumps(body["extra"]),
        prev,
        digest,
    )


# the head of the case's audit lane (workflow.audit), with the seq its event takes
HEAD_OF_LANE = "SELECT id, seq + stride, hash FROM audit_head WHERE id = 1 + ({p} % stride)"


def pg_step(conninfo: str, actor: dict[str, Any], clock: Callable[[], datetime]) -> Any:
    """A function firing the floor transaction on one case id through psycopg."""
    import psycopg

    conn = psycopg.connect(conninfo)
    audit_sql = AUDIT_INSERT.format(p=", ".join(["%s"] * 17))
    outbox_sql = OUTBOX_INSERT.format(p="%s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s")
    head_sql = HEAD_OF_LANE.replace("%", "%%").format(p="%s") + " FOR UPDATE"

    def step(case_id: int) -> None:
        now = clock()
        with conn.transaction():
            cur = conn.cursor()
            row = cur.execute(
                "SELECT number, version FROM cases WHERE id = %s FOR UPDATE", (case_id,)
            ).fetchone()
            cur.execute(
                "UPDATE cases SET state = %s, state_group = %s, version = version + 1, "
                "state_entered_at = %s, updated_at = %s WHERE id = %s AND version = %s",
                (TO_STATE, TO_GROUP, now, now, case_id, row[1]),
            )
            head, seq, prev = cur.execute(head_sql, (case_id,)).fetchone()
            body = _body(seq, case_id, now.astimezone(UTC), actor)
            digest = hashlib.sha256((prev + canonical(body)).encode()).hexdigest()
            cur.execute(audit_sql, _audit_params(body, now, prev, digest))
            cur.execute(
                "UPDATE audit_head SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
                (seq, prev, digest, head),
            )
            cur.execute(outbox_sql, (*_outbox(case_id, row[0], seq, now), now, now))

    step.close = conn.close  # type: ignore[attr-defined]
    return step


def sqlite_step(path: str, actor: dict[str, Any], clock: Callable[[], datetime]) -> Any:
    """The same transaction on SQLite (the lock is BEGIN IMMEDIATE, as in ``workflow.db``)."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    audit_sql = AUDIT_INSERT.format(p=", ".join(["?"] * 17))
    outbox_sql = OUTBOX_INSERT.format(p="?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?")

    def stamp(dt: datetime) -> str:
        # SQLAlchemy's SQLite DateTime storage of our UTC values (naive, microseconds)
        return dt.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    def step(case_id: int) -> None:
        now = clock()
        ts = stamp(now)
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            number, version = cur.execute(
                "SELECT number, version FROM cases WHERE id = ?", (case_id,)
            ).fetchone()
            cur.execute(
                "UPDATE cases SET state = ?, state_group = ?, version = version + 1, "
                "state_entered_at = ?, updated_at = ? WHERE id = ? AND version = ?",
                (TO_STATE, TO_GROUP, ts, ts, case_id, version),
            )
            head, seq, prev = cur.execute(HEAD_OF_LANE.format(p="?"), (case_id,)).fetchone()
            body = _body(seq, case_id, now.astimezone(UTC), actor)
            digest = hashlib.sha256((prev + canonical(body)).encode()).hexdigest()
            cur.execute(audit_sql, _audit_params(body, ts, prev, digest))
            cur.execute(
                "UPDATE audit_head SET seq = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (seq, prev, digest, head),
            )
            cur.execute(outbox_sql, (*_outbox(case_id, number, seq, now), ts, ts))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    step.close = conn.close  # type: ignore[attr-defined]
    return step
