"""The counters that the reports read instead of the millions of rows behind them (issue #7).

Two families, each counted once per *level* — at the case's commune (``level = commune``,
``unit`` a commune code) and at its province (``level = province``, ``unit`` a province):

* ``report_moves``: per business day (Vietnam), action, definition version and states, how
  many audit events *moved* cases (``to_state`` set and different from ``from_state``:
  ``model.STATE_CHANGE``, the reports' definition of a move). ``from_state`` is ``''`` for an
  opening (a key column cannot be NULL).
* ``report_deadlines``: per due date, deadline key, status and whether the deadline was closed
  after its due date (Vietnam), how many deadlines.

They are written by the transactions that write what they count (the engine's commands, the
sweep, the migration of running cases) as *deltas* — a :class:`Tally` — committed or rolled
back with what they count. On PostgreSQL the deltas are inserted as rows of their own into
``report_moves_delta`` and ``report_deadlines_delta`` (no key: a writer never waits for
another's counter row, which four concurrent writers did 20–27 % of the time when they added
to the counters themselves; bench/README.md, (23)), and the sweep folds them into the
counters every minute (:func:`fold`); a report reads the counters and the deltas not folded
yet (:func:`moves_source`, :func:`deadlines_source`). SQLite has one writer at a time: its
transactions add to the counters directly. A report of a year for the whole country then
reads a few hundred thousand counters.

A hand-over to another commune moves the case's counters from its old commune and province
to the new ones (:func:`move_case`): the counters follow the case's *current* place, as
every other figure of the reports does. :func:`check` recounts everything from the audit log,
the deadlines and the cases and lists the differences (``rehabflow counters check``);
:func:`rebuild` rewrites them (the benchmark's generator after a big load, ``rehabflow
counters rebuild``). Migration 0006 filled them with the same grouping in plain SQL.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from workflow import jsontext
from workflow.calendar import business_date
from workflow.model import (
    REPORT_DEADLINES_DELTA,
    REPORT_MOVES_DELTA,
    AuditEvent,
    Case,
    Deadline,
    ReportDeadline,
    ReportMove,
)

COMMUNE, PROVINCE = "commune", "province"
LEVELS = (COMMUNE, PROVINCE)
OPENING = ""  # from_state of the counters of openings

Place = tuple[str, str]  # (commune, province)
MOVES: Table = ReportMove.__table__  # type: ignore[assignment]
DEADLINES: Table = ReportDeadline.__table__  # type: ignore[assignment]
DELTAS = {MOVES.name: REPORT_MOVES_DELTA, DEADLINES.name: REPORT_DEADLINES_DELTA}
MOVE_KEY = ("level", "day", "unit", "action", "definition", "from_state", "to_state")
DEADLINE_KEY = ("level", "due_on", "unit", "key", "status", "late")


def is_move(from_state: str | None, to_state: str | None) -> bool:
    """Whether an event with these states moves a case (``model.STATE_CHANGE``)."""
    return to_state is not None and from_state != to_state


def closed_late(closed_at: datetime | None, due_on: date) -> bool:
    """A deadline closed after its due date, in Vietnam (as ``reports._closed_late``)."""
    return closed_at is not None and business_date(closed_at) > due_on


@dataclass
class Tally:
    """Deltas to add to the counters (one upsert statement per family in :func:`add`)."""

    moves: Counter[tuple] = field(default_factory=Counter)
    deadlines: Counter[tuple] = field(default_factory=Counter)
    emptied: set[Place] = field(default_factory=set)  # places a hand-over left

    def move(
        self,
        at: datetime,
        action: str,
        definition: str | None,
        from_state: str | None,
        to_state: str | None,
        place: Place,
        sign: int = 1,
    ) -> None:
        """An audit event at ``place`` (counted only if it moves the case)."""
        if not is_move(from_state, to_state):
            return
        day = business_date(at)
        rest = (action, definition or "", from_state or OPENING, to_state)
        for level, unit in zip(LEVELS, place, strict=True):
            self.moves[(level, day, unit, *rest)] += sign

    def deadline(
        self, due_on: date, key: str, status: str, late: bool, place: Place, sign: int = 1
    ) -> None:
        """A deadline row (as it is now) at ``place``."""
        for level, unit in zip(LEVELS, place, strict=True):
            self.deadlines[(level, due_on, unit, key, status, bool(late))] += sign

    def closed(self, due_on: date, key: str, status: str, at: datetime, place: Place) -> None:
        """An open deadline closed (``status``: met or cancelled) at ``at``."""
        self.deadline(due_on, key, "open", False, place, -1)
        self.deadline(due_on, key, status, closed_late(at, due_on), place)

    def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The non-zero deltas as parameter rows: (moves, deadlines)."""
        return _rows(MOVE_KEY, self.moves), _rows(DEADLINE_KEY, self.deadlines)

    def __bool__(self) -> bool:
        return any(self.moves.values()) or any(self.deadlines.values()) or bool(self.emptied)

    def clear(self) -> None:
        self.moves.clear()
        self.deadlines.clear()
        self.emptied.clear()


