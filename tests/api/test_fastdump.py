"""api/fastdump.py: the compiled dumps give what ``Schema.dump`` gives, for every response
schema the API registers, on generated objects (dicts and plain objects, keys missing, None
values, nested lists); schemas it cannot reproduce keep ``Schema.dump``."""

from __future__ import annotations

import datetime as dt
import tempfile
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields, post_dump

from api.fastdump import compile_dump

MISSING = object()
TZ = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=7))])


def _value(f: fields.Field, depth: int) -> st.SearchStrategy[Any]:
    """Values a field may be given to dump (None always among them)."""
    if isinstance(f, fields.Nested):
        one = _object(f.schema, depth + 1) if depth < 3 else st.just({})
        many = f.many or f.schema.many
        inner = st.lists(one, max_size=3) if many else one
    elif isinstance(f, fields.List):
        inner = st.lists(_value(f.inner, depth), max_size=3)
    elif isinstance(f, fields.Mapping):
        inner = st.dictionaries(
            st.text(max_size=5), st.none() | st.integers() | st.text(max_size=5), max_size=3
        )
    elif isinstance(f, fields.DateTime):
        inner = st.datetimes(timezones=TZ) | st.datetimes()
    elif isinstance(f, fields.Date):
        inner = st.dates()
    elif isinstance(f, fields.Boolean):
        inner = st.booleans()
    elif isinstance(f, fields.Integer):
        inner = st.integers(-(2**40), 2**40) | st.booleans()
    elif isinstance(f, fields.String):
        inner = (
            st.text(max_size=8)
            | st.integers()
            | st.binary(max_size=4).map(lambda b: b.hex().encode())
        )
    else:
        inner = st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers())
    return st.none() | inner


def _object(schema: Schema, depth: int = 0) -> st.SearchStrategy[Any]:
    """A dict or a plain object with some of the schema's attributes (others missing)."""
    attrs = {f.attribute or name: _value(f, depth) for name, f in schema.dump_fields.items()}
    shape = st.fixed_dictionaries(
        {}, optional={a: s | st.just(MISSING) for a, s in attrs.items()}
    ).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})
    return shape | shape.map(lambda d: SimpleNamespace(**d))


def _response_schemas() -> list[Schema]:
    """Every response schema instance the API's views dump with (``@blp.response``; an
    ``alt_response`` only documents what its view dumps itself)."""
    from api.app import create_app

    with tempfile.TemporaryDirectory(prefix="rf-fastdump-") as tmp:
        env = {"DATABASE_URL": "sqlite://", "REHABFLOW_DATA_DIR": tmp}
        app = create_app({"TESTING": True, "INIT_DB": False, "REHABFLOW_ENV": env})
    found: dict[int, Schema] = {}
    for view in app.view_functions.values():
        apidoc = getattr(view, "_apidoc", {})
        responses = apidoc.get("response", {}).get("responses", {})
        for status in apidoc.get("success_status_codes", []):  # not alt_response's (docs)
            for doc in responses.get(status, []):
                schema = doc.get("schema")
                if isinstance(schema, Schema):
                    found[id(schema)] = schema
    return list(found.values())


SCHEMAS = _response_schemas()


def test_the_api_registers_its_response_schemas_compiled() -> None:
    names = {type(s).__name__ for s in SCHEMAS}
    assert {"CaseOut", "CasePageOut", "CommandOut", "AuditEventOut"} <= names
    plain = [type(s).__name__ for s in SCHEMAS if "dump" not in vars(s)]
    assert plain == [], f"response schemas left to Schema.dump: {plain}"


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: type(s).__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_dump_equals_schema_dump(schema: Schema, data: st.DataObject) -> None:
    fresh = type(schema)(many=schema.many)  # an instance with marshmallow's own dump
    fast = compile_dump(fresh)
    assert fast is not None
    obj = data.draw(st.lists(_object(fresh), max_size=3) if fresh.many else _object(fresh))
    expected = _outcome(fresh.dump, obj)
    assert _outcome(fast, obj) == expected


def _outcome(dump: Any, obj: Any) -> Any:
    """What a dump returns, or the type of what it raises (both must raise alike)."""
    try:
        return dump(obj)
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return type(exc)


def test_a_case_shaped_object_dumps_alike_with_many_and_nested() -> None:
    from api.schemas import CaseOut

    case = {
        "id": 7,
        "number": "17662-2026-000007",
        "state": "detected",
        "fields_": {"a": [1, 2]},
        "opened_at": dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC),
        "subject": None,
        "deadlines": [
            {"id": 1, "key": "k", "due_on": dt.date(2026, 12, 1), "overdue": False},
        ],
        "documents": [],
        "available_transitions": [],
    }
    schema = CaseOut()
    fast = compile_dump(schema)
    assert fast is not None
    assert fast(case) == schema.dump(case)
    assert fast([case, case], many=True) == schema.dump([case, case], many=True)
    assert fast(None) == schema.dump(None) == {}


class _Hooked(Schema):
    a = fields.Integer()

    @post_dump
    def _add(self, data: dict, **_: Any) -> dict:
        return data | {"b": 1}


class _WithMethod(Schema):
    a = fields.Method("_a")

    def _a(self, obj: Any) -> int:
        return 1


class _WithFormat(Schema):
    at = fields.DateTime(format="%d/%m/%Y")


class _WithDefault(Schema):
    a = fields.Integer(dump_default=3)


@pytest.mark.parametrize("cls", [_Hooked, _WithMethod, _WithFormat, _WithDefault])
def test_what_it_cannot_reproduce_keeps_schema_dump(cls: type[Schema]) -> None:
    assert compile_dump(cls()) is None
