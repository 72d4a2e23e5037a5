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

from workflow import jsontext, rollup
from workflow.actors import Actor
from workflow.errors import AuditChainBroken
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


def unsaved_event(**values: Any) -> AuditEvent:
    """An audit event that no session will hold, for a statement that writes it itself
    (:data:`PG_APPEND_CTES`): ``values`` go straight into the new instance's ``__dict__``,
    without the attribute events the mapped constructor fires for each of them (an
    optimistic advance spent about 20 µs of CPU on those; bench/README.md, (17))."""
    event = AuditEvent.__mapper__.class_manager.new_instance()
    event.__dict__.update(values)
    return event


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
    head.seq, head.prev_hash, head.hash = event.seq, event.prev_hash, event.hash
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
    the event, move the head) instead of through the unit of work: the commands' path on
    SQLite (on PostgreSQL they append with one statement, :func:`write_one`).
    ``event`` stays transient (never added to the session); its seq and hash are set.
    Call it last in a transaction: the head stays locked until commit (PostgreSQL)."""
    stmt = _HEAD_LOCKED if session.get_bind().dialect.name == "postgresql" else _HEAD
    seq, prev = session.execute(stmt).one()
    event.seq = seq + 1
    event.at = _normalise(event.at)
    event.prev_hash = prev
    event.hash = chain_hash(prev, event)
    session.execute(_INSERT_EVENT, {name: getattr(event, name) for name in _COLUMNS})
    session.execute(_MOVE_HEAD, {"seq": event.seq, "prev_hash": prev, "hash": event.hash})
    return event


def hash_parts(e: AuditEvent) -> tuple[str, str]:
    """The canonical body of ``e`` split around its sequence number: ``(before, after)`` with
    ``canonical(event_body(e)) == before + str(e.seq) + after`` for any seq, so the database
    can hash an event whose seq it gives itself (:data:`PG_APPEND_CTES`). ``e.at`` must be
    normalised (:func:`_normalise`)."""
    body = event_body(e)
    del body["seq"]
    # sorted keys: the ones before "seq", then the ones after (both sets are never empty)
    before = canonical({k: v for k, v in body.items() if k < "seq"})
    after = canonical({k: v for k, v in body.items() if k > "seq"})
    return before[:-1] + ',"seq":', "," + after[1:]


_EVENTS = AuditEvent.__table__
_BODY_COLUMNS = tuple(c for c in _EVENTS.columns if c.name not in ("seq", "prev_hash", "hash"))
_OUTBOX = OutboxMessage.__table__


_OUTBOX_VALUES = ", ".join("head.seq" if c.name == "audit_seq" else c.name for c in _OUTBOX.columns)


# PostgreSQL: an event appended by one statement's data-modifying CTEs (its values typed by
# the casts psycopg's dialect renders for typed parameters: :data:`PG_APPEND_PARAMETERS`; a
# value longer than its column fails the statement, where a CAST to the column's type would
# have cut it and left an event whose hash no longer verifies). ``head`` locks the chain
# head (as SELECT … FOR UPDATE would: after a wait, the SET is evaluated on the row as the other
# writer committed it), takes the next seq and computes the event's hash in the database,
# sha256(prev_hash + before + seq + after) with the parts of :func:`hash_parts` (the same bytes
# as :func:`chain_hash`); ``prev_hash`` keeps the hash it replaced, which RETURNING cannot read
# otherwise before PostgreSQL 18. Then the event, the outbox rows (a JSON array of rows with
# every column of the table, as ``CaseService._outbox_row`` makes them, audit_seq taken from the
# head) and the report counters (``workflow.rollup``), each only if the head moved.
# ``{condition}``: SQL that must hold for anything to be written (the caller's CTEs, e.g. that
# its case row matched its version).
PG_APPEND_CTES = f"""head AS (
    UPDATE audit_head SET seq = seq + 1, prev_hash = hash,
        hash = encode(sha256(convert_to(
            hash || :hash_before || CAST(seq + 1 AS text) || :hash_after, 'UTF8')), 'hex')
    WHERE id = 1 AND {{condition}}
    RETURNING seq, prev_hash, hash
), new_event AS (
    INSERT INTO audit_events (seq, prev_hash, hash, {", ".join(c.name for c in _BODY_COLUMNS)})
    SELECT head.seq, head.prev_hash, head.hash, {", ".join(f":{c.name}" for c in _BODY_COLUMNS)}
    FROM head
), new_outbox AS (
    INSERT INTO outbox ({", ".join(c.name for c in _OUTBOX.columns)})
    SELECT {_OUTBOX_VALUES}
    FROM jsonb_populate_recordset(NULL::outbox, CAST(:outbox AS jsonb)) AS r, head
), {rollup.pg_counter_ctes("EXISTS (SELECT FROM head)").replace("{", "{{").replace("}", "}}")}"""
# PostgreSQL: true when the database's UTF-8 bytes of the two hashed parts of an event are the
# ones rehabflow hashes (the digest :func:`append_parameters` sends). What else the database
# hashes is ASCII (the previous hash, the seq), so then its hash of the event is the one
# :func:`chain_hash` computes: a check a statement can make before it writes, where
# :func:`appended` checks after (a statement that commits with its write needs it before).
PG_PARTS_HASHED_ALIKE = (
    "encode(sha256(convert_to(:hash_before || :hash_after, 'UTF8')), 'hex') = :hash_parts_digest"
)
# the typed parameters of the event's columns (JSON and timestamps bound as the model does)
PG_APPEND_PARAMETERS = tuple(bindparam(c.name, type_=c.type) for c in _BODY_COLUMNS)
_APPEND = text(
    f"WITH {PG_APPEND_CTES.format(condition='true')} SELECT seq, prev_hash, hash FROM head"
).bindparams(*PG_APPEND_PARAMETERS)


def append_parameters(
    holder: rollup.HasInfo, event: AuditEvent, outbox: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The parameters of :data:`PG_APPEND_CTES` for ``event`` (its ``at`` normalised), its
    ``outbox`` rows and the pending report counters of ``holder``'s transaction (a session
    or a unit of work; they are then no longer pending: the statement writes them)."""
    event.at = _normalise(event.at)
    params = {c.name: getattr(event, c.name) for c in _BODY_COLUMNS}
    params["hash_before"], params["hash_after"] = before, after = hash_parts(event)
    params["hash_parts_digest"] = hashlib.sha256((before + after).encode()).hexdigest()
    params["outbox"] = jsontext.dumps(outbox or [])
    params.update(rollup.take_parameters(holder))
    return params