_PENDING = "rehabflow.counters"


class HasInfo(Protocol):
    """A session, or a unit of work (whose ``info`` is its session's once it made one)."""

    @property
    def info(self) -> dict[Any, Any]: ...


def pending(holder: HasInfo) -> Tally:
    """The deltas of the counters collected by the transaction of ``holder`` (a session, or
    a unit of work) so far; the unit of work writes them when it commits
    (:func:`write_pending`)."""
    tally = holder.info.get(_PENDING)
    if tally is None:
        tally = holder.info[_PENDING] = Tally()
    return tally


def write_pending(session: Session) -> None:
    """Write the transaction's pending deltas (``UnitOfWork.commit``, just before the
    commit)."""
    tally = session.info.get(_PENDING)
    if tally:
        add(session, tally)
        tally.clear()


def _rows(names: tuple[str, ...], deltas: Counter[tuple]) -> list[dict[str, Any]]:
    return [
        dict(zip(names, key, strict=True), n=n)
        for key, n in sorted(deltas.items(), key=_sortable)
        if n
    ]


def _sortable(item: tuple[tuple, int]) -> tuple[str, ...]:
    return tuple(str(part) for part in item[0])


@functools.cache
def _upsert_for(dialect_name: str, table: Table, names: tuple[str, ...]) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(names), set_={"n": table.c.n + stmt.excluded.n}
    )


