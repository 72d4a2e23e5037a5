"""The append-only, hash-chained audit log.

Every event stores ``hash = sha256(prev_hash + canonical(event))`` where the canonical form
includes its sequence number, so editing, deleting or reordering any row breaks the chain from
that row on. The head row (last seq and hash) is locked while appending, so the chain is a
single line even with concurrent writers, and deleting the newest events is detected too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from workflow import rollup
from workflow.actors import Actor
from workflow.model import AuditEvent, AuditHead, OutboxMessage

GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept, dates as ISO 8601."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_iso)


def _iso(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode("utf-8")).hexdigest()


def event_body(e: AuditEvent) -> dict[str, Any]:
    """The fields covered by the hash (everything but the hashes themselves)."""
    return {
        "seq": e.seq,
        "case_id": e.case_id,
        "at": e.at.isoformat(timespec="microseconds"),
        "actor_id": e.actor_id,
        "actor": e.actor,
        "agency_id": e.agency_id,
        "agency_type": e.agency_type,
        "role": e.role,
        "action": e.action,
        "from_state": e.from_state,
        "to_state": e.to_state,
        "definition": e.definition,
        "data_hash": e.data_hash,
        "documents": e.documents or [],
        "extra": e.extra or {},
    }


def chain_hash(prev_hash: str, e: AuditEvent) -> str:
    return hashlib.sha256((prev_hash + canonical(event_body(e))).encode("utf-8")).hexdigest()


def append(session: Session, event: AuditEvent, *, lock: bool = True) -> AuditEvent:
    """Give ``event`` the next sequence number and its hash, and add it to the session."""
    stmt = select(AuditHead).where(AuditHead.id == 1)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    head = session.execute(stmt).scalar_one()
    event.seq = head.seq + 1
    event.at = _normalise(event.at)
    event.prev_hash = head.hash
    event.hash = chain_hash(head.hash, event)
    head.seq, head.hash = event.seq, event.hash
    session.add(event)
    return event


def append_admin(
    session: Session, actor: Actor, now: datetime, action: str, body: dict[str, Any]
) -> AuditEvent:
    """An administrative event that concerns no case (a user, an agency, a target), with
    ``body`` (never a secret) as its data, appended to the chain."""
    return append(
        session,
        AuditEvent(
            case_id=None,
            at=now,
            actor_id=actor.user_id,
            actor=actor.username,
            agency_id=actor.agency_id,
            agency_type=actor.agency_type,
            role=actor.role,
            action=action,
            data_hash=digest(body),
            documents=[],
            extra=body,
        ),
    )


_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()
_MOVE_HEAD = update(AuditHead.__table__).where(AuditHead.__table__.c.id == 1)
_INSERT_EVENT = insert(AuditEvent.__table__)
_COLUMNS = tuple(c.key for c in AuditEvent.__table__.columns)


def write(session: Session, event: AuditEvent) -> AuditEvent:
    """Like :func:`append`, but written at once with Core statements (lock the head, insert
    the event, move the head) instead of through the unit of work: the command hot path.
    ``event`` stays transient (never added to the session); its seq and hash are set.
    Call it last in a transaction: the head stays locked until commit (PostgreSQL)."""
    stmt = _HEAD_LOCKED if session.get_bind().dialect.name == "postgresql" else _HEAD
    seq, prev = session.execute(stmt).one()
    event.seq = seq + 1
    event.at = _normalise(event.at)
    event.prev_hash = prev
    event.hash = chain_hash(prev, event)
    session.execute(_INSERT_EVENT, {name: getattr(event, name) for name in _COLUMNS})
    session.execute(_MOVE_HEAD, {"seq": event.seq, "hash": event.hash})
    return event


# PostgreSQL: the head row locked against every other writer of the chain (as by SELECT … FOR
# UPDATE) and the next seq taken, by one statement
_RESERVE_SEQ = (
    update(AuditHead.__table__)
    .where(AuditHead.__table__.c.id == 1)
    .values(seq=AuditHead.__table__.c.seq + 1)
    .returning(AuditHead.__table__.c.seq, AuditHead.__table__.c.hash)
)


def reserve(session: Session, event: AuditEvent) -> AuditEvent:
    """PostgreSQL: lock the chain head and take the next sequence number in one round trip
    (``UPDATE audit_head SET seq = seq + 1 … RETURNING seq, hash``), then set ``event``'s seq
    and hashes as :func:`write` does. Nothing of the event is written yet: follow with
    :func:`write_reserved` in the same transaction (which also moves the head's hash; until
    commit the row stays locked, so no one sees the new seq with the old hash). Call it at the
    end of a transaction, as :func:`write`: the head stays locked until commit."""
    seq, prev = session.execute(_RESERVE_SEQ).one()
    event.seq = seq
    event.at = _normalise(event.at)
    event.prev_hash = prev
    event.hash = chain_hash(prev, event)
    return event


_EVENTS = AuditEvent.__table__
_OUTBOX_COLUMNS = ", ".join(c.name for c in OutboxMessage.__table__.columns)
# PostgreSQL: a reserved event, the head's hash and the command's outbox rows (a JSON array of
# rows with every column of the table, as ``CaseService._outbox_row`` makes them; one text
# whatever their number, so one compiled statement) in one statement with data-modifying CTEs
_WRITE_RESERVED = text(
    f"""
