"""The append-only, hash-chained audit log.

Every event stores ``hash = sha256(prev_hash + canonical(event))`` where the canonical form
includes its sequence number, so editing, deleting or reordering any row breaks the chain from
that row on. A head row (last seq and hash) is locked while appending, so a chain is a single
line even with concurrent writers, and deleting the newest events is detected too.

The log can run in *lanes* (``audit_head``, one row per lane; :func:`set_lanes`): after the
split, a case's events all go to lane ``case_id mod lanes`` (events without a case: lane 0),
each lane a chain of its own from the hash the single chain had at the split, with its own
head; lane ``l`` holds the seqs ``split + 1 + l + k * lanes``, so a seq is still unique, a
case's events are still in seq order, and a lane has no gap a deletion could hide in.
Writers of different lanes no longer queue on one head row (bench/README.md, (23);
docs/audit-lanes.md). :func:`verify` checks the chain up to the split, then every lane.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, bindparam, delete, insert, select, text, update
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


# the head of the lane of a case's events (``lane_key``: the case's id, 0 for an event of no
# case), read from the head rows themselves, so a process never writes to a lane by a lane
# count it remembers from before a split
_LANE_KEY = bindparam("lane_key", type_=BigInteger)
_IN_LANE = AuditHead.id == 1 + _LANE_KEY % AuditHead.stride
# the same in the SQL of :data:`PG_APPEND_CTES`, whose ``case_id`` is the event's
_PG_IN_LANE = "id = 1 + (COALESCE(:case_id, 0) % stride)"


def append(session: Session, event: AuditEvent, *, lock: bool = True) -> AuditEvent:
    """Give ``event`` the next sequence number of its lane and its hash, and add it to the
    session."""
    stmt = select(AuditHead).where(_IN_LANE)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    head = session.execute(stmt, {"lane_key": event.case_id or 0}).scalar_one()
    event.seq = head.seq + head.stride
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


_HEAD = select(AuditHead.id, AuditHead.seq, AuditHead.hash, AuditHead.stride).where(_IN_LANE)
_HEAD_LOCKED = _HEAD.with_for_update()
_MOVE_HEAD = update(AuditHead.__table__).where(AuditHead.__table__.c.id == bindparam("head"))
_INSERT_EVENT = insert(AuditEvent.__table__)
_COLUMNS = tuple(c.key for c in AuditEvent.__table__.columns)


def write(session: Session, event: AuditEvent) -> AuditEvent:
    """Like :func:`append`, but written at once with Core statements (lock the head, insert
    the event, move the head) instead of through the unit of work: the commands' path on
    SQLite (on PostgreSQL they append with one statement, :func:`write_one`).
    ``event`` stays transient (never added to the session); its seq and hash are set.
    Call it last in a transaction: the head stays locked until commit (PostgreSQL)."""
    stmt = _HEAD_LOCKED if session.get_bind().dialect.name == "postgresql" else _HEAD
    head, seq, prev, stride = session.execute(stmt, {"lane_key": event.case_id or 0}).one()
    event.seq = seq + stride
    event.at = _normalise(event.at)
    event.prev_hash = prev
    event.hash = chain_hash(prev, event)
    session.execute(_INSERT_EVENT, {name: getattr(event, name) for name in _COLUMNS})
    moved = {"head": head, "seq": event.seq, "prev_hash": prev, "hash": event.hash}
    session.execute(_MOVE_HEAD, moved)
    return event


def lock_heads(session: Session) -> list[int]:
    """Lock every lane's head (PostgreSQL; in id order, so two callers cannot deadlock): no
    event can be appended until the transaction ends. For a transaction that appends events
    of many cases (the sweep) or must see every writer done (``rollup.rebuild``); a command
    takes its one head last. Returns the heads' seqs."""
    stmt = select(AuditHead.seq).order_by(AuditHead.id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.execute(stmt).scalars())


def set_lanes(session: Session, lanes: int) -> tuple[int, str]:
    """Run the log in ``lanes`` lanes from now on, split at the present end of the chain:
    returns the split (seq, hash). Allowed from one lane (the chain's head is the split) or
    from lanes that hold no event yet (their split stays the split); lanes that hold events
    cannot be split again (every lane would need a split of its own, not built). Locks the
    heads for the rest of the caller's transaction; a process that already runs keeps
    writing correctly (it reads the lane count from the heads), and a command that waited
    for a head the split replaced fails whole (``service._write_statement``)."""
    if lanes < 1:
        raise ValueError("there is at least one lane")
    heads = (
        session.execute(
            select(AuditHead).order_by(AuditHead.id).with_for_update()
            if session.get_bind().dialect.name == "postgresql"
            else select(AuditHead).order_by(AuditHead.id)
        )
        .scalars()
        .all()
    )
    if len(heads) == 1 and heads[0].stride == 1:
        at, at_hash, prev = heads[0].seq, heads[0].hash, heads[0].prev_hash
    elif heads and all(_empty(h, len(heads)) for h in heads):
        at, at_hash, prev = heads[0].base_seq, heads[0].base_hash, None
    else:
        raise ValueError(
            "the audit lanes hold events since their split: they cannot be split again"
        )
    session.execute(delete(AuditHead.__table__))
    session.execute(
        insert(AuditHead.__table__),
        [
            {
                "id": lane + 1,
                "seq": at + 1 + lane - lanes,
                "hash": at_hash,
                "prev_hash": prev if lanes == 1 else None,
                "stride": lanes,
                "base_seq": at,
                "base_hash": at_hash,
            }
            for lane in range(lanes)
        ],
    )
    session.expire_all()
    return at, at_hash


