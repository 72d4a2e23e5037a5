from __future__ import annotations

import pytest

from workflow.errors import TransitionNotAvailable
from workflow.machine import CaseToken
from workflow.registry import Registry

from ..conftest import DEFINITIONS


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_directory(DEFINITIONS)


def test_one_machine_per_version_built_once(registry: Registry) -> None:
    d = registry.get("drug_rehab", 1)
    assert registry.machine(d) is registry.machine(registry.get("drug_rehab", 1))


def test_fire_moves_the_token_when_checks_pass(registry: Registry) -> None:
    d = registry.get("drug_rehab", 1)
    token = CaseToken("detected")
    assert registry.machine(d).fire(token, "request_determination", lambda: [])
    assert token.state == "addiction_determination"


def test_refusal_keeps_state_and_reasons(registry: Registry) -> None:
    d = registry.get("drug_rehab", 1)
    token = CaseToken("detected")
    assert not registry.machine(d).fire(token, "request_determination", lambda: ["missing"])
    assert token.state == "detected" and token.refusals == ["missing"]


def test_wrong_source_state_says_what_is_allowed(registry: Registry) -> None:
    d = registry.get("drug_rehab", 1)
    with pytest.raises(TransitionNotAvailable) as exc:
        registry.machine(d).fire(CaseToken("detected"), "decide_compulsory", lambda: [])
    assert "request_determination" in exc.value.details["allowed"]


def test_unknown_transition(registry: Registry) -> None:
    d = registry.get("drug_rehab", 1)
    with pytest.raises(TransitionNotAvailable):
        registry.machine(d).fire(CaseToken("detected"), "teleport", lambda: [])
