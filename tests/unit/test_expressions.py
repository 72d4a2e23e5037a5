from __future__ import annotations

from datetime import date

import pytest

from workflow.expressions import Context, Scope, age_on, check_refs, evaluate, references

SCOPE = Scope(
    form=frozenset({"d", "n"}),
    case=frozenset({"flag"}),
    subject=frozenset({"date_of_birth", "age"}),
    params=frozenset({"adult"}),
    date_fields=frozenset({"d"}),
)


def ctx(**form) -> Context:  # noqa: ANN003
    return Context(
        form, {"flag": True}, {"date_of_birth": date(2010, 9, 1)}, {"adult": 18}, date(2026, 11, 26)
    )


def test_age_counts_whole_years_and_birthday_itself() -> None:
    assert age_on(date(2010, 9, 1), date(2026, 8, 31)) == 15
    assert age_on(date(2010, 9, 1), date(2026, 9, 1)) == 16


def test_age_at_form_date_against_parameter() -> None:
    adult = {"ge": [{"age_at": "form.d"}, {"param": "adult"}]}
    assert evaluate(adult, ctx(d=date(2028, 9, 1))) is True
    assert evaluate(adult, ctx(d=date(2028, 8, 31))) is False


def test_missing_operand_makes_comparison_false() -> None:
    assert evaluate({"gt": [{"field": "form.n"}, 3]}, ctx()) is False
    assert evaluate({"not": {"gt": [{"field": "form.n"}, 3]}}, ctx()) is True


def test_logic_and_membership() -> None:
    expr = {"all": [{"field": "case.flag"}, {"in": [{"field": "form.n"}, [1, 2]]}]}
    assert evaluate(expr, ctx(n=2)) is True
    assert evaluate(expr, ctx(n=3)) is False
    assert evaluate({"any": [False, {"present": "form.n"}]}, ctx(n=0)) is True


def test_dates_compare_with_iso_strings() -> None:
    expr = {"lt": [{"field": "form.d"}, {"date": date(2026, 7, 1)}]}
    assert evaluate(expr, ctx(d="2026-06-30")) is True
    assert evaluate(expr, ctx(d="2026-07-01")) is False


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ({"gte": [1, 2]}, "unknown operator 'gte'"),
        ({"field": "form.x"}, "unknown field 'form.x'"),
        ({"field": "person.x"}, "unknown namespace 'person'"),
        ({"param": "child"}, "unknown parameter 'child'"),
        ({"age_at": "form.n"}, "age_at needs a date field"),
        ({"eq": [1]}, "'eq' takes a list of two operands"),
        ({"all": []}, "'all' takes a non-empty list"),
        ({"eq": [1, 2], "ne": [1, 2]}, "exactly one operator"),
    ],
)
def test_check_refs_reports(expr: dict, message: str) -> None:
    problems = list(check_refs(expr, SCOPE))
    assert problems and message in problems[0]


def test_references_lists_what_is_read() -> None:
    expr = {"all": [{"ge": [{"age_at": "form.d"}, 18]}, {"present": "case.flag"}]}
    assert references(expr) == {"form.d", "case.flag"}
