"""Alembic migrations: `upgrade head` on an empty database and a downgrade/upgrade round trip."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from dataharvest import migrate

pytestmark = pytest.mark.integration

EXPECTED_TABLES = {
    "raw.clients",
    "raw.portfolios",
    "raw.accounts",
    "raw.transactions",
    "audit.file_loads",
    "audit.rejections",
    "audit.data_quality_issues",
    "audit.transformer_runs",
    "etl.portfolio_links",
    "etl.portfolio_deposits",
    "etl.portfolio_transaction_counts",
    "etl.client_tax_summary",
    "etl.partner_messages",
    "config.client_settings",
}


@pytest.fixture
def empty_database(stack_info):
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(stack_info.database_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(stack_info.database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield url
    with psycopg.connect(stack_info.database_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('raw', 'etl', 'audit', 'config') AND table_type = 'BASE TABLE'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_head_on_an_empty_database_then_round_trip(empty_database):
    migrate.upgrade(empty_database)
    assert tables(empty_database) >= EXPECTED_TABLES
    migrate.downgrade(empty_database, "base")
    assert tables(empty_database) == set()
    migrate.upgrade(empty_database)
    assert tables(empty_database) >= EXPECTED_TABLES
    with psycopg.connect(empty_database) as conn:
        view = conn.execute("SELECT count(*) FROM etl.portfolio_summary").fetchone()
    assert view == (0,)
