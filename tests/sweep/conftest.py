"""Fixtures of the sweep tests: an application on a SQLite file shared by the test (which
prepares cases through the service) and ``rehabflow sweep --now ... --inline`` (run in-process
with click's CliRunner), plus agencies that watch their inbox."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

import api.cli  # noqa: F401 - registers the worker commands (sweep, outbox) on the CLI
from workflow.bootstrap import Services, bootstrap
from workflow.cli import main
from workflow.config import load_settings
from workflow.model import Agency, AgencyUnit, AuditEvent, Delivery, InboxItem, OutboxMessage
from workflow.registry import Registry

from ..conftest import COMMUNE, DEFINITIONS, OTHER_COMMUNE, Actors
from ..integration.helpers import Driver

REPORT = re.compile(
    r"deadlines looked at: (?P<rows>\d+); reminders: (?P<reminders>\d+); "
    r"escalations: (?P<escalations>\d+); automatic transitions: (?P<automatic>\d+)"
    r"(?: \(refused: (?P<refused>\d+)\))?; outbox relayed: (?P<relayed>\d+); "
    r"deliveries re-queued: (?P<requeued>\d+); calendar reminders: (?P<calendar>\d+)"
)


@dataclass
class App:
    """One rehabflow installation: the CLI's environment and the same database in-process."""

    env: dict[str, str | None]
    services: Services
    drive: Driver
    watchers: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, unit) -> id

    def sweep(self, now: datetime | str) -> dict[str, int]:
        """``rehabflow sweep --now NOW --inline``; the figures it printed."""
        stamp = now if isinstance(now, str) else now.isoformat()
        result = CliRunner().invoke(
            main, ["sweep", "--now", stamp, "--inline"], env=self.env, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        found = REPORT.search(result.output)
        assert found, result.output
        return {k: int(v or 0) for k, v in found.groupdict().items()}

    def watch(self, *agency_types: str) -> None:
        """An agency of each type in the case's commune, and one in another commune."""
        with self.services.session_factory() as s:
            for agency_type in agency_types:
                for unit in (COMMUNE, OTHER_COMMUNE):
                    if (agency_type, unit) in self.watchers:
                        continue
                    agency = Agency(
                        code=f"watch-{agency_type}-{unit}",
                        type=agency_type,
                        name=f"{agency_type} {unit}",
                    )
                    agency.units.append(AgencyUnit(unit_code=unit))
                    s.add(agency)
                    s.flush()
                    self.watchers[(agency_type, unit)] = agency.id
            s.commit()

    def inbox(self, agency_type: str, unit: str = COMMUNE, **where: object) -> list[dict]:
        """The inbox of a watching agency, with the payload of each item's message."""
        agency_id = self.watchers[(agency_type, unit)]
        with self.services.session_factory() as s:
            rows = s.execute(
                select(InboxItem, OutboxMessage)
                .join(OutboxMessage, OutboxMessage.id == InboxItem.message_id, isouter=True)
                .where(InboxItem.agency_id == agency_id)
                .order_by(InboxItem.id)
            ).all()
        items = [
            {
                "topic": item.topic,
                "case_id": item.case_id,
                "subject": item.subject,
                "body": item.body,
                "message_id": item.message_id,
                **(msg.payload if msg is not None else {}),
            }
            for item, msg in rows
        ]
        return [i for i in items if all(i.get(k) == v for k, v in where.items())]

    def events(self, case_id: int, prefix: str = "") -> list[AuditEvent]:
        with self.services.session_factory() as s:
            return list(
                s.execute(
                    select(AuditEvent)
                    .where(AuditEvent.case_id == case_id, AuditEvent.action.startswith(prefix))
                    .order_by(AuditEvent.seq)
                ).scalars()
            )

    def deliveries(self) -> list[Delivery]:
        with self.services.session_factory() as s:
            return list(s.execute(select(Delivery).order_by(Delivery.id)).scalars())


@pytest.fixture
def app(tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    # every CLI invocation bootstraps anew; parsing the definitions each time (pure-Python
    # YAML, ~1 s) is not what is tested here, so they are parsed once per session
    loaded = {DEFINITIONS.resolve(): registry}
    real = Registry.from_directory.__func__

    def from_directory(cls, path):  # noqa: ANN001, ANN202
        key = Path(path).resolve()
        if key not in loaded:
            loaded[key] = real(cls, path)
        return loaded[key]

    monkeypatch.setattr(Registry, "from_directory", classmethod(from_directory))
    env: dict[str, str | None] = {
        "REHABFLOW_DATA_DIR": str(tmp_path / "data"),
        "REHABFLOW_DEFINITIONS_DIR": str(DEFINITIONS),
        # nothing from the developer's shell: SQLite in the data folder, inbox only
        "DATABASE_URL": None,
        "REDIS_URL": None,
        "REHABFLOW_SMTP_HOST": None,
        "REHABFLOW_EXTRA_DAYS_OFF": None,
        "REHABFLOW_MAKEUP_WORKING_DAYS": None,
        "REHABFLOW_REPORTING_CALENDAR": None,
        "REHABFLOW_SECRET_KEY": None,
    }
    services = bootstrap(
        load_settings({k: v for k, v in env.items() if v is not None}), registry=registry
    )
    services.init_db()
    drive = Driver(services.cases, Actors(services.session_factory))
    yield App(env, services, drive)
    services.engine.dispose()