WITH new_event AS (
    INSERT INTO audit_events ({", ".join(c.name for c in _EVENTS.columns)})
    VALUES ({", ".join(f":{c.name}" for c in _EVENTS.columns)})
), moved_head AS (
    UPDATE audit_head SET hash = :hash WHERE id = 1
), {rollup.PG_COUNTER_CTES}
INSERT INTO outbox ({_OUTBOX_COLUMNS})
SELECT {_OUTBOX_COLUMNS} FROM jsonb_populate_recordset(NULL::outbox, CAST(:outbox AS jsonb))
"""
).bindparams(*(bindparam(c.name, type_=c.type) for c in _EVENTS.columns))


def write_reserved(
    session: Session, event: AuditEvent, outbox: list[dict[str, Any]] | None = None
) -> None:
    """PostgreSQL: after :func:`reserve`, insert ``event``, move the head's hash to it, insert
    the ``outbox`` rows (they carry the event's seq) and add the transaction's pending report
    counters (``workflow.rollup``) in one round trip: the statements a command sends while it
    holds the head, which every writer waits for, are two."""
    params = {name: getattr(event, name) for name in _COLUMNS}
    params["outbox"] = json.dumps(outbox or [], default=_iso, ensure_ascii=False)
    params.update(rollup.take_parameters(session))
    session.execute(_WRITE_RESERVED, params)


def _normalise(at: datetime) -> datetime:
    """Round-trip precision of the databases (microseconds, UTC) so the hash is stable."""
    from datetime import UTC

    return at.astimezone(UTC)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""


def verify_events(events: Iterable[AuditEvent], head: tuple[int, str] | None) -> VerifyResult:
    """Recompute the chain over ``events`` (in seq order) and compare with the stored head."""
    prev, expected_seq, count = GENESIS, 1, 0
    for e in events:
        if e.seq != expected_seq:
            return VerifyResult(
                False,
                count,
                e.seq,
                f"expected event {expected_seq}, found {e.seq} (an event was deleted or reordered)",
            )
        if e.prev_hash != prev:
            return VerifyResult(False, count, e.seq, "prev_hash does not match the previous event")
        if chain_hash(prev, e) != e.hash:
            return VerifyResult(False, count, e.seq, "content does not match its hash (edited)")
        prev, expected_seq, count = e.hash, expected_seq + 1, count + 1
    if head is not None and (head[0] != count or head[1] != prev):
        if head[0] > count:
            return VerifyResult(
                False,
                count,
                count + 1,
                f"the chain ends at event {count} but the head says {head[0]} "
                "(events were deleted at the end)",
            )
        if head[0] < count:
            return VerifyResult(
                False,
                count,
                head[0] + 1,
                f"event {head[0] + 1} and later are beyond the recorded head "
                f"({head[0]}): added outside rehabflow",
            )
        return VerifyResult(False, count, count, "the head's hash does not match the last event")
    return VerifyResult(True, count)


def iter_events(session: Session, batch: int = 2000) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = (
            session.execute(
                select(AuditEvent)
                .where(AuditEvent.seq > last)
                .order_by(AuditEvent.seq)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify(session: Session) -> VerifyResult:
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    return verify_events(iter_events(session), (head[0], head[1]))