def _upsert(session: Session, table: Table, names: tuple[str, ...]) -> Any:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET n = n + excluded.n`` for the dialect (built
    once: constructing it showed in the profile of a command)."""
    return _upsert_for(session.get_bind().dialect.name, table, names)


def _recordset(table: Table, names: tuple[str, ...], condition: str) -> str:
    """PostgreSQL: an insert of the rows of a jsonb parameter (named after ``table``) into
    its table of deltas if ``condition`` (SQL) holds: plain rows, no upsert, so no row for
    concurrent writers to queue on. The rows are of the table's own row type
    (``jsonb_populate_recordset``: its columns, in its order, with its types), so the text
    names no column: a command's write stays under the length up to which psycopg caches
    its parsing (``service._write_statement``)."""
    deltas = DELTAS[table.name]
    assert [c.name for c in table.c] == [*names, "n"]  # the rows hold the key and the count
    assert [c.name for c in deltas.c] == [*names, "n"]
    return (
        f"INSERT INTO {deltas.name} SELECT * "
        f"FROM jsonb_populate_recordset(NULL::{deltas.name}, CAST(:{table.name} AS jsonb)) "
        f"WHERE {condition}"
    )


def pg_counter_ctes(condition: str) -> str:
    """PostgreSQL: the inserts of the two families' deltas as data-modifying CTEs, written
    only if ``condition`` (SQL) holds, for a statement that writes other rows too
    (``audit.PG_APPEND_CTES``: a command's counters with its event, no round trip of their
    own); their parameters come from :func:`take_parameters`."""
    return (
        f"counted_moves AS ({_recordset(MOVES, MOVE_KEY, condition)}), "
        f"counted_deadlines AS ({_recordset(DEADLINES, DEADLINE_KEY, condition)})"
    )


# PostgreSQL: both families in one statement (one round trip in a command's commit)
_PG_ADD = text(f"WITH {pg_counter_ctes('true')} SELECT 1")


def take_parameters(holder: HasInfo) -> dict[str, str]:
    """PostgreSQL: the parameters of :func:`pg_counter_ctes` for the transaction's pending
    deltas, which are then no longer pending (the statement writes them; the counters a
    hand-over empties are dropped when they are folded)."""
    tally = holder.info.get(_PENDING)
    if not tally:
        return {MOVES.name: "[]", DEADLINES.name: "[]"}
    moves, deadlines = tally.rows()
    tally.clear()
    return {MOVES.name: _json(moves), DEADLINES.name: _json(deadlines)}


def add(session: Session, tally: Tally) -> None:
    """Add ``tally`` to the stored counters: on PostgreSQL one statement inserting the
    deltas (two data-modifying CTEs from jsonb parameters; :func:`fold` adds them to the
    counters and drops the ones a hand-over emptied), on SQLite one executemany upsert per
    family into the counters."""
    moves, deadlines = tally.rows()
    if session.get_bind().dialect.name == "postgresql":
        if moves or deadlines:
            params = {MOVES.name: _json(moves), DEADLINES.name: _json(deadlines)}
            session.execute(_PG_ADD, params)
        return
    if moves:
        session.execute(_upsert(session, MOVES, MOVE_KEY), moves)
    if deadlines:
        session.execute(_upsert(session, DEADLINES, DEADLINE_KEY), deadlines)
    for place in sorted(tally.emptied):  # drop the counters a hand-over brought to zero
        for table in (ReportMove, ReportDeadline):
            session.execute(
                delete(table).where(
                    table.n == 0,
                    or_(
                        *[
                            and_(table.level == level, table.unit == unit)
                            for level, unit in zip(LEVELS, place, strict=True)
                        ]
                    ),
                )
            )


def _json(rows: list[dict[str, Any]]) -> str:
    return jsontext.dumps(rows)


def _fold_sql(table: Table, names: tuple[str, ...]) -> Any:
    """PostgreSQL: take every committed delta of ``table`` out of its table of deltas and
    add their sums to the counters, in key order (two folds lock counters in one order);
    returns the counters' keys and new counts."""
    deltas, key = DELTAS[table.name].name, ", ".join(names)
    return text(
        f"WITH taken AS (DELETE FROM {deltas} RETURNING *), "
        f"summed AS (SELECT {key}, sum(n) AS n FROM taken GROUP BY {key}) "
        f"INSERT INTO {table.name} ({key}, n) SELECT {key}, n FROM summed ORDER BY {key} "
        f"ON CONFLICT ({key}) DO UPDATE SET n = {table.name}.n + excluded.n "
        f"RETURNING {key}, n"
    )


_FOLDS = {
    MOVES.name: _fold_sql(MOVES, MOVE_KEY),
    DEADLINES.name: _fold_sql(DEADLINES, DEADLINE_KEY),
}


def fold(session: Session) -> int:
    """Add the deltas written since the last fold to the counters and drop the counters
    that fell to zero (a hand-over's); returns how many counters it changed (0 on SQLite,
    whose commands add to the counters themselves). The sweep calls it every minute, in a
    transaction of its own: commands only insert deltas, so they never wait for it, nor it
    for them (a delta committed during the fold is folded the next time)."""
    if session.get_bind().dialect.name != "postgresql":
        return 0
    folded = 0
    for table, names in ((MOVES, MOVE_KEY), (DEADLINES, DEADLINE_KEY)):
        rows = session.execute(_FOLDS[table.name]).all()
        folded += len(rows)
        zero = [dict(zip(names, row[:-1], strict=True)) for row in rows if row[-1] == 0]
        if zero:
            match = and_(*[table.c[name] == bindparam(f"z_{name}") for name in names])
            session.execute(
                delete(table).where(match, table.c.n == 0),
                [{f"z_{k}": v for k, v in z.items()} for z in zero],
            )
    return folded


