"""Fixtures of the integration tests: ``drive`` (a case walked as the right agency would), and
the check every test that writes through the service ends with: report counters that equal a
recount of the audit log and the deadlines (workflow.rollup.check)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workflow import rollup

from .helpers import Driver


@pytest.fixture(autouse=True)
def _counters_stay_exact(request: pytest.FixtureRequest) -> Iterator[None]:
    checked = "service" in request.fixturenames and not request.node.get_closest_marker("tampers")
    service = request.getfixturevalue("service") if checked else None  # torn down after us
    yield
    if service is not None:
        with service.uow(read_only=True) as uow:
            n, differences = rollup.check(uow.session)
        assert (n, differences) == (0, []), "report counters differ from a recount"


@pytest.fixture
def drive(service, actors) -> Driver:  # noqa: ANN001
    return Driver(service, actors)
