from __future__ import annotations

from datetime import date

import pytest

from workflow.forms import json_schema, validate_form
from workflow.registry import Registry

from ..conftest import DEFINITIONS


@pytest.fixture(scope="module")
def v1():  # noqa: ANN201
    return Registry.from_directory(DEFINITIONS).get("drug_rehab", 1)


def test_valid_form_is_loaded_with_types(v1) -> None:  # noqa: ANN001
    t = v1.transitions["decide_voluntary_home"]
    data, errors = validate_form(
        v1,
        t,
        {
            "decision_date": "2027-02-16",
            "setting": "home",
            "term_months": 6,
            "monitor_name": " Lê Văn Nam ",
        },
    )
    assert errors == {}
    assert data["decision_date"] == date(2027, 2, 16)
    assert data["monitor_name"] == "Lê Văn Nam"


def test_errors_name_each_field_in_vietnamese(v1) -> None:  # noqa: ANN001
    t = v1.transitions["decide_voluntary_home"]
    _, errors = validate_form(
        v1, t, {"decision_date": "16/02/2027", "setting": "home", "term_months": 13, "surprise": 1}
    )
    assert errors["decision_date"] == ["Ngày không hợp lệ (định dạng YYYY-MM-DD)."]
    assert errors["term_months"] == ["Phải trong khoảng 6 đến 12."]
    assert errors["monitor_name"] == ["Trường này là bắt buộc."]
    assert errors["surprise"] == ["Trường không được khai báo trong biểu mẫu."]


def test_english_messages(v1) -> None:  # noqa: ANN001
    t = v1.transitions["decide_voluntary_home"]
    _, errors = validate_form(v1, t, {}, lang="en")
    assert errors["decision_date"] == ["This field is required."]


def test_integer_is_strict(v1) -> None:  # noqa: ANN001
    t = v1.transitions["decide_voluntary_home"]
    _, errors = validate_form(
        v1,
        t,
        {"decision_date": "2027-02-16", "setting": "home", "term_months": "6", "monitor_name": "A"},
    )
    assert "term_months" in errors


def test_json_schema_matches_the_same_spec(v1) -> None:  # noqa: ANN001
    t = v1.transitions["decide_voluntary_home"]
    schema = json_schema(v1, t)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {f.name for f in t.fields if f.required}
    assert schema["properties"]["term_months"]["minimum"] == 6
    assert schema["properties"]["term_months"]["maximum"] == 12
    assert schema["properties"]["decision_date"]["format"] == "date"
