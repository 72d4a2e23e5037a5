"""Response schemas' ``dump``, compiled once into plain functions.

flask-smorest serialises every response with ``Schema.dump``, which walks the fields through
several generic calls per value (``serialize``, ``get_value``, the accessor, ``_serialize``):
for a case read that was about 90 µs of the 1 ms of CPU the request costs a worker.
:func:`compile_dump` builds, from a bound schema instance, one function per schema that does
what ``dump`` does for the fields the API's responses use — ``String``, ``Integer``,
``Boolean``, ``Raw``, ``Date`` and ``DateTime`` in ISO format, ``Dict`` (with or without
key/value fields), ``List`` and ``Nested`` — and returns ``None`` for a schema it cannot
reproduce exactly (dump hooks, a custom ``get_attribute``, any other kind of field or
format), which then keeps ``Schema.dump``. The schema stays the one description of the
response (validation of the OpenAPI document, the docs); tests/api/test_fastdump.py checks
that both give the same output for every response schema of the API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from marshmallow.utils import get_value, missing

Convert = Callable[[Any], Any]  # a field's value -> its serialised form
Dump = Callable[..., Any]  # obj, many=None -> what Schema.dump returns

_ISO = {None, "iso", "iso8601"}


class NotCompilable(Exception):
    """A schema or field this module does not reproduce (``Schema.dump`` is kept)."""


def compile_dump(schema: Schema) -> Dump | None:
    """The schema's ``dump`` as one plain function, or None where it would not be exact."""
    try:
        return _schema_dump(schema)
    except NotCompilable:
        return None


def _same(cls: type, base: type, name: str) -> bool:
    """``cls`` does not override ``base``'s method ``name``."""
    return getattr(cls, name) is getattr(base, name)


def _schema_dump(schema: Schema) -> Dump:
    cls = type(schema)
    if schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP]:
        raise NotCompilable(f"{cls.__name__}: dump hooks")
    for name in ("dump", "_serialize", "get_attribute"):
        if not _same(cls, Schema, name):
            raise NotCompilable(f"{cls.__name__}.{name} is overridden")
    if schema.dict_class is not dict:
        raise NotCompilable(f"{cls.__name__}: dict_class")
    plan = [
        (
            f.data_key if f.data_key is not None else name,
            attr := f.attribute or name,
            "." not in attr,  # a dotted attribute is a path: marshmallow's lookup only
            _convert(f),
        )
        for name, f in schema.dump_fields.items()
    ]
    default_many = schema.many

    def one(obj: Any) -> dict[str, Any]:
        out = {}
        is_dict = type(obj) is dict
        for key, attr, plain, convert in plan:
            if is_dict and plain and attr in obj:
                value = obj[attr]
            else:  # marshmallow's own lookup: item, then attribute, then missing
                value = get_value(obj, attr, missing)
                if value is missing:
                    continue
            out[key] = value if convert is None or value is None else convert(value)
        return out

    def dump(obj: Any, *, many: bool | None = None) -> Any:
        if (default_many if many is None else many) and obj is not None:
            return [one(x) for x in obj]
        return one(obj)  # (None, even with many, dumps as {}: as Schema.dump does)

    return dump


def _convert(f: fields.Field) -> Convert | None:
    """The field's ``_serialize`` of a present, non-None value (None: the value as it is)."""
    cls = type(f)
    for name in ("serialize", "get_value"):
        if not _same(cls, fields.Field, name):
            raise NotCompilable(f"{cls.__name__}.{name} is overridden")
    if callable(f.dump_default) or f.dump_default is not missing:
        raise NotCompilable(f"{f.name}: dump_default")
    if _same(cls, fields.Field, "_serialize"):  # Raw, Boolean: the value itself
        return None
    if _same(cls, fields.String, "_serialize"):
        return _string
    if isinstance(f, fields.Integer) and all(
        _same(cls, fields.Integer, m) for m in ("_serialize", "_format_num", "_to_string")
    ):
        return (lambda v: str(int(v))) if f.as_string else int
    if isinstance(f, fields.DateTime) and _same(cls, fields.DateTime, "_serialize"):
        if type(f) is not fields.DateTime or f.format not in _ISO:
            raise NotCompilable(f"{f.name}: datetime format {f.format!r}")
        return dt.datetime.isoformat
    if isinstance(f, fields.Date) and _same(cls, fields.Date, "_serialize"):
        if f.format not in _ISO:
            raise NotCompilable(f"{f.name}: date format {f.format!r}")
        return dt.date.isoformat
    if isinstance(f, fields.Mapping) and _same(cls, fields.Mapping, "_serialize"):
        return _mapping(f)
    if isinstance(f, fields.List) and _same(cls, fields.List, "_serialize"):
        inner = _convert(f.inner)
        if inner is None:
            return list
        return lambda v: [None if x is None else inner(x) for x in v]
    if isinstance(f, fields.Nested) and _same(cls, fields.Nested, "_serialize"):
        nested = f.schema
        dump = _schema_dump(nested)
        many = nested.many or f.many
        return lambda v: dump(v, many=many)
    raise NotCompilable(f"{f.name}: {cls.__name__}")


def _string(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _mapping(f: fields.Mapping) -> Convert:
    mapping_type = f.mapping_type
    if f.key_field is None and f.value_field is None:
        return mapping_type
    key = _convert(f.key_field) if f.key_field is not None else None
    value = _convert(f.value_field) if f.value_field is not None else None

    def convert(v: Any) -> Any:
        out = mapping_type()
        for k, x in v.items():
            out[k if key is None or k is None else key(k)] = (
                x if value is None or x is None else value(x)
            )
        return out

    return convert
