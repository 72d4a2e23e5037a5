"""Configuration from ``REHABFLOW_*`` environment variables (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workflow.calendar import WorkingCalendar

_DEFAULT_SECRET = "dev-only-change-me"  # noqa: S105 - documented dev default


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    definitions_dir: Path
    secret_key: str
    calendar: WorkingCalendar

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings; every value has a default that works on a fresh machine."""
    env = dict(os.environ if env is None else env)
    data_dir = Path(env.get("REHABFLOW_DATA_DIR", "instance")).resolve()
    url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'rehabflow.db'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    default_defs = Path(__file__).resolve().parent.parent / "definitions"
    return Settings(
        data_dir=data_dir,
        database_url=url,
        definitions_dir=Path(env.get("REHABFLOW_DEFINITIONS_DIR", default_defs)),
        secret_key=env.get("REHABFLOW_SECRET_KEY", _DEFAULT_SECRET),
        calendar=WorkingCalendar.from_config(
            env.get("REHABFLOW_EXTRA_DAYS_OFF"), env.get("REHABFLOW_MAKEUP_WORKING_DAYS")
        ),
    )
