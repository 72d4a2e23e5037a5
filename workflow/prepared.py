"""PostgreSQL: a statement run through libpq's own prepared-statement calls (``psycopg.pq``).

For the hot statements a unit of work sends past SQLAlchemy on a connection in autocommit (an
optimistic command's read and write, the case page, an API token's check). A psycopg cursor's
``execute`` drives libpq without blocking, a generator stepping it through send, flush, wait
and read in Python, and keeps its own cache of prepared statements: about 35 µs of the
client's CPU per statement more than one blocking ``PQexecPrepared`` call (measured:
bench/README.md, (21)). The parameters are dumped and the row loaded by a psycopg
``Transformer`` of the connection, so values go and come exactly as through a cursor (the
dialect's JSON dumpers and loaders included), and libpq releases the GIL while it waits.

Each statement is prepared once per connection and parameter types (as psycopg's cursor keys
them), under a name psycopg never uses. A statement the server forgot (``DEALLOCATE``,
``DISCARD ALL``) is prepared again. A failed statement raises the ``psycopg.Error`` a
cursor would have raised (its SQLSTATE's class, the server's message and diagnostics); the
connection is in autocommit, so the failure ended its own transaction and nothing is left to
roll back. No transaction is begun here: a connection out of autocommit goes through a cursor
(``uow._fetch_one``), which begins one as psycopg does.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

# the connection's attribute holding its state here (kept on the connection, so it goes when
# the connection goes)
_STATE_ATTRIBUTE = "_rehabflow_prepared"
# prepared statements kept per connection, the oldest deallocated beyond it (a few hot
# statements, each with a few combinations of parameter types, are all there is to keep)
MAX_PREPARED = 64
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_TEXT = pq.Format.TEXT  # rows as a cursor reads them by default


class Numbered(NamedTuple):
    """A statement with ``%(name)s`` placeholders (``pyformat``, as SQLAlchemy's psycopg
    dialect compiles) rewritten with PostgreSQL's ``$n``; a name used twice is one ``$n``."""

    sql: bytes
    names: tuple[str, ...]  # the parameter of $1, $2…
    formats: tuple[PyFormat, ...]


@lru_cache(maxsize=64)
def numbered(sql: str) -> Numbered:
    """``sql`` with ``$n`` placeholders (``%%`` is a literal ``%`` there, as for psycopg)."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        return f"${names.setdefault(name, len(names) + 1)}"

    text = _PLACEHOLDER.sub(number, sql)
    return Numbered(text.encode(), tuple(names), (PyFormat.AUTO,) * len(names))


class _State:
    """A connection's transformer and the names of its statements prepared here."""

    __slots__ = ("transformer", "names", "made")

    def __init__(self, raw: psycopg.Connection) -> None:
        self.transformer = Transformer(raw)
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.made = 0  # statements prepared here: the next one's number (never reused)


def _state(raw: psycopg.Connection) -> _State:
    state = getattr(raw, _STATE_ATTRIBUTE, None)
    if state is None:
        state = _State(raw)
        setattr(raw, _STATE_ATTRIBUTE, state)
    return state


def fetch(raw: psycopg.Connection, sql: str, values: dict[str, Any], *, first: bool) -> Any:
    """Run ``sql`` (``pyformat`` placeholders) with ``values`` on ``raw``, a connection in
    autocommit; with ``first``, its first row as a tuple (None when there is none), else all
    its rows as tuples."""
    statement = numbered(sql)
    state = _state(raw)
    tx = state.transformer
    with raw.lock:
        params = tx.dump_sequence([values[name] for name in statement.names], statement.formats)
        result = _execute(raw, state, statement.sql, tx.types, params, tx.formats)
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise _error(raw, result)
        n = result.ntuples
        if first and n == 0:
            return None
        tx.set_pgresult(result)
        if first:
            return tx.load_row(0, tuple)
        return tx.load_rows(0, n, tuple)


def _execute(
    raw: psycopg.Connection,
    state: _State,
    sql: bytes,
    types: tuple[int, ...],
    params: list[Any],
    formats: list[pq.Format],
) -> pq.abc.PGresult:
    pgconn = raw.pgconn
    key = (sql, types)
    name = state.names.get(key)
    if name is not None:
        result = pgconn.exec_prepared(name, params, formats, _TEXT)
        if result.status != pq.ExecStatus.FATAL_ERROR or not _forgotten(result):
            return result
        # the server dropped it (DEALLOCATE, or DEALLOCATE ALL / DISCARD ALL: then each of
        # the others is found dropped at its next use, as this one was)
        del state.names[key]
    name = _prepare(raw, state, key)
    return pgconn.exec_prepared(name, params, formats, _TEXT)


def _forgotten(result: pq.abc.PGresult) -> bool:
    """Whether ``result`` says the prepared statement does not exist (SQLSTATE 26000)."""
    return (
        result.status == pq.ExecStatus.FATAL_ERROR
        and result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"
    )  # (invalid_sql_statement_name)


def _prepare(raw: psycopg.Connection, state: _State, key: tuple[bytes, tuple[int, ...]]) -> bytes:
    pgconn = raw.pgconn
    if len(state.names) >= MAX_PREPARED:
        oldest = next(iter(state.names))
        result = pgconn.exec_(b"DEALLOCATE " + state.names.pop(oldest))
        if result.status != pq.ExecStatus.COMMAND_OK and not _forgotten(result):
            raise _error(raw, result)
    state.made += 1
    name = b"_rf_%d" % state.made
    result = pgconn.prepare(name, key[0], key[1])
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise _error(raw, result)
    state.names[key] = name
    return name


def _error(raw: psycopg.Connection, result: pq.abc.PGresult) -> psycopg.Error:
    """The error a cursor raises for ``result``: the class of its SQLSTATE (a connection lost
    meanwhile: ``OperationalError``)."""
    if result.status == pq.ExecStatus.FATAL_ERROR:
        try:
            encoding = raw.info.encoding
        except psycopg.Error:  # the connection is gone: its last setting cannot be read
            encoding = "utf-8"
        if raw.closed:
            return psycopg.OperationalError(result.get_error_message(encoding))
        return errors.error_from_result(result, encoding=encoding)
    return psycopg.InterfaceError(f"unexpected result {pq.ExecStatus(result.status).name}")