def appended(
    event: AuditEvent,
    seq: int,
    prev_hash: str,
    hash_: str,
    parts: tuple[str, str] | None = None,
) -> AuditEvent:
    """Give ``event`` the seq and hashes the database gave it (:data:`PG_APPEND_CTES`), after
    checking that the database's hash is the one :func:`chain_hash` computes: a server that
    hashed other bytes would write a chain that no longer verifies, so the command fails
    (AuditChainBroken, and its transaction is rolled back). ``parts``: the event's
    :func:`hash_parts`, already made (the check then does not serialise the event again)."""
    event.seq, event.prev_hash, event.hash = seq, prev_hash, hash_
    if parts is None:
        expected = chain_hash(prev_hash, event)
    else:
        before, after = parts
        expected = hashlib.sha256(f"{prev_hash}{before}{seq}{after}".encode()).hexdigest()
    if expected != hash_:
        raise AuditChainBroken(
            f"the database hashed audit event {seq} differently from rehabflow", seq=seq
        )
    return event


def write_one(
    session: Session, event: AuditEvent, outbox: list[dict[str, Any]] | None = None
) -> AuditEvent:
    """PostgreSQL: append ``event`` with its ``outbox`` rows and the transaction's pending
    report counters in one statement (:data:`PG_APPEND_CTES`). The head stays locked until
    commit, so call it last in a transaction, as :func:`write`."""
    row = session.execute(_APPEND, append_parameters(session, event, outbox)).one()
    return appended(event, *row)


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
