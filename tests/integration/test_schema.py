"""The migrations build the schema the models declare (``workflow.schema``)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index
from sqlalchemy.engine import Engine

from workflow.model import Base, Case


def test_the_migrations_build_the_schema_the_models_declare(engine: Engine) -> None:
    """Every table, column, index and constraint of the models, as the migrations made them
    (SQLite, and PostgreSQL when it answers): a model changed without its migration (or the
    other way round) shows here, not in production."""
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_model_index_without_its_migration_is_told(engine: Engine) -> None:
    """The comparison does see indexes (the case list's, migration 0008, is one)."""
    metadata = Base.metadata
    extra = Index("ix_cases_not_migrated", Case.__table__.c.opened_at)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        Case.__table__.indexes.discard(extra)
    assert [(d[0], d[1].name) for d in diff] == [("add_index", "ix_cases_not_migrated")]
