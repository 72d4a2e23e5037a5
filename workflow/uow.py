"""The unit of work: one database transaction that owns a command's every write.

State change, audit event, outbox messages and deadlines are written in the same transaction;
leaving the block without :meth:`UnitOfWork.commit` rolls everything back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from types import TracebackType
from typing import Any, NamedTuple

import psycopg
from sqlalchemy import Select, bindparam, literal_column, select
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.elements import ClauseElement, TextClause

from workflow import prepared, rollup
from workflow.db import read_only_transaction
from workflow.errors import CaseNotFound
from workflow.model import Case, Subject

# built once: constructing the select per call showed in the profile of a command
_CASE = select(Case).where(Case.id == bindparam("case_id"))
# PostgreSQL: a command's first statement locks its case row and, for the rest of its
# transaction only, has PostgreSQL plan its prepared statements generically. A command's
# statements have the same shape every time (rows by key, ids, JSON arrays), so re-planning
# them for each call's values (the custom plans PostgreSQL otherwise keeps choosing for the
# command's write) buys nothing: with it, `bench.run --only engine` at 4 clients did 2-33 %
# more advances per second in 5 of 5 alternated pairs. Reports and lists keep the default
# (their values are skewed).
_GENERIC_PLANS = literal_column("set_config('plan_cache_mode', 'force_generic_plan', true)")
_CASE_LOCKED = _CASE.with_for_update(of=Case).add_columns(_GENERIC_PLANS)


# PostgreSQL, an optimistic command (UnitOfWork.optimistic): with no transaction to scope the
# setting to, its read sets generic plans for the connection's session (a column of the read:
# GENERIC_PLANS_UNTIL_RESET) and its write resets the setting (``NULL``: the server's
# default) as a column of its own (RESET_PLANS): the write is planned before it runs, so
# generically. Without it PostgreSQL planned the write afresh for every call (300 custom
# plans in 300 advances, pg_prepared_statements). A command that ends without its write
# resets the setting as it leaves the unit of work, so reports and lists, whose values are
# skewed, keep the default.
GENERIC_PLANS_UNTIL_RESET = literal_column(
    "set_config('plan_cache_mode', 'force_generic_plan', false)"
)
RESET_PLANS = "set_config('plan_cache_mode', NULL, false)"

# a case's columns, then its subject's, as the driver reads them (UnitOfWork.read_case)
CASE_COLUMNS = (*Case.__table__.c, *Subject.__table__.c)
# PostgreSQL: _CASE_LOCKED as Core columns (case's, then subject's), for the driver directly
_CASE_ROW = (
    select(*CASE_COLUMNS)
    .join_from(Case.__table__, Subject.__table__)
    .where(Case.__table__.c.id == bindparam("case_id"))
    .with_for_update(of=Case.__table__)
    .add_columns(_GENERIC_PLANS)
)


@lru_cache(maxsize=32)  # per dialect: one or two per process (tests make many)
def _loaders(dialect: Dialect) -> tuple[tuple[tuple[str, Callable | None], ...], ...]:
    """For Case then Subject: (attribute, the column type's result processor) per column."""
    out = []
    for model in (Case, Subject):
        mapper = model.__mapper__
        out.append(
            tuple(
                (
                    mapper.get_property_by_column(column).key,
                    column.type.dialect_impl(dialect).result_processor(dialect, None),
                )
                for column in model.__table__.c
            )
        )
    return tuple(out)


def _detached(model: type, loaders: tuple, values: tuple) -> Any:
    """An instance as if loaded from the database (no history), not yet in a session: the
    values go straight into the new instance's ``__dict__``, as the ORM's own loading puts
    them (``set_committed_value`` per column cost 0.03 ms more per command, measured), and
    ``make_transient_to_detached`` gives it its identity and marks them all committed."""
    obj = model.__mapper__.class_manager.new_instance()
    obj.__dict__.update(
        (attr, process(value) if process else value)
        for (attr, process), value in zip(loaders, values, strict=True)
    )
    make_transient_to_detached(obj)
    return obj


def _case_of(row: Any, dialect: Dialect, *, plain: bool = False) -> tuple[Case, int]:
    """The case (its subject attached) of a row starting with :data:`CASE_COLUMNS`, and the
    index of the row's first other column: detached ORM instances, or with ``plain`` a
    :data:`CaseRow` (typed as the case it stands for)."""
    case_loaders, subject_loaders = _loaders(dialect)
    n = len(case_loaders)
    m = n + len(subject_loaders)
    if plain:
        case = _plain(CaseRow, case_loaders, row[:n])
        case.subject = _plain(SubjectRow, subject_loaders, row[n:m])
    else:
        case = _detached(Case, case_loaders, row[:n])
        set_committed_value(case, "subject", _detached(Subject, subject_loaders, row[n:m]))
    return case, m


def _plain_class(model: type, name: str, extra: tuple[str, ...] = ()) -> type:
    """A class with a slot per mapped column of ``model`` (its attribute's name), and
    ``extra`` slots: a row's values as plain attributes."""
    keys = tuple(model.__mapper__.get_property_by_column(c).key for c in model.__table__.c)
    doc = (
        f"A {model.__name__} row read for one unit of work, outside the ORM: the same "
        "attributes (columns), none of the instrumentation (not in any session; changing it "
        "writes nothing)."
    )
    return type(name, (), {"__slots__": keys + extra, "__doc__": doc, "__module__": __name__})


# what UnitOfWork.read_case gives: a case (its subject as ``subject``) read straight from a row
CaseRow = _plain_class(Case, "CaseRow", ("subject",))
SubjectRow = _plain_class(Subject, "SubjectRow")


def _plain(cls: type, loaders: tuple, values: tuple) -> Any:
    obj = cls.__new__(cls)
    for (attr, process), value in zip(loaders, values, strict=True):
        setattr(obj, attr, process(value) if process else value)
    return obj


class _DriverStatement(NamedTuple):
    compiled: Compiled
    processors: dict[str, Callable[[Any], Any]]  # bind name: its type's bind processor


@lru_cache(maxsize=32)  # per statement and dialect: a few per process (tests make many)
def _for_driver(statement: ClauseElement, dialect: Dialect) -> _DriverStatement:
    """A statement compiled once for the driver (``compiled.string``, with ``%(name)s``
    parameters), with the bind processors of its typed parameters (JSON, timestamps…): what
    SQLAlchemy's own execution would apply."""
    compiled = statement.compile(dialect=dialect)
    processors = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    return _DriverStatement(compiled, processors)


class Driver(NamedTuple):
    """What a statement sent straight to the driver needs: the dialect (its compiler and
    type processors), psycopg's connection, and how to drop that connection when an error
    broke it (a SQLAlchemy ``Connection``'s ``invalidate``, or the pool's own for a unit of
    work that never made one: ``UnitOfWork.driver``)."""

    dialect: Dialect
    raw: psycopg.Connection
    invalidate: Callable[[BaseException], None]

    @classmethod
    def of(cls, connection: Connection) -> Driver:
        """The driver under a SQLAlchemy connection."""
        return cls(
            connection.dialect, connection.connection.driver_connection, connection.invalidate
        )


def _driver_call(
    dialect: Dialect, statement: ClauseElement, params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The statement's SQL for the driver and its parameters, bind-processed as SQLAlchemy's
    own execution would."""
    driver = _for_driver(statement, dialect)
    values = driver.compiled.construct_params(params)
    for name, process in driver.processors.items():
        values[name] = process(values[name])
    return driver.compiled.string, values


# the attribute of a psycopg connection that holds its cursor for the driver's statements
_CURSOR_ATTRIBUTE = "_rehabflow_cursor"


def _cursor(raw: psycopg.Connection) -> psycopg.Cursor:
    """The connection's cursor for statements sent straight to the driver in a transaction
    (in autocommit they go through :mod:`workflow.prepared`), kept on the connection itself,
    so that it goes when the connection goes (a map from connections to their cursors kept
    every connection alive: the cursor refers to its connection). A new cursor per statement
    built psycopg's adaptation context afresh each time (a dumper looked up per parameter's
    type): about a third more of the client's CPU for a statement of forty parameters
    (measured, bench/README.md, (19)). Its rows are read before the next statement is sent:
    callers fetch what they need at once."""
    cursor = getattr(raw, _CURSOR_ATTRIBUTE, None)
    if cursor is None or cursor.closed:
        cursor = raw.cursor()
        setattr(raw, _CURSOR_ATTRIBUTE, cursor)
    return cursor


def _fetch_one(
    driver: Driver, statement: ClauseElement, params: dict[str, Any], commit: bool = False
) -> Any:
    """``statement`` sent straight to the driver (prepared once per connection), with the
    bind processing SQLAlchemy would apply; its first row as the driver gives it (None if
    none), then, with ``commit``, the driver's ``COMMIT``. On a connection in autocommit,
    through libpq's prepared-statement calls (:mod:`workflow.prepared`): the statement is
    its own transaction."""
    sql, values = _driver_call(driver.dialect, statement, params)
    raw = driver.raw
    with _driver_errors(driver, sql):
        row = _run(raw, sql, values, first=True)
        if commit and not raw.autocommit:  # (in autocommit the statement committed itself)
            raw.commit()
    return row


def _run(raw: psycopg.Connection, sql: str, values: dict[str, Any], *, first: bool) -> Any:
    """``sql`` on ``raw``, prepared once per connection: in autocommit through libpq's
    prepared-statement calls (:mod:`workflow.prepared`), in a transaction through the
    connection's cursor (which begins it, as psycopg does); its first row (None if none), or
    all its rows."""
    if raw.autocommit:
        return prepared.fetch(raw, sql, values, first=first)
    cursor = _cursor(raw).execute(sql, values, prepare=True)
    return cursor.fetchone() if first else cursor.fetchall()


def fetch_all(driver: Driver, statement: Select, params: dict[str, Any]) -> list[tuple]:
    """PostgreSQL: a select's rows read straight through the driver (prepared once per
    connection, no result objects), each value through its column type's result processor
    as SQLAlchemy's own execution would (``UTCDateTime``…); plain tuples in the select's
    column order. For a hot read of a few rows (the token of every API request:
    :meth:`UnitOfWork.fetch_all`)."""
    sql, values = _driver_call(driver.dialect, statement, params)
    results = _result_processors(statement, driver.dialect)
    with _driver_errors(driver, sql):
        rows = _run(driver.raw, sql, values, first=False)
        return [tuple(p(v) if p else v for p, v in zip(results, row, strict=True)) for row in rows]


@lru_cache(maxsize=32)
def _result_processors(statement: Select, dialect: Dialect) -> tuple[Callable | None, ...]:
    return tuple(
        c.type.dialect_impl(dialect).result_processor(dialect, None)
        for c in statement.selected_columns
    )


@contextmanager
def _driver_errors(driver: Driver, sql: str) -> Iterator[None]:
    """Errors of statements sent past SQLAlchemy, as SQLAlchemy raises them (``DBAPIError``
    subclasses, parameters hidden); a connection the error broke is invalidated, so the pool
    does not hand it out again."""
    try:
        yield
    except psycopg.Error as exc:
        broken = driver.raw.closed
        if broken:
            driver.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            None,
            exc,
            psycopg.Error,
            hide_parameters=True,
            connection_invalidated=bool(broken),
            dialect=driver.dialect,
        ) from exc


class UnitOfWork:
    """``autocommit``: on PostgreSQL, each statement is its own transaction (no ``BEGIN`` and
    ``COMMIT`` round trips); for a unit of work whose reads are one statement and whose one
    write is independent of them (the case page and its access-log row). Ignored on SQLite.

    ``optimistic``: on PostgreSQL, a command without a lock: its case is read with what it
    depends on in one statement, and its one write (version-checked, so it writes nothing if
    the case changed meanwhile) is its own transaction (``autocommit``); two round trips in
    all. The caller does the command again, locked, when the write finds the case changed.
    False on SQLite (whose writer lock is taken at ``BEGIN``) once entered.

    The ORM session is made when first used (:attr:`session`). An ``autocommit`` unit of
    work on PostgreSQL holds a pooled connection of its own, in psycopg's autocommit mode,
    from its start (:meth:`driver`); its session, if it needs one (an idempotency key's
    record, a province-wide agency's routing…), is bound to that same connection. A command
    that goes straight through the driver then makes no session at all: the session, its
    transaction and SQLAlchemy's connection cost an optimistic advance about 0.1 ms of CPU
    (bench/README.md, (17))."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        read_only: bool = False,
        autocommit: bool = False,
        optimistic: bool = False,
    ) -> None:
        self._factory = session_factory
        self.read_only = read_only
        self.autocommit = autocommit or optimistic
        self.optimistic = optimistic
        self.committed = False  # by write_and_commit
        self._plans_to_reset = False  # by read_for_command, until write_and_commit
        self._locked: dict[int, Case] = {}  # PostgreSQL: by lock_case_and_read, outside the session
        self._session: Session | None = None
        # the session's ``info`` once it is made; until then the unit's own (rollup.pending)
        self.info: dict[str, Any] = {}
        self._pooled: PoolProxiedConnection | None = None  # autocommit units on PostgreSQL
        self._connection: Connection | None = None  # over _pooled, for its session
        self._driver: Driver | None = None

    def __enter__(self) -> UnitOfWork:
        engine: Engine = self._factory.kw["bind"]
        self._engine = engine
        self.dialect = engine.dialect.name
        self.optimistic = self.optimistic and self.dialect == "postgresql"
        if self.autocommit and self.dialect == "postgresql":
            pooled = None
            try:
                pooled = engine.raw_connection()
                # for this unit only: _release restores it before the connection goes back
                pooled.driver_connection.autocommit = True
            except psycopg.Error as exc:  # raised as SQLAlchemy raises a failed connect
                if pooled is not None:  # a connection that broke since: dropped
                    pooled.invalidate(exc)
                    pooled.close()
                raise DBAPIError.instance(
                    None, None, exc, psycopg.Error, hide_parameters=True, dialect=engine.dialect
                ) from exc
            self._pooled = pooled
        self._token = read_only_transaction.set(self.read_only)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._plans_to_reset:
                self._reset_plans()
            # close() rolls back anything not committed and detaches objects without expiring
            # them, so results read in the unit of work stay usable after it.
            if self._session is not None:
                self._session.close()
            if self._pooled is not None:
                self._release()
        finally:
            read_only_transaction.reset(self._token)

    @property
    def session(self) -> Session:
        """The unit's ORM session, made on first use (bound to the unit's own connection in
        an ``autocommit`` unit on PostgreSQL)."""
        if self._session is None:
            if self._pooled is not None:
                # psycopg is in autocommit: the session's BEGIN and COMMIT send nothing, and
                # each statement is its own transaction, as in the unit's driver statements
                self._connection = Connection(self._engine, connection=self._pooled)
                self._session = self._factory(bind=self._connection)
            else:
                self._session = self._factory()
            self._session.info.update(self.info)  # counters collected before it (rollup)
            self.info = self._session.info
        return self._session

    @property
    def has_session(self) -> bool:
        """Whether the unit made its session (whatever it holds is written only through it)."""
        return self._session is not None

    def driver(self) -> Driver:
        """The driver of the unit's connection (for statements sent past SQLAlchemy)."""
        if self._pooled is None:
            return Driver.of(self.session.connection())
        if self._driver is None:
            self._driver = Driver(
                self._engine.dialect, self._pooled.driver_connection, self._invalidate
            )
        return self._driver

    def _invalidate(self, exc: BaseException) -> None:
        if self._connection is not None:
            self._connection.invalidate(exc)
        elif self._pooled is not None:
            self._pooled.invalidate(exc)

    def _release(self) -> None:
        """The unit's own connection back to the pool, out of autocommit again (a connection
        an error broke was invalidated: the pool drops it)."""
        pooled, connection = self._pooled, self._connection
        self._pooled = self._connection = self._driver = None
        raw = pooled.driver_connection if pooled.is_valid else None
        if raw is not None and not raw.closed:
            try:
                raw.autocommit = False
            except psycopg.Error as exc:
                pooled.invalidate(exc)
        (connection or pooled).close()

    def commit(self) -> None:
        """Write the report counters the transaction collected (``workflow.rollup``), then
        commit; nothing to do once :meth:`write_and_commit` committed (SQLAlchemy's own
        commit would only find the driver's transaction closed)."""
        if self.committed:
            s = self._session
            if s is not None and (s.new or s.dirty or s.deleted):
                raise RuntimeError("changes made after the unit of work committed")
            return
        if self._session is None and not rollup.pending(self):
            # nothing went through a session (an autocommit unit's driver statements
            # committed as they ran), and no counters wait for one
            return
        rollup.write_pending(self.session)
        self.session.commit()

    def lock_case_and_read(self, case_id: int, then: TextClause) -> tuple[Case, Any]:
        """Lock a case's row (as :meth:`get_case` with ``for_update``), then run ``then``
        (a read of one row, parameter ``case_id``); the case and that row.

        PostgreSQL: the two statements go straight to the driver, one after the other (so
        ``then`` takes its snapshot once the lock is held), each prepared once per
        connection. Not in psycopg's pipeline: sending them (and ``BEGIN``) in one round trip
        cost more of the client's CPU than the round trips it saved, and was no faster even
        at one client (measured: bench/README.md, (12)). The case and its subject are built
        from the row without the ORM's loading (0.2–0.3 ms of CPU per command, measured), as
        if loaded, and are left out of the session: a command writes its case with its own
        statement, not through the session (add a row it changes otherwise, as a hand-over
        does its subject); the unit of work keeps the case, and locking it again gives that
        instance back.
        SQLite, or a case the session holds already: the two statements."""
        if self.dialect != "postgresql" or identity_key(Case, case_id) in self.session.identity_map:
            # (a case this unit of work holds already keeps its one instance)
            case = self.get_case(case_id, for_update=True)
            return case, self.session.execute(then, {"case_id": case_id}).one()
        if (held := self._locked.get(case_id)) is not None:  # its row lock is held already
            return held, self.session.execute(then, {"case_id": case_id}).one()
        driver = self.driver()
        params = {"case_id": case_id}
        row = _fetch_one(driver, _CASE_ROW, params)
        if row is None:
            raise CaseNotFound(f"case {case_id} not found", case_id=case_id)
        then_row = _fetch_one(driver, then, params)
        case, _ = _case_of(row, driver.dialect)
        self._locked[case_id] = case
        return case, then_row

    def read_case(self, statement: ClauseElement, params: dict[str, Any]) -> tuple[Case, tuple]:
        """PostgreSQL: run ``statement`` — the case's and its subject's columns (as
        :data:`CASE_COLUMNS` lists them), then any others, one row — straight through the
        driver, prepared once per connection; the case (with its subject) as a
        :data:`CaseRow`, a plain object with the case's attributes (a reader or an optimistic
        command writes its case with its own statement, never through a session), and the
        row's other columns. The ORM's loading of the same row cost the case page 0.1–0.2 ms
        of CPU (bench/README.md, (15)); detached ORM instances cost their building and an
        instrumented access for each use of an attribute (bench/README.md, (19)).
        ``CaseNotFound`` when there is no row."""
        driver = self.driver()
        row = _fetch_one(driver, statement, params)
        if row is None:
            raise CaseNotFound(f"case {params['case_id']} not found", case_id=params["case_id"])
        case, n = _case_of(row, driver.dialect, plain=True)
        return case, row[n:]

    def fetch_all(self, statement: Select, params: dict[str, Any]) -> list[tuple]:
        """PostgreSQL: ``statement``'s rows through the unit's driver (:func:`fetch_all`)."""
        return fetch_all(self.driver(), statement, params)

    def read_for_command(self, statement: Select, params: dict[str, Any]) -> tuple[Case, tuple]:
        """An optimistic command's read (PostgreSQL): as :meth:`read_case`; ``statement``
        also sets generic plans for the session (a :data:`GENERIC_PLANS_UNTIL_RESET`
        column), which the command's write resets (:data:`RESET_PLANS`), or else this unit of
        work as it ends."""
        self._plans_to_reset = True
        return self.read_case(statement, params)

    def _reset_plans(self) -> None:
        """The server's default plan cache mode again, after an optimistic command's read
        whose write did not run or failed (a failed statement's reset is rolled back with
        it). The connection is in autocommit, so no failed transaction stands in the way; if
        the reset itself fails, the connection is dropped rather than handed out again."""
        self._plans_to_reset = False
        if self._pooled is None or not self._pooled.is_valid:
            return
        driver = self.driver()
        if driver.raw is None or driver.raw.closed:
            return
        try:
            driver.raw.execute(f"SELECT {RESET_PLANS}")
        except psycopg.Error as exc:
            driver.invalidate(exc)

    def write_and_commit(self, statement: TextClause, params: dict[str, Any]) -> Any:
        """PostgreSQL: run ``statement`` (a write returning one row) straight through the
        driver, then ``COMMIT``; the row. Whatever the session still holds is flushed first
        and committed with it; the report counters must already be in the statement
        (``rollup.take_parameters``), since nothing is written after it.

        The statement carries its own checks, each making it write nothing (a ``WHERE`` its
        every write depends on) and saying so in the row: a row that reports a failed check
        was committed as an empty transaction. (The two went in one round trip through
        psycopg's pipeline once, so that the audit head was released before the client read
        the row; the pipeline cost more CPU than it saved: bench/README.md, (12).) An error
        fails the statement; nothing is committed, and the unit of work rolls back."""
        if self._session is not None:
            self._session.flush()
        if rollup.pending(self):
            raise RuntimeError("report counters pending after the last write")
        row = _fetch_one(self.driver(), statement, params, commit=True)
        self.committed = True
        self._plans_to_reset = False  # by the write's own RESET_PLANS
        return row

    def get_case(self, case_id: int, *, for_update: bool = False) -> Case:
        """Load a case; on PostgreSQL ``for_update`` locks its row until commit (and plans
        the rest of the transaction generically: :data:`_CASE_LOCKED`)."""
        stmt = _CASE_LOCKED if for_update and self.dialect == "postgresql" else _CASE
        case = self.session.execute(stmt, {"case_id": case_id}).scalar_one_or_none()
        if case is None:
            raise CaseNotFound(f"case {case_id} not found", case_id=case_id)
        return case
