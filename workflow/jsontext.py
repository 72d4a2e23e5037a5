"""JSON text for the parameters of statements: the rows a statement unpacks with
``jsonb_populate_recordset`` (deadlines, outbox messages, report counters), an activity's
data, a command's stored response.

Written with orjson: the standard library's encoder took 12–36 µs for each of the four
arrays of rows an advance sends, orjson about a tenth of that (bench/README.md, (20)).
Dates and datetimes come out as ISO 8601 (``isoformat()``'s text for the aware datetimes
and dates the engine holds), which PostgreSQL reads back into ``date`` and ``timestamptz``.

On PostgreSQL the engine's JSON columns are written and read with it too
(``db.make_engine``), and so are the JSON values of the statements sent past SQLAlchemy.
Never for what is hashed: the audit chain's bytes are ``audit.canonical``'s (the standard
library's, sorted keys, no spaces), which every event already stored was hashed with.
"""

from __future__ import annotations

from typing import Any

import orjson


def _other(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


# keys that are not strings become strings, as the standard library's encoder makes them
_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (UTF-8 kept; dates and datetimes in ISO 8601)."""
    return orjson.dumps(value, default=_other, option=_OPTIONS).decode()


def dumps_bytes(value: Any) -> bytes:
    """As :func:`dumps`, encoded (what psycopg sends): the JSON columns' serializer on
    PostgreSQL (``db.make_engine``)."""
    return orjson.dumps(value, default=_other, option=_OPTIONS)


loads = orjson.loads  # text or bytes to values: the JSON columns' deserializer on PostgreSQL