def lane_events(head: AuditHead) -> int:
    """How many events the lane of ``head`` holds since the split (its first seq is
    ``base_seq + id``, then one every ``stride``)."""
    return (head.seq - (head.base_seq + head.id - head.stride)) // head.stride


def _empty(head: AuditHead, lanes: int) -> bool:
    """Whether the lane of ``head`` (one of ``lanes``) holds no event since the split."""
    return head.stride == lanes and lane_events(head) == 0 and head.hash == head.base_hash


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
# have cut it and left an event whose hash no longer verifies). ``head`` locks the head of the
# event's lane (as SELECT … FOR UPDATE would: after a wait, the SET is evaluated on the row as
# the other writer committed it), takes the lane's next seq and computes the event's hash in
# the database, sha256(prev_hash + before + seq + after) with the parts of :func:`hash_parts`
# (the same bytes as :func:`chain_hash`); ``prev_hash`` keeps the hash it replaced, which
# RETURNING cannot read otherwise before PostgreSQL 18. Then the event, the outbox rows (a JSON
# array of rows with every column of the table, as ``CaseService._outbox_row`` makes them,
# audit_seq taken from the head) and the deltas of the report counters (``workflow.rollup``),
# each only if the head moved.
# ``{condition}``: SQL that must hold for anything to be written (the caller's CTEs, e.g. that
# its case row matched its version).
PG_APPEND_CTES = f"""head AS (
    UPDATE audit_head SET seq = seq + stride, prev_hash = hash,
        hash = encode(sha256(convert_to(
            hash || :hash_before || CAST(seq + stride AS text) || :hash_after, 'UTF8')), 'hex')
    WHERE {_PG_IN_LANE} AND {{condition}}
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


class _Chain:
    """The running check of one chain (the single chain up to the split, or a lane): its
    events come in seq order, ``stride`` apart from ``first_seq``, each chained to the one
    before it from ``prev``."""

    def __init__(self, first_seq: int = 1, prev: str = GENESIS, stride: int = 1) -> None:
        self.expected, self.prev, self.stride, self.count = first_seq, prev, stride, 0

    def feed(self, e: AuditEvent, checked: int) -> VerifyResult | None:
        """The failure at ``e`` (``checked``: events found good before it), if any."""
        if e.seq != self.expected:
            return VerifyResult(
                False,
                checked,
                e.seq,
                f"expected event {self.expected}, found {e.seq} "
                "(an event was deleted or reordered)",
            )
        if e.prev_hash != self.prev:
            return VerifyResult(
                False, checked, e.seq, "prev_hash does not match the previous event"
            )
        if chain_hash(self.prev, e) != e.hash:
            return VerifyResult(False, checked, e.seq, "content does not match its hash (edited)")
        self.prev, self.expected, self.count = e.hash, self.expected + self.stride, self.count + 1
        return None

    def end(self, head: tuple[int, str], checked: int) -> VerifyResult | None:
        """The failure of a chain whose recorded end is ``head`` (seq, hash), if any."""
        last = self.expected - self.stride
        if head[0] > last:
            return VerifyResult(
                False,
                checked,
                last + self.stride,
                f"the chain ends at event {last} but the head says {head[0]} "
                "(events were deleted at the end)",
            )
        if head[0] < last:
            return VerifyResult(
                False,
                checked,
                head[0] + self.stride,
                f"event {head[0] + self.stride} and later are beyond the recorded head "
                f"({head[0]}): added outside rehabflow",
            )
        if head[1] != self.prev:
            return VerifyResult(
                False, checked, last, "the head's hash does not match the last event"
            )
        return None


def verify_events(
    events: Iterable[AuditEvent],
    head: tuple[int, str] | None,
    *,
    first_seq: int = 1,
    prev: str = GENESIS,
    stride: int = 1,
) -> VerifyResult:
    """Recompute one chain over ``events`` (in seq order: ``first_seq``, then every
    ``stride``-th, the first chained to ``prev``) and compare with the stored ``head``."""
    chain = _Chain(first_seq, prev, stride)
    for e in events:
        bad = chain.feed(e, chain.count)
        if bad is not None:
            return bad
    bad = chain.end(head, chain.count) if head is not None else None
    return bad or VerifyResult(True, chain.count)


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
    """Check the whole log: the chain up to the split, then every lane against its head (one
    pass over the events in seq order)."""
    heads = session.execute(select(AuditHead).order_by(AuditHead.id)).scalars().all()
    if not heads:
        return VerifyResult(False, 0, None, "the audit log has no head")
    base, base_hash, stride = heads[0].base_seq, heads[0].base_hash, heads[0].stride
    if [h.id for h in heads] != list(range(1, stride + 1)) or any(
        (h.base_seq, h.base_hash, h.stride) != (base, base_hash, stride) for h in heads
    ):
        return VerifyResult(False, 0, None, "the heads of the audit lanes disagree on the split")
    ends = [(h.seq, h.hash) for h in heads]
    session.expunge_all()
    before = _Chain()
    lanes = [_Chain(base + 1 + lane, base_hash, stride) for lane in range(stride)]
    checked = 0
    for e in iter_events(session):
        chain = before if e.seq <= base else lanes[(e.seq - base - 1) % stride]
        bad = chain.feed(e, checked)
        if bad is not None:
            return bad
        checked += 1
    for chain, end in ((before, (base, base_hash)), *zip(lanes, ends, strict=True)):
        bad = chain.end(end, checked)
        if bad is not None:
            return bad
    return VerifyResult(True, checked)
