"""End-to-end fixtures: a real app (SQLite file, blob directory) seeded with demo data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask

from api.app import create_app
from workflow.demo import DEMO_COMMUNE, load_demo

DEMO_CASES = 20


@dataclass(frozen=True)
class DemoApp:
    app: Flask
    token: str
    data_dir: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoApp]:
    """The API over a fresh SQLite database with ~20 demo cases of the demo commune, and a
    token of an administrator of the commune police (who sees every demo case)."""
    data_dir = tmp_path_factory.mktemp("e2e-data")
    app = create_app(
        {
            "TESTING": True,
            "REHABFLOW_ENV": {"REHABFLOW_DATA_DIR": str(data_dir)},
            # generated requests include deliberately bad tokens; do not let the failed-auth
            # limiter turn the rest of the run into 429s
            "AUTH_FAILURE_LIMIT": 1_000_000,
        }
    )
    services = app.extensions["rehabflow"]
    load_demo(services, n_cases=DEMO_CASES, seed=2026)
    accounts = app.extensions["rehabflow.accounts"]
    now = datetime.now(UTC)
    accounts.create_user(
        "e2e.admin", "commune_police", "head", DEMO_COMMUNE, now, full_name="E2E", is_admin=True
    )
    token = accounts.create_token("e2e.admin", now).token
    yield DemoApp(app, token, data_dir)
    services.engine.dispose()
