"""The Alembic migrations are the only way the schema is made: they must build exactly what the models say."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlmodel import SQLModel

import bastion.gateway.db.tables  # noqa: F401  (registers every table on SQLModel.metadata)


def test_migrations_build_exactly_the_models_schema(engine: Engine) -> None:
    """A model change without its migration (or the reverse) shows up here, on SQLite and on PostgreSQL."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
