"""Registered snapshot tables: definition, storage in `config.snapshot_tables`, and the
per-table PostgreSQL tables created on registration.

Per table name (shared by the clients that register it, each row carrying `client_id`):
- `snapshot_state.<table>`: the current state, every column as exported text (the next
  export is compared with it column by column);
- `replica_store.<table>`: the applied state, typed, with the sequence of the change that
  wrote each row and a tombstone flag (a late duplicate of an older change is recognized);
- `replica.<table>`: a view of replica_store without tombstones and bookkeeping columns.

A table name means one definition: a second client may register the same name only with the
same columns, types and key (replica.<table> is one relation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dataharvest import db
from dataharvest.security import roles
from dataharvest.snapshots.routing import IDENTIFIER

# Column types a snapshot table may declare -> PostgreSQL type of its replica column.
TYPES = {
    "text": "text",
    "integer": "bigint",
    "bigint": "bigint",
    "decimal": "numeric",
    "numeric": "numeric",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "boolean": "boolean",
}
RESERVED = {"client_id"}


class TableError(ValueError):
    """A definition that cannot be registered (bad name, unknown type, conflicting table)."""


@dataclass(frozen=True)
class SnapshotTable:
    client_id: str
    table: str
    key_columns: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, type) in file order
    delimiter: str = ","
    header: bool = True

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def value_columns(self) -> list[str]:
        return [n for n in self.column_names if n not in self.key_columns]

    def pg_type(self, column: str) -> str:
        return TYPES[dict(self.columns)[column]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "table": self.table,
            "key": list(self.key_columns),
            "columns": [f"{n}:{t}" for n, t in self.columns],
            "delimiter": self.delimiter,
            "header": self.header,
        }


def parse_definition(
    client_id: str,
    table: str,
    key: str,
    columns: str,
    delimiter: str = ",",
    header: bool = True,
) -> SnapshotTable:
    """`--key A,B --columns A:integer,B,C:decimal` -> a checked definition (TableError if not)."""
    if not IDENTIFIER.fullmatch(table):
        raise TableError(f"table {table!r} must match ^{IDENTIFIER.pattern}$")
    parsed: list[tuple[str, str]] = []
    for spec in columns.split(","):
        name, _, kind = spec.strip().partition(":")
        name, kind = name.strip().lower(), (kind.strip().lower() or "text")
        if not IDENTIFIER.fullmatch(name) or name in RESERVED:
            raise TableError(f"column {name!r} must match ^{IDENTIFIER.pattern}$, not client_id")
        if kind not in TYPES:
            raise TableError(f"column {name}: unknown type {kind!r} ({', '.join(TYPES)})")
        if name in dict(parsed):
            raise TableError(f"column {name} is named twice")
        parsed.append((name, kind))
    keys = tuple(k.strip().lower() for k in key.split(","))
    for k in keys:
        if k not in dict(parsed):
            raise TableError(f"key column {k!r} is not one of the columns")
    if len(set(keys)) != len(keys):
        raise TableError("a key column is named twice")
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise TableError(f"delimiter {delimiter!r} must be one character (not a quote or newline)")
    return SnapshotTable(client_id, table, keys, tuple(parsed), delimiter, header)


def _from_row(row: tuple[Any, ...]) -> SnapshotTable:
    client_id, table, keys, columns, delimiter, header = row
    return SnapshotTable(
        client_id,
        table,
        tuple(keys),
        tuple((c["name"], c["type"]) for c in columns),
        delimiter,
        header,
    )


_SELECT = (
    "SELECT client_id, table_name, key_columns, columns, delimiter, header "
    "FROM config.snapshot_tables"
)


def get(conn: psycopg.Connection, client_id: str, table: str) -> SnapshotTable | None:
    row = conn.execute(
        _SELECT + " WHERE client_id = %s AND table_name = %s", (client_id, table)
    ).fetchone()
    return _from_row(row) if row else None


def list_tables(conn: psycopg.Connection, client_id: str | None = None) -> list[SnapshotTable]:
    if client_id:
        rows = conn.execute(
            _SELECT + " WHERE client_id = %s ORDER BY table_name", (client_id,)
        ).fetchall()
    else:
        rows = conn.execute(_SELECT + " ORDER BY client_id, table_name").fetchall()
    return [_from_row(r) for r in rows]


def register(conn: psycopg.Connection, definition: SnapshotTable) -> bool:
    """Store the definition and create its tables; False when it was registered already.

    Raises TableError when the client registered the table differently, or another client
    registered the same table name with other columns (one replica.<table> per name)."""
    same_shape = (definition.key_columns, definition.columns)
    with conn.transaction():
        db.advisory_xact_lock(conn, f"snapshot-table/{definition.table}")
        current = get(conn, definition.client_id, definition.table)
        if current is not None:
            if current == definition:
                return False
            raise TableError(
                f"{definition.table} is registered for {definition.client_id} with another "
                f"definition ({json.dumps(current.as_dict())}); a registration does not change"
            )
        other = conn.execute(
            _SELECT + " WHERE table_name = %s LIMIT 1", (definition.table,)
        ).fetchone()
        if other is not None and (_from_row(other).key_columns, _from_row(other).columns) != (
            same_shape
        ):
            raise TableError(
                f"replica.{definition.table} exists with other columns or key (client "
                f"{other[0]}); choose another table name"
            )
        conn.execute(
            "INSERT INTO config.snapshot_tables "
            "(client_id, table_name, key_columns, columns, delimiter, header) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (
                definition.client_id,
                definition.table,
                list(definition.key_columns),
                json.dumps([{"name": n, "type": t} for n, t in definition.columns]),
                definition.delimiter,
                definition.header,
            ),
        )
        if other is None:
            _create_tables(conn, definition)
    return True


def _create_tables(conn: psycopg.Connection, d: SnapshotTable) -> None:
    name = sql.Identifier(d.table)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in ("client_id", *d.key_columns))
    text_columns = sql.SQL(", ").join(
        sql.SQL("{} text").format(sql.Identifier(c)) for c in d.column_names
    )
    typed_columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(d.pg_type(c))) for c in d.column_names
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE snapshot_state.{name} (client_id text NOT NULL, {cols}, "
            "PRIMARY KEY ({keys}))"
        ).format(name=name, cols=text_columns, keys=keys)
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE replica_store.{name} (client_id text NOT NULL, {cols}, "
            "_sequence bigint NOT NULL, _deleted boolean NOT NULL, PRIMARY KEY ({keys}))"
        ).format(name=name, cols=typed_columns, keys=keys)
    )
    conn.execute(
        sql.SQL(
            "CREATE VIEW replica.{name} AS SELECT client_id, {cols} FROM replica_store.{name} "
            "WHERE NOT _deleted"
        ).format(name=name, cols=sql.SQL(", ").join(sql.Identifier(c) for c in d.column_names))
    )
    # Least privilege (migration 0010_service_roles): persistence keeps the state, the applier
    # the replica; the tables belong to the registering owner, so each is granted here.
    persistence = roles.role_for("dataharvest-persistence")
    applier = roles.role_for("dataharvest-snapshot-applier")
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON snapshot_state.{} TO {}").format(
            name, sql.Identifier(str(persistence))
        )
    )
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON replica_store.{} TO {}").format(
            name, sql.Identifier(str(applier))
        )
    )
    conn.execute(
        sql.SQL("GRANT SELECT ON replica.{} TO {}").format(name, sql.Identifier(str(applier)))
    )
