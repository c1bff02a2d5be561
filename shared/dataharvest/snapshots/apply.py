"""Apply published snapshot changes to `replica.<table>` (services/snapshot_applier).

Every change carries the whole row it leaves behind (INSERT / UPDATE: the new values; DELETE:
none, a tombstone), so applying is "the change with the highest sequence per key wins":
a batch keeps the last change of each key and upserts it into `replica_store.<table>` only
where the stored row's sequence is lower. Redelivered, duplicated or re-published changes are
therefore no-ops, and the rows of a deleted key stay deleted (the tombstone keeps its sequence).
One batch is one transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dataharvest.ops import metrics
from dataharvest.snapshots import tables

STAGE = "_replica_incoming"
# The applying service (the metrics' `service` dimension).
SERVICE = "snapshot_applier"


class ChangeError(ValueError):
    """A change that can never apply (malformed, or its table is not registered)."""


@dataclass(frozen=True)
class Change:
    client_id: str
    table: str
    sequence: int
    op: str
    key: dict[str, Any]
    new: dict[str, Any] | None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Change:
        """From a published record (publish.record), as JSON text or bytes."""
        try:
            body = record
            return cls(
                client_id=str(body["client_id"]),
                table=str(body["table"]),
                sequence=int(body["sequence"]),
                op=str(body["op"]),
                key=dict(body["key"]),
                new=dict(body["new"]) if body.get("new") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ChangeError(f"not a snapshot change: {error!r}") from None

    @classmethod
    def from_kinesis(cls, kinesis_record: dict[str, Any]) -> Change:
        """From a Lambda Kinesis event record (base64 data)."""
        try:
            data = json.loads(base64.b64decode(kinesis_record["kinesis"]["data"]))
        except (KeyError, ValueError) as error:
            raise ChangeError(f"not a snapshot change: {error!r}") from None
        if not isinstance(data, dict):
            raise ChangeError("not a snapshot change: the data is not a JSON object")
        return cls.from_record(data)


def _latest(changes: Iterable[Change]) -> dict[tuple[str, str], list[Change]]:
    """Per (client, table): the change with the highest sequence of each key."""
    best: dict[tuple[str, str, str], Change] = {}
    for change in changes:
        if change.op not in ("INSERT", "UPDATE", "DELETE"):
            raise ChangeError(f"unknown op {change.op!r} (sequence {change.sequence})")
        if change.op != "DELETE" and change.new is None:
            raise ChangeError(f"{change.op} without new values (sequence {change.sequence})")
        ident = (change.client_id, change.table, json.dumps(change.key, sort_keys=True))
        if ident not in best or best[ident].sequence < change.sequence:
            best[ident] = change
    grouped: dict[tuple[str, str], list[Change]] = {}
    for (client_id, table, _), change in best.items():
        grouped.setdefault((client_id, table), []).append(change)
    return grouped


def apply_changes(conn: psycopg.Connection, changes: Iterable[Change]) -> int:
    """Apply in one transaction; returns how many rows of replica_store changed."""
    grouped = _latest(changes)
    per_table: dict[tuple[str, str], int] = {}
    with conn.transaction():
        for (client_id, table_name), group in grouped.items():
            table = tables.get(conn, client_id, table_name)
            if table is None:
                raise ChangeError(f"snapshot table {table_name} is not registered for {client_id}")
            per_table[(client_id, table_name)] = _upsert(conn, table, group)
    # After the commit: replica rows changed per table (a redelivered change changes none).
    for (client_id, table_name), rows in per_table.items():
        metrics.emit(
            SERVICE, table_name, metrics.SNAPSHOT_CHANGES_APPLIED, rows, client_id=client_id
        )
    return sum(per_table.values())


def _upsert(conn: psycopg.Connection, table: tables.SnapshotTable, group: list[Change]) -> int:
    names = table.column_names
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (cols text[], _sequence bigint, "
            "_deleted boolean) ON COMMIT DELETE ROWS"
        ).format(stage=sql.Identifier(STAGE))
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGE)))
    copy_sql = sql.SQL("COPY {} (cols, _sequence, _deleted) FROM STDIN").format(
        sql.Identifier(STAGE)
    )
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for change in group:
            values = change.new if change.op != "DELETE" else change.key
            copy.write_row(
                (
                    [_text((values or {}).get(n)) for n in names],
                    change.sequence,
                    change.op == "DELETE",
                )
            )
    typed = sql.SQL(", ").join(
        sql.SQL("cols[{}]::{}").format(sql.Literal(i + 1), sql.SQL(table.pg_type(n)))
        for i, n in enumerate(names)
    )
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in ("client_id", *table.key_columns))
    updates = sql.SQL(", ").join(
        sql.SQL("{col} = EXCLUDED.{col}").format(col=sql.Identifier(c))
        for c in [*names, "_sequence", "_deleted"]
    )
    result = conn.execute(
        sql.SQL(
            "INSERT INTO replica_store.{table} AS r (client_id, {cols}, _sequence, _deleted) "
            "SELECT %s, {typed}, _sequence, _deleted FROM {stage} "
            "ON CONFLICT ({keys}) DO UPDATE SET {updates} WHERE r._sequence < EXCLUDED._sequence"
        ).format(
            table=sql.Identifier(table.table),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in names),
            typed=typed,
            stage=sql.Identifier(STAGE),
            keys=keys,
            updates=updates,
        ),
        (table.client_id,),
    )
    return result.rowcount


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def resync(conn: psycopg.Connection, table: tables.SnapshotTable) -> int:
    """Apply the table's whole change log for its client straight from PostgreSQL (the last
    change of every key), with the same rule as the stream consumer: what the replica already
    has at that sequence or later stays. What `dataharvest dlq redrive` does for the applier's
    on-failure queue, whose records only point into the stream. Returns rows changed."""
    names = table.column_names
    value = sql.SQL("(CASE WHEN op = 'DELETE' THEN key ELSE new_values END ->> {name})::{type}")
    typed = sql.SQL(", ").join(
        value.format(name=sql.Literal(n), type=sql.SQL(table.pg_type(n))) for n in names
    )
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in ("client_id", *table.key_columns))
    updates = sql.SQL(", ").join(
        sql.SQL("{col} = EXCLUDED.{col}").format(col=sql.Identifier(c))
        for c in [*names, "_sequence", "_deleted"]
    )
    with conn.transaction():
        result = conn.execute(
            sql.SQL(
                "INSERT INTO replica_store.{table} AS r (client_id, {cols}, _sequence, _deleted) "
                "SELECT client_id, {typed}, sequence, op = 'DELETE' FROM ("
                " SELECT DISTINCT ON (key) * FROM snapshots.changes"
                " WHERE client_id = %s AND table_name = %s ORDER BY key, sequence DESC) c "
                "ON CONFLICT ({keys}) DO UPDATE SET {updates} "
                "WHERE r._sequence < EXCLUDED._sequence"
            ).format(
                table=sql.Identifier(table.table),
                cols=sql.SQL(", ").join(sql.Identifier(c) for c in names),
                typed=typed,
                keys=keys,
                updates=updates,
            ),
            (table.client_id, table.table),
        )
    return result.rowcount


def resync_all(conn: psycopg.Connection) -> int:
    """`resync` for every registered snapshot table of every client."""
    return sum(resync(conn, table) for table in tables.list_tables(conn))
