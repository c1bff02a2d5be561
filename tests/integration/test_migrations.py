"""Alembic migrations: `upgrade head` on an empty database and a downgrade/upgrade round trip."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from dataharvest_local import migrate

pytestmark = pytest.mark.integration

EXPECTED_TABLES = {
    "raw_store.clients",
    "raw_store.portfolios",
    "raw_store.accounts",
    "raw_store.transactions",
    "audit.load_chunks",
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
            "WHERE table_schema IN ('raw', 'raw_store', 'etl', 'audit', 'config') "
            "AND table_type = 'BASE TABLE'"
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


def unpublished_index(url: str) -> str:
    with psycopg.connect(url) as conn:
        (definition,) = conn.execute(
            "SELECT indexdef FROM pg_indexes "
            "WHERE schemaname = 'etl' AND indexname = 'partner_messages_unpublished_idx'"
        ).fetchone()
    return definition


def test_unpublished_messages_index_follows_the_send_order_and_steps_back(empty_database):
    migrate.upgrade(empty_database)
    assert "(client_id, business_date, message_type, deduplication_id)" in unpublished_index(
        empty_database
    )
    with psycopg.connect(empty_database) as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT * FROM etl.partner_messages WHERE client_id = 'c' "
                "AND business_date = '2024-01-02' AND published_at IS NULL "
                "ORDER BY message_type, deduplication_id LIMIT 1000 FOR UPDATE"
            ).fetchall()
        )
    assert "Sort" not in plan, plan
    migrate.downgrade(empty_database, "0002")
    assert "(client_id, business_date) WHERE" in unpublished_index(empty_database)
    migrate.upgrade(empty_database)
    assert "message_type, deduplication_id" in unpublished_index(empty_database)


def test_raw_rows_move_into_partitioned_storage_and_back(empty_database):
    migrate.upgrade(empty_database, "0004")
    with psycopg.connect(empty_database) as conn:
        (load_id,) = conn.execute(
            "INSERT INTO audit.file_loads (client_id, business_date, entity, source_key, "
            "source_version, status, rows_total, rows_loaded, is_current) VALUES "
            "('acme', '2024-01-02', 'transactions', 'acme/transactions_20240102.csv', 'v1', "
            "'loaded', 2, 2, true) RETURNING load_id"
        ).fetchone()
        conn.execute(
            "INSERT INTO raw.transactions (client_id, business_date, source_key, source_version, "
            "line_number, record_id, account_number, transaction_reference, amount, keyword) "
            "VALUES ('acme', '2024-01-02', 'acme/transactions_20240102.csv', 'v1', 2, 1, 42, "
            "'T1', 12.50, 'DEPOSIT'), ('acme', '2024-01-02', 'acme/transactions_20240102.csv', "
            "'v1', 3, 2, 42, 'T2', -1, 'TAX')"
        )
    expected = [
        ("acme", date(2024, 1, 2), "acme/transactions_20240102.csv", "v1", 2, 1, 42, "T1",
         Decimal("12.50"), "DEPOSIT"),
        ("acme", date(2024, 1, 2), "acme/transactions_20240102.csv", "v1", 3, 2, 42, "T2",
         Decimal("-1"), "TAX"),
    ]  # fmt: skip
    query = (
        "SELECT client_id, business_date, source_key, source_version, line_number, record_id, "
        "account_number, transaction_reference, amount, keyword FROM raw.transactions "
        "ORDER BY line_number"
    )
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        assert conn.execute(query).fetchall() == expected
        leaves = conn.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('raw_store.transactions') "
            "WHERE isleaf"
        ).fetchall()
        assert leaves == [(f"raw_store.transactions_load_{load_id}",)]
    migrate.downgrade(empty_database, "0004")
    with psycopg.connect(empty_database) as conn:
        assert conn.execute(query).fetchall() == expected
