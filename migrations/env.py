"""Alembic environment: online migrations against DATABASE_URL (or the URL passed in config)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from dataharvest_local.migrate import sqlalchemy_url

config = context.config


def run_migrations_online() -> None:
    url = config.attributes.get("url") or sqlalchemy_url()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
