"""Definition inheritance: ``extends: key@version`` merged on top of the parent's file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from workflow.errors import DefinitionError
from workflow.loader import load_file, parse_text

PARENT = textwrap.dedent("""\
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
      - {code: court, label: {vi: Tòa án huyện, en: District court}, level: district}
    roles:
      - {code: officer, label: {vi: Cán bộ, en: Officer}}
    groups:
      - {code: other, label: {vi: Khác, en: Other}}
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
        effects:
          start_deadlines: [term]
      - key: finish
        label: {vi: Kết thúc, en: Finish}
        from: [middle]
        to: done
        allowed: [{agency: court, roles: [officer]}]
    activities:
      - key: note
        label: {vi: Ghi chú, en: Note}
        states: [middle]
        allowed: [{agency: police, roles: [officer]}]
    deadlines:
      - key: term
        label: {vi: Thời hạn, en: Term}
        duration: {months: {param: term_months}}
        anchor: form.decided_on
        met_by: [finish]
""")

HEAD = textwrap.dedent("""\
    key: mini
    version: 2
    extends: mini@1
    effective_from: 2025-03-01
""")


def write(tmp_path: Path, child: str, name: str = "mini.v2.yaml") -> Path:
    (tmp_path / "mini.v1.yaml").write_text(PARENT, encoding="utf-8")
    path = tmp_path / name
    path.write_text(child, encoding="utf-8")
    return path


def parse(tmp_path: Path, child: str, name: str = "mini.v2.yaml"):  # noqa: ANN201
    path = write(tmp_path, child, name)
    return parse_text(path.read_text(encoding="utf-8"), str(path))


def only_problem(tmp_path: Path, child: str) -> str:
    definition, problems = parse(tmp_path, child)
    assert definition is None
    assert len(problems) == 1, [str(p) for p in problems]
    return str(problems[0])


def test_child_with_nothing_but_its_head_is_the_parent(tmp_path: Path) -> None:
    d, problems = parse(tmp_path, HEAD)
    assert problems == []
    assert d.ref == "mini@2"
    assert str(d.effective_from) == "2025-03-01"
    assert list(d.states) == ["start", "middle", "done"]
    assert d.title.vi == "Thử"
    assert d.source.endswith("mini.v2.yaml")


def test_effective_dates_are_not_inherited(tmp_path: Path) -> None:
    child = HEAD.replace("effective_from: 2025-03-01\n", "")
    assert only_problem(tmp_path, child).endswith("mini.v2.yaml:1: effective_from: is required")


def test_item_of_the_same_key_replaces_the_parents_entirely_in_place(tmp_path: Path) -> None:
    child = HEAD + textwrap.dedent("""\
        title: {vi: Thử 2, en: Test 2}
        agency_types:
          - {code: court, label: {vi: Tòa án khu vực, en: Regional court}, level: region}
        transitions:
          - key: go
            label: {vi: Đi tiếp, en: Go on}
            from: start
            to: middle
            allowed: [{agency: court, roles: [officer]}]
    """)
    d, problems = parse(tmp_path, child)
    assert problems == []
    assert d.title.vi == "Thử 2"
    assert d.agency_types["court"].level == "region"
    assert list(d.agency_types) == ["police", "court"]
    go = d.transitions["go"]
    assert go.label.vi == "Đi tiếp"
    assert go.allowed[0].agency == "court"
    assert go.documents == () and go.fields == ()  # replaced entirely, not merged
    assert list(d.transitions) == ["go", "finish"]


def test_new_keys_are_appended(tmp_path: Path) -> None:
    child = HEAD + textwrap.dedent("""\
        states:
          - {key: watched, label: {vi: Giám sát, en: Watched}, kind: active, group: other}
        transitions:
          - key: watch
            label: {vi: Giám sát, en: Watch}
            from: [middle]
            to: watched
            allowed: [{agency: police, roles: [officer]}]
          - key: unwatch
            label: {vi: Thôi giám sát, en: Unwatch}
            from: [watched]
            to: done
            allowed: [{agency: police, roles: [officer]}]
    """)
    d, problems = parse(tmp_path, child)
    assert problems == []
    assert list(d.states) == ["start", "middle", "done", "watched"]
    assert list(d.transitions) == ["go", "finish", "watch", "unwatch"]


def test_parameters_merge_by_name(tmp_path: Path) -> None:
    child = HEAD + textwrap.dedent("""\
        parameters:
          term_months: {value: 24, cite: "Law 120/2025 ✔S40"}
          new_days: {value: 1, verified: false, note: "unsure"}
    """)
    d, problems = parse(tmp_path, child)
    assert problems == []
    assert d.param("term_months") == 24
    assert d.parameters["term_months"].cite == "Law 120/2025 ✔S40"
    assert d.param("unsure_days") == 5
    assert d.param("new_days") == 1


def test_remove_deletes_parent_items(tmp_path: Path) -> None:
    child = HEAD + textwrap.dedent("""\
        remove:
          activities: [note]
          parameters: [unsure_days]
    """)
    d, problems = parse(tmp_path, child)
    assert problems == []
    assert d.activities == {}
    assert "unsure_days" not in d.parameters


def test_remove_of_a_key_the_parent_does_not_have(tmp_path: Path) -> None:
    child = HEAD + "remove:\n  transitions: [fly]\n"
    msg = only_problem(tmp_path, child)
    assert msg.endswith(
        "mini.v2.yaml:6: remove.transitions: the parent has no 'fly' in transitions to remove"
    )


def test_remove_from_an_unknown_section(tmp_path: Path) -> None:
    msg = only_problem(tmp_path, HEAD + "remove:\n  gadgets: [x]\n")
    assert "mini.v2.yaml:6: remove.gadgets: cannot remove from 'gadgets'" in msg


def test_cross_reference_broken_by_a_removal_is_reported_at_the_parent_line(
    tmp_path: Path,
) -> None:
    # the parent's deadline 'term' (met_by on its line 48) is met by the removed 'finish'
    child = HEAD + "remove:\n  transitions: [finish]\n"
    d, problems = parse(tmp_path, child)
    assert d is None
    texts = [str(p) for p in problems]
    parent = str(tmp_path / "mini.v1.yaml")
    assert f"{parent}:48: deadlines.term.met_by: unknown transition or activity 'finish'" in texts
    assert any(t.startswith(f"{parent}:") and "'middle' has no way out" in t for t in texts)


def test_child_items_are_reported_at_the_childs_line(tmp_path: Path) -> None:
    child = HEAD + textwrap.dedent("""\
        activities:
          - key: note
            label: {vi: Ghi chú, en: Note}
            states: [nowhere]
            allowed: [{agency: police, roles: [officer]}]
    """)
    msg = only_problem(tmp_path, child)
    assert msg == f"{tmp_path / 'mini.v2.yaml'}:8: activities.note.states: unknown state 'nowhere'"


def test_unknown_parent(tmp_path: Path) -> None:
    msg = only_problem(
        tmp_path, HEAD.replace("mini@1", "mini@7").replace("version: 2", "version: 8")
    )
    assert msg.endswith(
        "mini.v2.yaml:3: extends: unknown parent mini@7: no mini.v7.yaml nor "
        f"any *.yaml with key mini and version 7 in {tmp_path}"
    )


def test_parent_found_by_scanning_the_directory(tmp_path: Path) -> None:
    (tmp_path / "old-mini.yaml").write_text(PARENT, encoding="utf-8")
    path = tmp_path / "new.yaml"
    path.write_text(HEAD, encoding="utf-8")
    d = load_file(path)
    assert d.ref == "mini@2" and "go" in d.transitions


def test_parent_of_a_different_key(tmp_path: Path) -> None:
    (tmp_path / "other.v1.yaml").write_text(PARENT.replace("key: mini", "key: other"), "utf-8")
    msg = only_problem(tmp_path, HEAD.replace("mini@1", "other@1"))
    assert "extends: parent other@1 is of a different key than 'mini'" in msg


def test_version_must_be_greater_than_the_parents(tmp_path: Path) -> None:
    (tmp_path / "mini.v0.yaml").write_text("", "utf-8")
    msg = only_problem(tmp_path, HEAD.replace("version: 2", "version: 1"))
    assert msg.endswith(
        "mini.v2.yaml:2: version: must be greater than the parent's version (mini@1), got 1"
    )


def test_cycle(tmp_path: Path) -> None:
    # increasing versions rule out longer cycles; a file extending itself is one
    d, problems = parse(tmp_path, HEAD.replace("mini@1", "mini@2"))
    assert d is None
    texts = [str(p).replace(str(tmp_path) + "/", "") for p in problems]
    assert texts == [
        "mini.v2.yaml:2: version: must be greater than the parent's version (mini@2), got 2",
        "mini.v2.yaml:3: extends: inheritance cycle: mini.v2.yaml -> mini.v2.yaml",
    ]


def test_remove_without_extends(tmp_path: Path) -> None:
    d, problems = parse_text(PARENT + "remove:\n  states: [done]\n", str(tmp_path / "x.yaml"))
    assert d is None
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'x.yaml'}:49: remove: only a definition that 'extends' may remove"
    ]


def test_extends_needs_a_file() -> None:
    d, problems = parse_text(HEAD)
    assert d is None
    assert "extends: a definition that extends another must be read from a file" in str(problems[0])


def test_load_file_raises_with_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "remove:\n  states: [nope]\n  roles: [nope]\n")
    with pytest.raises(DefinitionError) as exc:
        load_file(path)
    assert len(exc.value.details["errors"]) == 2
