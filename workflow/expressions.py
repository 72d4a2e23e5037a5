"""The declarative condition language of definitions (guards and computed values).

An expression is YAML data, never Python code:

* a literal: ``18``, ``"adult"``, ``true``;
* ``{field: form.x}`` / ``{field: case.x}`` / ``{field: subject.x}`` — a value of the form being
  submitted, of the case's fields, or of the subject (``full_name``, ``date_of_birth``, ``sex``,
  ``unit_code``, ``age``);
* ``{param: name}`` — a definition parameter;
* ``{age_at: form.some_date}`` — the subject's age in whole years on that date;
* ``{date: 2026-07-01}`` — a date literal; ``{today: true}`` — the business date of the command;
* comparisons ``{eq|ne|lt|le|gt|ge: [a, b]}``, ``{in: [a, [x, y]]}``, ``{present: form.x}``;
* logic ``{all: [...]}``, ``{any: [...]}``, ``{not: expr}``.

:func:`check_refs` lists every reference problem at load time; :func:`evaluate` computes a value.
A comparison with a missing operand is false, so a guard on absent data refuses.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
LOGIC = ("all", "any", "not")
VALUES = ("field", "param", "age_at", "date", "today")
OPERATORS = (*COMPARISONS, "in", "present", *LOGIC, *VALUES)


@dataclass(frozen=True)
class Scope:
    """What an expression may name: the fields of the form, case and subject, and parameters."""

    form: frozenset[str]
    case: frozenset[str]
    subject: frozenset[str]
    params: frozenset[str]
    date_fields: frozenset[str] = frozenset()


def _field_ok(path: Any, scope: Scope) -> str | None:
    if not isinstance(path, str) or "." not in path:
        return f"field reference must look like 'form.x', 'case.x' or 'subject.x', got {path!r}"
    ns, name = path.split(".", 1)
    known = {"form": scope.form, "case": scope.case, "subject": scope.subject}.get(ns)
    if known is None:
        return f"unknown namespace {ns!r} in {path!r} (use form, case or subject)"
    if name not in known:
        return f"unknown field {path!r}"
    return None


def check_refs(expr: Any, scope: Scope) -> Iterator[str]:
    """Yield a message for every unknown operator, field or parameter in ``expr``."""
    if isinstance(expr, list):
        for item in expr:
            yield from check_refs(item, scope)
        return
    if not isinstance(expr, Mapping):
        return
    if len(expr) != 1:
        yield f"an expression has exactly one operator, got {sorted(expr)}"
        return
    ((op, arg),) = expr.items()
    if op not in OPERATORS:
        yield f"unknown operator {op!r} (known: {', '.join(OPERATORS)})"
    elif op in ("field", "present"):
        if (msg := _field_ok(arg, scope)) is not None:
            yield msg
    elif op == "age_at":
        if (msg := _field_ok(arg, scope)) is not None:
            yield msg
        elif arg.startswith("form.") and arg[5:] not in scope.date_fields:
            yield f"age_at needs a date field, {arg!r} is not one"
    elif op == "param":
        if arg not in scope.params:
            yield f"unknown parameter {arg!r}"
    elif op in COMPARISONS or op == "in":
        if not isinstance(arg, list) or len(arg) != 2:
            yield f"{op!r} takes a list of two operands"
        else:
            yield from check_refs(arg, scope)
    elif op in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            yield f"{op!r} takes a non-empty list"
        else:
            yield from check_refs(arg, scope)
    elif op == "not":
        yield from check_refs(arg, scope)
    elif op == "date" and not isinstance(arg, date):
        yield f"'date' takes an ISO date, got {arg!r}"


@dataclass(frozen=True)
class Context:
    """Values an expression is evaluated against."""

    form: Mapping[str, Any]
    case: Mapping[str, Any]
    subject: Mapping[str, Any]
    params: Mapping[str, Any]
    today: date


def _lookup(path: str, ctx: Context) -> Any:
    ns, name = path.split(".", 1)
    source = {"form": ctx.form, "case": ctx.case, "subject": ctx.subject}[ns]
    return source.get(name)


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def age_on(born: date, day: date) -> int:
    """Whole years between ``born`` and ``day`` (a birthday counts on the day itself)."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def evaluate(expr: Any, ctx: Context) -> Any:
    """Compute ``expr``; comparisons involving a missing value are False."""
    if isinstance(expr, list):
        return [evaluate(e, ctx) for e in expr]
    if not isinstance(expr, Mapping):
        return expr
    ((op, arg),) = expr.items()
    if op == "field":
        return _lookup(arg, ctx)
    if op == "param":
        return ctx.params[arg]
    if op == "date":
        return arg
    if op == "today":
        return ctx.today
    if op == "age_at":
        born, day = _as_date(ctx.subject.get("date_of_birth")), _as_date(_lookup(arg, ctx))
        return None if born is None or day is None else age_on(born, day)
    if op == "present":
        return _lookup(arg, ctx) not in (None, "", [])
    if op == "all":
        return all(bool(evaluate(e, ctx)) for e in arg)
    if op == "any":
        return any(bool(evaluate(e, ctx)) for e in arg)
    if op == "not":
        return not evaluate(arg, ctx)
    left, right = (evaluate(a, ctx) for a in arg)
    if left is None or right is None:
        return False
    if op == "in":
        return left in right
    if isinstance(left, date) or isinstance(right, date):
        left, right = _as_date(left), _as_date(right)
        if left is None or right is None:
            return False
    try:
        return COMPARISONS[op](left, right)
    except TypeError:
        return False


def references(expr: Any) -> set[str]:
    """Every ``ns.name`` an expression reads (fields, ``age_at`` and ``present`` targets)."""
    if isinstance(expr, list):
        return set().union(*(references(e) for e in expr)) if expr else set()
    if not isinstance(expr, Mapping) or len(expr) != 1:
        return set()
    ((op, arg),) = expr.items()
    if op in ("field", "present", "age_at") and isinstance(arg, str):
        return {arg}
    return references(arg)
