"""Migration 0007_snapshots: upgrade, register a table (its per-table relations), downgrade to
0006 (everything of it gone, dynamic tables included), upgrade again."""

from __future__ import annotations

import hashlib
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


def _state_columns(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'snapshot_state' AND table_name = 'positions' "
            "ORDER BY ordinal_position"
        ).fetchall()


def _md5_uuid(text: str) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(text.encode()).hexdigest())


def test_state_row_hash_dropped_and_restored_on_downgrade(empty_database) -> None:
    """0012_snapshot_hash: the delta compares columns, so the state tables lose `_row_hash`;
    a downgrade to 0011 puts it back with the md5 of the row's text the old delta wrote
    (PostgreSQL's record text: NULL empty, '' and values with blanks quoted)."""
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        tables.register(conn, tables.parse_definition("acme", "positions", "pk", "pk:integer,v,w"))
        conn.execute(
            "INSERT INTO snapshot_state.positions VALUES "
            "('acme', '1', 'x', NULL), ('acme', '2', '', 'a b')"
        )
    assert [c for c, _ in _state_columns(empty_database)] == ["client_id", "pk", "v", "w"]
    migrate.downgrade(empty_database, "0011_personal_data")
    assert _state_columns(empty_database)[-1] == ("_row_hash", "NO")
    with psycopg.connect(empty_database) as conn:
        hashes = dict(conn.execute("SELECT pk, _row_hash FROM snapshot_state.positions").fetchall())
    assert hashes == {"1": _md5_uuid("(1,x,)"), "2": _md5_uuid('(2,"","a b")')}
    migrate.upgrade(empty_database)
    assert [c for c, _ in _state_columns(empty_database)] == ["client_id", "pk", "v", "w"]
