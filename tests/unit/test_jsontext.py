"""``workflow.jsontext``: the JSON text of statements' parameters."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from workflow import jsontext


def test_rows_read_back_as_the_standard_library_writes_them() -> None:
    """The same values as the standard library's text (compact, UTF-8 kept), dates and
    datetimes as their ``isoformat()``, with or without microseconds and in any offset."""
    hanoi = timezone(timedelta(hours=7))
    rows = [
        {
            "key": "xác_định_nghiện",
            "due_on": date(2026, 2, 17),
            "at": datetime(2026, 11, 27, 19, 20, 29, 123456, tzinfo=UTC),
            "whole": datetime(2026, 1, 1, 0, 0, tzinfo=hanoi),
            "n": -1,
            "late": False,
            "nothing": None,
            "types": ["commune_police", "health_station"],
        }
    ]
    text = jsontext.dumps(rows)
    expected = json.dumps(rows, default=lambda v: v.isoformat(), ensure_ascii=False)
    assert json.loads(text) == json.loads(expected)
    assert "xác_định_nghiện" in text and " " not in text


def test_a_value_without_a_json_form_is_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        jsontext.dumps({"blob": object()})


def test_keys_that_are_not_strings_become_strings_and_bytes_are_the_same_text() -> None:
    """As the standard library does (a dict keyed by ids stays writable); the bytes psycopg
    sends for a JSON column are the text's UTF-8."""
    value = {1: "một", "2": [date(2026, 9, 2)]}
    assert json.loads(jsontext.dumps(value)) == {"1": "một", "2": ["2026-09-02"]}
    assert jsontext.dumps_bytes(value) == jsontext.dumps(value).encode()
    assert jsontext.loads(jsontext.dumps_bytes(value)) == json.loads(jsontext.dumps(value))