def _source(table: Table) -> Any:
    """The counters of ``table`` with the deltas not folded yet (:func:`fold`), as rows of
    the same columns: sums over it are the counts as of now."""
    deltas = DELTAS[table.name]
    return union_all(
        select(*table.c), select(*[deltas.c[c.name].label(c.name) for c in table.c])
    ).subquery(table.name)


def moves_source() -> Any:
    """``report_moves`` and its deltas not folded yet, for sums (``reports``)."""
    return _source(MOVES)


def deadlines_source() -> Any:
    """``report_deadlines`` and its deltas not folded yet, for sums (``reports``)."""
    return _source(DEADLINES)


def count_event(tally: Tally, event: AuditEvent, place: Place) -> None:
    """Add an audit event just written for a case now at ``place``."""
    if event.case_id is not None:
        tally.move(
            event.at, event.action, event.definition, event.from_state, event.to_state, place
        )


def tally_events(
    tally: Tally,
    events: Iterable[tuple[int, datetime, str, str | None, str | None, str | None]],
    places: Mapping[int, Place],
) -> None:
    """Add audit events (case_id, at, action, definition, from, to) of cases now at
    ``places[case_id]``: the bulk loaders' way (bench.generate)."""
    for case_id, at, action, definition, frm, to in events:
        tally.move(at, action, definition, frm, to, places[case_id])


def tally_deadlines(
    tally: Tally,
    deadlines: Iterable[tuple[int, date, str, str, datetime | None]],
    places: Mapping[int, Place],
) -> None:
    """Add deadline rows (case_id, due_on, key, status, closed_at) of cases now at
    ``places[case_id]`` (bench.generate)."""
    for case_id, due_on, key, status, closed_at in deadlines:
        late = closed_late(closed_at, due_on)
        tally.deadline(due_on, key, status, late, places[case_id])


def move_case(session: Session, tally: Tally, case_id: int, old: Place, new: Place) -> None:
    """Add to ``tally`` the move of the counters of the case's moves and deadlines so far
    from ``old`` (commune, province) to ``new``: the hand-over of a case to another commune
    (its rows as they are in the transaction; the counters that fall to zero are dropped
    when the tally is written)."""
    events = select(
        AuditEvent.at,
        AuditEvent.action,
        AuditEvent.definition,
        AuditEvent.from_state,
        AuditEvent.to_state,
    ).where(AuditEvent.case_id == case_id, state_change())
    for at, action, definition, frm, to in session.execute(events):
        tally.move(at, action, definition, frm, to, old, -1)
        tally.move(at, action, definition, frm, to, new)
    rows = select(Deadline.due_on, Deadline.key, Deadline.status, Deadline.closed_at).where(
        Deadline.case_id == case_id
    )
    for due_on, key, status, closed_at in session.execute(rows):
        late = closed_late(closed_at, due_on)
        tally.deadline(due_on, key, status, late, old, -1)
        tally.deadline(due_on, key, status, late, new)
    tally.emptied.add(old)


def state_change(ev: Any = AuditEvent) -> Any:
    """SQL: the audit events that move a case (``model.STATE_CHANGE``): the predicate of the
    partial index ``ix_audit_state_changes``, written the same way so the planner uses it."""
    return and_(
        ev.to_state.is_not(None), or_(ev.from_state.is_(None), ev.from_state != ev.to_state)
    )


