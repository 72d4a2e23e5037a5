"""Form validation generated from a definition's field spec.

One field spec drives both the marshmallow schema the engine validates with and the JSON Schema
(2020-12) the API publishes, so the two cannot drift. Schemas are built once per
(definition version, action, language) and cached.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from workflow import units
from workflow.definition import Action, Definition, FieldSpec

MESSAGES: dict[str, dict[str, str]] = {
    "vi": {
        "required": "Trường này là bắt buộc.",
        "null": "Trường này không được để trống.",
        "invalid": "Giá trị không hợp lệ.",
        "invalid_date": "Ngày không hợp lệ (định dạng YYYY-MM-DD).",
        "invalid_int": "Phải là một số nguyên.",
        "invalid_bool": "Phải là đúng hoặc sai.",
        "range": "Phải trong khoảng {min} đến {max}.",
        "min": "Phải lớn hơn hoặc bằng {min}.",
        "max": "Phải nhỏ hơn hoặc bằng {max}.",
        "length": "Dài tối đa {max} ký tự.",
        "choice": "Phải là một trong: {choices}.",
        "pattern": "Không đúng định dạng.",
        "unit": "Mã đơn vị hành chính không tồn tại.",
        "unknown": "Trường không được khai báo trong biểu mẫu.",
    },
    "en": {
        "required": "This field is required.",
        "null": "This field may not be empty.",
        "invalid": "Invalid value.",
        "invalid_date": "Not a valid date (YYYY-MM-DD).",
        "invalid_int": "Must be an integer.",
        "invalid_bool": "Must be true or false.",
        "range": "Must be between {min} and {max}.",
        "min": "Must be at least {min}.",
        "max": "Must be at most {max}.",
        "length": "At most {max} characters.",
        "choice": "Must be one of: {choices}.",
        "pattern": "Does not match the expected format.",
        "unit": "Unknown administrative unit code.",
        "unknown": "Unknown field.",
    },
}


def bounds(definition: Definition, spec: FieldSpec) -> tuple[int | None, int | None]:
    """The field's min and max with parameters resolved."""
    lo = definition.param(spec.min_param) if spec.min_param else spec.min
    hi = definition.param(spec.max_param) if spec.max_param else spec.max
    return lo, hi


def _field(definition: Definition, spec: FieldSpec, m: dict[str, str]) -> fields.Field:
    validators: list[Any] = []
    common = {
        "required": spec.required,
        "allow_none": not spec.required,
        "error_messages": {"required": m["required"], "null": m["null"]},
    }
    if spec.type == "date":
        common["error_messages"]["invalid"] = m["invalid_date"]
        return fields.Date(**common)
    if spec.type == "boolean":
        common["error_messages"]["invalid"] = m["invalid_bool"]
        return fields.Boolean(**common)
    if spec.type == "integer":
        lo, hi = bounds(definition, spec)
        if lo is not None or hi is not None:
            msg = (
                m["range"]
                if lo is not None and hi is not None
                else m["min" if hi is None else "max"]
            )
            validators.append(validate.Range(min=lo, max=hi, error=msg))
        common["error_messages"]["invalid"] = m["invalid_int"]
        return fields.Integer(strict=True, validate=validators, **common)
    if spec.type == "enum":
        choices = [c.value for c in spec.choices]
        validators.append(validate.OneOf(choices, error=m["choice"]))
    if spec.type == "unit":
        validators.append(lambda v: units.get(v) is not None or _raise(m["unit"]))
    if spec.max_length:
        validators.append(validate.Length(max=spec.max_length, error=m["length"]))
    if spec.pattern:
        validators.append(validate.Regexp(spec.pattern, error=m["pattern"]))
    common["error_messages"]["invalid"] = m["invalid"]
    return fields.String(validate=validators, **common)


def _raise(message: str) -> bool:
    raise ValidationError(message)


@lru_cache(maxsize=1024)
def form_schema(definition: Definition, action_key: str, lang: str = "vi") -> Schema:
    """The marshmallow schema of a transition's or activity's form (cached)."""
    action = definition.transitions.get(action_key) or definition.activities[action_key]
    m = MESSAGES.get(lang, MESSAGES["vi"])
    attrs = {spec.name: _field(definition, spec, m) for spec in action.fields}
    cls = Schema.from_dict(attrs, name=f"{definition.key}_v{definition.version}_{action_key}")
    return cls(unknown=RAISE)


def validate_form(
    definition: Definition, action: Action, data: dict[str, Any], lang: str = "vi"
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Load ``data``; returns (clean values, errors by field). Strings are stripped."""
    if not isinstance(data, dict):
        return {}, {"_schema": [MESSAGES.get(lang, MESSAGES["vi"])["invalid"]]}
    cleaned = {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
    cleaned = {k: (None if v == "" else v) for k, v in cleaned.items()}
    try:
        return form_schema(definition, action.key, lang).load(cleaned), {}
    except ValidationError as exc:
        errors = exc.normalized_messages()
        unknown = MESSAGES.get(lang, MESSAGES["vi"])["unknown"]
        out: dict[str, list[str]] = {}
        for name, msgs in errors.items():
            msgs = msgs if isinstance(msgs, list) else [str(msgs)]
            out[name] = [unknown if msg == "Unknown field." else msg for msg in msgs]
        return {}, out


def json_schema(definition: Definition, action: Action, lang: str = "vi") -> dict[str, Any]:
    """JSON Schema (2020-12) of the same form, for the API and web forms."""
    props: dict[str, Any] = {}
    for spec in action.fields:
        prop: dict[str, Any] = {"title": spec.label.get(lang)}
        if spec.type == "date":
            prop.update(type="string", format="date")
        elif spec.type == "integer":
            prop["type"] = "integer"
            lo, hi = bounds(definition, spec)
            if lo is not None:
                prop["minimum"] = lo
            if hi is not None:
                prop["maximum"] = hi
        elif spec.type == "boolean":
            prop["type"] = "boolean"
        elif spec.type == "enum":
            prop.update(type="string", enum=[c.value for c in spec.choices])
            prop["x-labels"] = {c.value: c.label.get(lang) for c in spec.choices}
        else:
            prop["type"] = "string"
            if spec.required:
                # the engine strips text and reads "" as missing: not blank
                prop["minLength"] = 1
                prop["allOf"] = [{"pattern": r"\S"}]
            if spec.max_length:
                prop["maxLength"] = spec.max_length
            if spec.pattern:
                prop["pattern"] = spec.pattern
            if spec.type == "unit":
                prop["x-unit"] = True
        if not spec.required:
            prop = {"anyOf": [prop, {"type": "null"}], "title": prop["title"]}
        props[spec.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": action.label.get(lang),
        "type": "object",
        "properties": props,
        "required": [s.name for s in action.fields if s.required],
        "additionalProperties": False,
    }
