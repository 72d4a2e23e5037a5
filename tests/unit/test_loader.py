"""The definition validator: one test per kind of error, asserting the message and the line."""

from __future__ import annotations

import textwrap

import pytest

from workflow.errors import DefinitionError
from workflow.loader import load_file, parse_text

BASE = textwrap.dedent("""\
    key: mini
    version: 1
    title: {vi: Thử, en: Test}
    effective_from: 2022-01-01
    legal_basis: ["L 73/2021"]
    parameters:
      term_months: {value: 12, cite: "L Art 23"}
      unsure_days: {value: 5, verified: false, note: "no source"}
    document_types:
      - {code: decision, label: {vi: Quyết định, en: Decision}, media_types: [application/pdf]}
    agency_types:
      - {code: police, label: {vi: Công an, en: Police}, level: commune}
    roles:
      - {code: officer, label: {vi: Cán bộ, en: Officer}}
    groups:
      - {code: other, label: {vi: Khác, en: Other}}
    case_fields:
      - {name: flag, type: boolean, label: {vi: Cờ, en: Flag}}
    states:
      - {key: start, label: {vi: Bắt đầu, en: Start}, kind: initial, group: other}
      - {key: middle, label: {vi: Giữa, en: Middle}, kind: active, group: other}
      - {key: done, label: {vi: Xong, en: Done}, kind: terminal, group: other}
    transitions:
      - key: go
        label: {vi: Đi, en: Go}
        from: start
        to: middle
        allowed: [{agency: police, roles: [officer]}]
        documents: [decision]
        fields:
          - {name: decided_on, type: date, required: true, label: {vi: Ngày, en: Date}}
        guards:
          - key: adult
            message: {vi: Đủ 18 tuổi, en: Adult}
            test: {ge: [{age_at: form.decided_on}, 18]}
        effects:
          start_deadlines: [term]
      - key: finish
        label: {vi: Kết thúc, en: Finish}
        from: [middle]
        to: done
        allowed: [{agency: system}]
        automatic: true
    deadlines:
      - key: term
        label: {vi: Thời hạn, en: Term}
        duration: {months: {param: term_months}}
        anchor: form.decided_on
        met_by: [finish]
        on_due: finish
    """)


def problems_of(text: str) -> list[str]:
    definition, problems = parse_text(text, "mini.yaml")
    assert (definition is None) == bool(problems)
    return [str(p) for p in problems]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[occurrence - 1]


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_base_is_valid() -> None:
    definition, problems = parse_text(BASE, "mini.yaml")
    assert problems == []
    assert definition.initial_state.key == "start"
    assert definition.transitions["go"].documents[0].any_of == ("decision",)
    assert definition.deadlines["term"].on_due == "finish"
    assert definition.deadlines_met_by("finish") == ("term",)


def test_unknown_state() -> None:
    text = edit("    to: middle\n", "    to: nowhere\n")
    msgs = problems_of(text)
    assert (
        f"mini.yaml:{line_of(text, 'to: nowhere')}: transitions.go.to: unknown state 'nowhere'"
        in msgs
    )


def test_unknown_document() -> None:
    text = edit("documents: [decision]", "documents: [decision, passport]")
    assert (
        f"mini.yaml:{line_of(text, 'documents: [decision, passport]')}: transitions.go.documents:"
        " unknown document type 'passport'"
    ) in problems_of(text)


def test_unknown_agency_and_role() -> None:
    text = edit(
        "allowed: [{agency: police, roles: [officer]}]",
        "allowed: [{agency: army, roles: [general]}]",
    )
    msgs = problems_of(text)
    line = line_of(text, "agency: army")
    assert f"mini.yaml:{line}: transitions.go.allowed[0].agency: unknown agency type 'army'" in msgs
    assert f"mini.yaml:{line}: transitions.go.allowed[0].roles: unknown role 'general'" in msgs


def test_unknown_deadline() -> None:
    text = edit("start_deadlines: [term]", "start_deadlines: [term, appeal]")
    assert (
        f"mini.yaml:{line_of(text, 'start_deadlines')}: transitions.go.effects.start_deadlines:"
        " unknown deadline 'appeal'"
    ) in problems_of(text)


def test_unreachable_state() -> None:
    text = edit(
        "  - {key: done,",
        "  - {key: orphan, label: Mồ côi, kind: active, group: other}\n  - {key: done,",
    )
    msgs = problems_of(text)
    line = line_of(text, "key: orphan")
    prefix = f"mini.yaml:{line}: states.orphan: "
    assert prefix + "state 'orphan' is unreachable from the initial state 'start'" in msgs
    assert prefix + "active state 'orphan' has no way out (no transition leaves it)" in msgs


def test_active_state_without_exit() -> None:
    text = edit("    from: [middle]\n", "    from: [start]\n")
    msgs = problems_of(text)
    assert (
        f"mini.yaml:{line_of(text, 'key: middle')}: states.middle: active state 'middle' has no"
        " way out (no transition leaves it)"
    ) in msgs


def test_terminal_state_with_exit() -> None:
    text = edit("    from: [middle]\n", "    from: [middle, done]\n")
    assert (
        f"mini.yaml:{line_of(text, 'from: [middle, done]')}: transitions.finish.from: terminal"
        " state 'done' must have no exits"
    ) in problems_of(text)


def test_duplicate_keys() -> None:
    text = edit("  - key: finish\n", "  - key: go\n")
    msgs = problems_of(text)
    first = line_of(text, "- key: go")
    second = line_of(text, "- key: go", 2)
    assert (
        f"mini.yaml:{second}: transitions.go: duplicate key 'go' (first on line {first})"
    ) in msgs


