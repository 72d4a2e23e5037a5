"""Wiring: settings -> engine, sessions, definitions registry and the case service."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from workflow import schema
from workflow.config import Settings, load_settings
from workflow.db import make_engine, make_session_factory
from workflow.registry import Registry
from workflow.service import CaseService
from workflow.storage import FileBlobStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    registry: Registry
    cases: CaseService

    def init_db(self) -> None:
        schema.upgrade(self.engine)


def bootstrap(settings: Settings | None = None, registry: Registry | None = None) -> Services:
    settings = settings or load_settings()
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    registry = registry or Registry.from_directory(settings.definitions_dir)
    service = CaseService(
        factory,
        registry,
        settings.calendar,
        secret_key=settings.secret_key,
        blobs=FileBlobStore(settings.blob_dir),
    )
    return Services(settings, engine, factory, registry, service)