def business_day(session: Session, col: Any) -> Any:
    """SQL: the business date (Vietnam, UTC+7 all year) of a moment column."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("Asia/Ho_Chi_Minh", col))
    return func.date(col, "+7 hours")


def _per_level(selects: Any) -> Any:
    return union_all(
        *[
            selects(literal(level).label("level"), unit.label("unit"))
            for level, unit in ((COMMUNE, Case.unit_code), (PROVINCE, Case.province_code))
        ]
    ).subquery()


def expected_moves(session: Session) -> Select:
    """``report_moves`` recounted from the audit log and the cases' current places."""
    ev = AuditEvent
    rest = [
        ev.action,
        func.coalesce(ev.definition, "").label("definition"),
        func.coalesce(ev.from_state, OPENING).label("from_state"),
        ev.to_state,
    ]
    day = business_day(session, ev.at).label("day")
    moves = _per_level(
        lambda level, unit: (
            select(level, day, unit, *rest).join(Case, Case.id == ev.case_id).where(state_change())
        )
    )
    cols = [moves.c[name] for name in MOVE_KEY]
    return select(*cols, func.count().label("n")).group_by(*cols)


def expected_deadlines(session: Session) -> Select:
    """``report_deadlines`` recounted from the deadlines and the cases' current places."""
    d = Deadline
    late = func.coalesce(business_day(session, d.closed_at) > d.due_on, False).label("late")
    rows = _per_level(
        lambda level, unit: select(level, d.due_on, unit, d.key, d.status, late).join(
            Case, Case.id == d.case_id
        )
    )
    cols = [rows.c[name] for name in DEADLINE_KEY]
    return select(*cols, func.count().label("n")).group_by(*cols)


def rebuild(session: Session) -> dict[str, int]:
    """Rewrite every counter (in the caller's transaction) and drop the deltas not folded
    yet; returns the rows per table.

    On PostgreSQL it first locks the audit heads, one of which every writer of counters
    holds when it writes them, so no command slips between the recount and the commit."""
    from workflow import audit  # (audit imports this module for its statement)

    audit.lock_heads(session)
    out = {}
    for table, names, expected in (
        (MOVES, MOVE_KEY, expected_moves),
        (DEADLINES, DEADLINE_KEY, expected_deadlines),
    ):
        session.execute(delete(DELTAS[table.name]))
        session.execute(delete(table))
        src = expected(session).subquery()
        cols = [src.c[name] for name in names]
        session.execute(table.insert().from_select([*names, "n"], select(*cols, src.c.n)))
        out[table.name] = int(session.execute(select(func.count()).select_from(table)).scalar_one())
    return out


@dataclass(frozen=True)
class Difference:
    table: str
    key: tuple
    stored: int
    expected: int


def check(session: Session, limit: int = 20) -> tuple[int, list[Difference]]:
    """Compare the stored counters (with their deltas not folded yet) with a recount: (how
    many keys differ, the first ``limit`` of them). Zero counters (left by a hand-over) count
    as absent. On PostgreSQL, in a fresh session, the recount and the stored counters are
    read from one snapshot."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    bad: list[Difference] = []
    for table, names, expected in (
        (MOVES, MOVE_KEY, expected_moves),
        (DEADLINES, DEADLINE_KEY, expected_deadlines),
    ):
        want = {_key(r): int(r[-1]) for r in session.execute(expected(session))}
        source = _source(table)
        stored = select(*[source.c[name] for name in names], func.sum(source.c.n)).group_by(
            *[source.c[name] for name in names]
        )
        have = {_key(r): int(r[-1]) for r in session.execute(stored) if r[-1]}
        for key in sorted(set(want) | set(have), key=lambda k: tuple(map(str, k))):
            if have.get(key, 0) != want.get(key, 0):
                bad.append(Difference(table.name, key, have.get(key, 0), want.get(key, 0)))
    return len(bad), bad[:limit]


def _key(row: Any) -> tuple:
    """A counter's key as stored (SQLite gives recounted dates and flags as text/ints)."""
    level, day, *rest = row[:-1]
    day = day if isinstance(day, date) else date.fromisoformat(str(day))
    if len(rest) == 4:  # deadlines: unit, key, status, late
        rest[3] = bool(rest[3])
    return (level, day, *rest)
