"""The unit of work: one database transaction that owns a command's every write.

State change, audit event, outbox messages and deadlines are written in the same transaction;
leaving the block without :meth:`UnitOfWork.commit` rolls everything back.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, sessionmaker

from workflow import rollup
from workflow.db import read_only_transaction
from workflow.errors import CaseNotFound
from workflow.model import Case

# built once: constructing the select per call showed in the profile of a command
_CASE = select(Case).where(Case.id == bindparam("case_id"))
# PostgreSQL: a command's first statement locks its case row and, for the rest of its
# transaction only, has PostgreSQL plan its prepared statements generically. A command's
# statements have the same shape every time (rows by key, ids, JSON arrays), so re-planning
# them for each call's values (the custom plans PostgreSQL otherwise keeps choosing for the
# command's write) buys nothing: with it, `bench.run --only engine` at 4 clients did 2-33 %
# more advances per second in 5 of 5 alternated pairs. Reports and lists keep the default
# (their values are skewed).
_CASE_LOCKED = _CASE.with_for_update(of=Case).add_columns(
    func.set_config("plan_cache_mode", "force_generic_plan", True)
)


_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


class UnitOfWork:
    """``autocommit``: on PostgreSQL, each statement is its own transaction (no ``BEGIN`` and
    ``COMMIT`` round trips); for a unit of work whose reads are one statement and whose one
    write is independent of them (the case page and its access-log row). Ignored on SQLite."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        read_only: bool = False,
        autocommit: bool = False,
    ) -> None:
        self._factory = session_factory
        self.read_only = read_only
        self.autocommit = autocommit

    def __enter__(self) -> UnitOfWork:
        self._token = read_only_transaction.set(self.read_only)
        self.session = self._factory()
        self.dialect = self.session.get_bind().dialect.name
        if self.autocommit and self.dialect == "postgresql":
            # before any statement: the connection's isolation level for this unit only
            self.session.connection(execution_options=_AUTOCOMMIT)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            # close() rolls back anything not committed and detaches objects without expiring
            # them, so results read in the unit of work stay usable after it.
            self.session.close()
        finally:
            read_only_transaction.reset(self._token)

    def commit(self) -> None:
        """Write the report counters the transaction collected (``workflow.rollup``), then
        commit."""
        rollup.write_pending(self.session)
        self.session.commit()

    def get_case(self, case_id: int, *, for_update: bool = False) -> Case:
        """Load a case; on PostgreSQL ``for_update`` locks its row until commit (and plans
        the rest of the transaction generically: :data:`_CASE_LOCKED`)."""
        stmt = _CASE_LOCKED if for_update and self.dialect == "postgresql" else _CASE
        case = self.session.execute(stmt, {"case_id": case_id}).scalar_one_or_none()
        if case is None:
            raise CaseNotFound(f"case {case_id} not found", case_id=case_id)
        return case
