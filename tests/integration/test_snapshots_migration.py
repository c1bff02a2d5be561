"""Migration 0007_snapshots: upgrade, register a table (its per-table relations), downgrade to
0006 (everything of it gone, dynamic tables included), upgrade again."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from dataharvest.snapshots import tables
from dataharvest_local import migrate

pytestmark = pytest.mark.integration

SCHEMAS = ("snapshots", "snapshot_state", "replica_store", "replica")


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


def relations(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema = ANY(%s) OR (table_schema, table_name) = "
            "('config', 'snapshot_tables')",
            (list(SCHEMAS),),
        ).fetchall()
    return {r[0] for r in rows}


def test_snapshot_schema_round_trip(empty_database) -> None:
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        tables.register(conn, tables.parse_definition("acme", "positions", "pk", "pk:integer,v"))
    assert relations(empty_database) == {
        "config.snapshot_tables",
        "snapshots.table_state",
        "snapshots.exports",
        "snapshots.changes",
        "snapshot_state.positions",
        "replica_store.positions",
        "replica.positions",
    }
    migrate.downgrade(empty_database, "0006")
    assert relations(empty_database) == set()
    with psycopg.connect(empty_database) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(SCHEMAS),)
        ).fetchall()
    assert schemas == []
    migrate.upgrade(empty_database)
    assert "snapshots.changes" in relations(empty_database)