def test_duplicate_yaml_mapping_key() -> None:
    text = edit("version: 1\n", "version: 1\nversion: 2\n")
    assert (
        f"mini.yaml:{line_of(text, 'version: 2')}: version: duplicate key (the later value"
        " would silently win)"
    ) in problems_of(text)


def test_duplicate_nested_mapping_key() -> None:
    text = edit("  unsure_days:", "  term_months: {value: 6, cite: x}\n  unsure_days:")
    assert (
        f"mini.yaml:{line_of(text, 'term_months: {value: 6')}: term_months: duplicate key"
        " (the later value would silently win)"
    ) in problems_of(text)


def test_list_items_must_be_mappings() -> None:
    text = edit("allowed: [{agency: police, roles: [officer]}]", "allowed: [police]")
    assert (
        f"mini.yaml:{line_of(text, 'allowed: [police]')}: transitions.go.allowed[0]: must be a"
        " mapping, got str"
    ) in problems_of(text)
    text = edit("documents: [decision]", "documents: [42]")
    assert (
        f"mini.yaml:{line_of(text, 'documents: [42]')}: transitions.go.documents[0]: must be a"
        " document code or {one_of: [codes]}"
    ) in problems_of(text)


def test_automatic_transition_is_for_the_system_only() -> None:
    text = edit("allowed: [{agency: system}]", "allowed: [{agency: police, roles: [officer]}]")
    line = line_of(text, "allowed: [{agency: police", 2)
    assert (
        f"mini.yaml:{line}: transitions.finish.allowed: an automatic transition is fired by"
        " the system only: allowed: [{agency: system}]"
    ) in problems_of(text)


def test_bad_duration_unit() -> None:
    text = edit("duration: {months: {param: term_months}}", "duration: {weeks: 2}")
    assert (
        f"mini.yaml:{line_of(text, 'weeks')}: deadlines.term.duration: a duration has exactly one"
        " unit of working_days, days, months, got ['weeks']"
    ) in problems_of(text)


def test_negative_duration() -> None:
    text = edit("duration: {months: {param: term_months}}", "duration: {days: -3}")
    assert (
        f"mini.yaml:{line_of(text, 'days: -3')}: deadlines.term.duration.days: must not be"
        " negative, got -3"
    ) in problems_of(text)


def test_unknown_parameter() -> None:
    text = edit("{param: term_months}", "{param: term_years}")
    assert (
        f"mini.yaml:{line_of(text, 'term_years')}: deadlines.term.duration.months: unknown"
        " parameter 'term_years'"
    ) in problems_of(text)


def test_guard_naming_unknown_field() -> None:
    text = edit("{age_at: form.decided_on}", "{age_at: form.born_on}")
    assert (
        f"mini.yaml:{line_of(text, 'form.born_on')}: transitions.go.guards.adult: unknown field"
        " 'form.born_on'"
    ) in problems_of(text)


def test_guard_unknown_operator() -> None:
    text = edit("test: {ge: [", "test: {gte: [")
    msg = problems_of(text)[0]
    assert msg.startswith(
        f"mini.yaml:{line_of(text, 'gte')}: transitions.go.guards.adult: unknown operator 'gte'"
    )


def test_anchor_not_a_date_field() -> None:
    text = edit("anchor: form.decided_on", "anchor: form.missing")
    assert (
        f"mini.yaml:{line_of(text, 'start_deadlines')}: transitions.go.effects.start_deadlines:"
        " deadline 'term' is anchored on 'form.missing', which is not a date field of 'go'"
    ) in problems_of(text)


def test_on_due_needs_automatic_transition() -> None:
    text = edit("    automatic: true\n", "")
    assert (
        f"mini.yaml:{line_of(text, 'on_due')}: deadlines.term.on_due: transition 'finish' must"
        " be 'automatic: true' to fire on due"
    ) in problems_of(text)


def test_not_exactly_one_initial_state() -> None:
    text = edit("kind: initial", "kind: active")
    assert (
        f"mini.yaml:{line_of(text, 'states:')}: states: exactly one state must be of kind"
        " 'initial', found 0"
    ) in problems_of(text)


def test_missing_required_key() -> None:
    text = edit("effective_from: 2022-01-01\n", "")
    assert "mini.yaml:1: effective_from: is required" in problems_of(text)


def test_unverified_parameter_needs_note() -> None:
    text = edit('verified: false, note: "no source"', "verified: false")
    assert (
        f"mini.yaml:{line_of(text, 'unsure_days')}: parameters.unsure_days: an unverified"
        " parameter needs a 'note' saying what is uncertain"
    ) in problems_of(text)


def test_bad_field_spec() -> None:
    text = edit("{name: decided_on, type: date,", "{name: decided_on, type: datetime,")
    assert (
        f"mini.yaml:{line_of(text, 'type: datetime')}: transitions.go.fields.decided_on.type:"
        " unknown type 'datetime' (use string, text, date, integer, enum, boolean, unit)"
    ) in problems_of(text)


def test_yaml_syntax_error_reports_line() -> None:
    text = edit("version: 1\n", "version: [1\n")
    msgs = problems_of(text)
    assert len(msgs) == 1 and msgs[0].startswith("mini.yaml:") and ": yaml: " in msgs[0]


def test_every_error_is_listed_not_only_the_first() -> None:
    text = edit("to: middle", "to: nowhere", edit("documents: [decision]", "documents: [x]"))
    msgs = problems_of(text)
    assert any("unknown state 'nowhere'" in m for m in msgs)
    assert any("unknown document type 'x'" in m for m in msgs)


def test_load_file_raises_with_all_errors(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "bad.yaml"
    path.write_text(edit("to: middle", "to: nowhere"), encoding="utf-8")
    with pytest.raises(DefinitionError) as exc:
        load_file(path)
    assert any("unknown state 'nowhere'" in e for e in exc.value.details["errors"])
