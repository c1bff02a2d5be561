"""The delta of one full export against the table's current state, set-based in PostgreSQL.

In ONE transaction (the caller's): COPY the export into a temporary table (every column as
text), check it (no empty key, no duplicate key), compare it with `snapshot_state.<table>` by a
FULL OUTER JOIN on the key that keeps the rows whose key is on one side only or whose other
columns differ (`ROW(...) IS DISTINCT FROM ROW(...)`: NULL differs from ''), check the declared
types of what is new, then update the current state, append the change log with consecutive
sequence numbers, and record the export's statistics. Only the changed rows are ever touched
row by row.

Values compare as exported text (a re-export that writes `1.0` for `1.00` updates the row).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dataharvest.snapshots.tables import SnapshotTable

STAGE = "_snapshot_stage"
DELTA = "_snapshot_delta"
# The delta's hash aggregate (duplicate keys) and hash join (stage vs state) hold a whole export
# (about 200 bytes a row with old and new values): with the default 4 MB they spill to disk in
# many batches. Per transaction only (SET LOCAL); hash nodes get hash_mem_multiplier (2) times it.
WORK_MEM = "256MB"
# jsonb_build_object takes at most 100 arguments: build wider objects in pieces.
JSON_PAIRS_PER_CALL = 50


class ExportRejected(Exception):
    """The export cannot be applied (bad header, bad value, duplicate key); nothing changed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DeltaStats:
    rows: int
    inserts: int
    updates: int
    deletes: int
    first_sequence: int | None  # None when nothing changed
    last_sequence: int | None

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserts - self.updates


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _columns(names: list[str], prefix: str = "") -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(prefix + n) for n in names)


def _split_header(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """(the first line, the rest of the bytes). The header has no quoted newline."""
    buffered = b""
    for chunk in chunks:
        buffered += chunk
        end = buffered.find(b"\n")
        if end >= 0:
            return buffered[: end + 1], _prepend(buffered[end + 1 :], chunks)
        if len(buffered) > 1 << 20:
            raise ExportRejected("the header line is longer than 1 MiB")
    return buffered, iter(())


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _file_columns(table: SnapshotTable, header_line: bytes) -> list[str]:
    """The stage's columns in file order: registered columns by (case-insensitive) header name,
    `_ignored_<n>` for the others. Raises ExportRejected when a column is missing or twice."""
    try:
        text = header_line.decode("utf-8")
    except UnicodeDecodeError:
        raise ExportRejected("the header is not valid UTF-8") from None
    names = next(csv.reader([text.rstrip("\r\n")], delimiter=table.delimiter), [])
    names = [n.strip().lower() for n in names]
    wanted = set(table.column_names)
    seen: set[str] = set()
    out: list[str] = []
    for index, name in enumerate(names):
        if name in wanted:
            if name in seen:
                raise ExportRejected(f"the header names column {name} twice")
            seen.add(name)
            out.append(name)
        else:
            out.append(f"_ignored_{index}")
    missing = [c for c in table.column_names if c not in seen]
    if missing:
        raise ExportRejected(
            f"the header lacks column(s) {', '.join(missing)} (found: {', '.join(names)})"
        )
    return out


def stage_export(conn: psycopg.Connection, table: SnapshotTable, chunks: Iterator[bytes]) -> int:
    """COPY the export's bytes into a temporary table dropped at commit; returns its rows.

    Temporary rather than UNLOGGED (neither writes WAL; a temporary table needs no schema the
    service may create in, and no name unique across concurrent exports), no index (the join
    hashes the state side) and no ANALYZE (the planner sizes the stage from its pages: the
    plan is the same with statistics, which cost 0.5 s at 1M rows). docs/DECISIONS.md."""
    if table.header:
        header_line, chunks = _split_header(chunks)
        file_columns = _file_columns(table, header_line)
    else:
        file_columns = table.column_names
    stage_columns = sql.SQL(", ").join(
        sql.SQL("{} text").format(_ident(c)) for c in dict.fromkeys(file_columns)
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(_ident(STAGE), stage_columns)
    )
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, DELIMITER {})").format(
        _ident(STAGE), _columns(file_columns), sql.Literal(table.delimiter)
    )
    try:
        with conn.cursor() as cur:
            with cur.copy(copy) as pipe:
                for chunk in chunks:
                    pipe.write(chunk)
            rows = cur.rowcount
    except psycopg.errors.DataError as error:
        raise ExportRejected(f"PostgreSQL refused the file: {_first_line(error)}") from None
    return rows


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _key_match(table: SnapshotTable, left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(_ident(left), _ident(k), _ident(right), _ident(k))
        for k in table.key_columns
    )


def _changed(table: SnapshotTable) -> sql.Composable:
    """The join's filter: the key on one side only, or a value column that differs. Compared
    column by column (no hash of every staged row): IS DISTINCT FROM tells NULL from ''."""
    first_key = _ident(table.key_columns[0])
    one_side = sql.SQL("i.{k} IS NULL OR s.{k} IS NULL").format(k=first_key)
    values = table.value_columns
    if not values:
        return one_side
    return sql.SQL("{one_side} OR ROW({new}) IS DISTINCT FROM ROW({old})").format(
        one_side=one_side,
        new=sql.SQL(", ").join(sql.SQL("i.{}").format(_ident(c)) for c in values),
        old=sql.SQL(", ").join(sql.SQL("s.{}").format(_ident(c)) for c in values),
    )


def _json_object(names: list[str], prefix: str) -> sql.Composable:
    parts = []
    for start in range(0, len(names), JSON_PAIRS_PER_CALL):
        pairs = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(n), _ident(prefix + n))
            for n in names[start : start + JSON_PAIRS_PER_CALL]
        )
        parts.append(sql.SQL("jsonb_build_object({})").format(pairs))
    return sql.SQL(" || ").join(parts)


def check_export(conn: psycopg.Connection, table: SnapshotTable) -> None:
    """Every key column filled and every key once; ExportRejected otherwise. One aggregate over
    the stage: GROUP BY puts the rows with an empty key column in groups of their own."""
    keys = _columns(list(table.key_columns))
    empty_key = sql.SQL(" OR ").join(
        sql.SQL("{} IS NULL").format(_ident(k)) for k in table.key_columns
    )
    found = conn.execute(
        sql.SQL(
            "SELECT {empty} AS empty, {keys}, count(*) FROM {stage} GROUP BY {keys} "
            "HAVING count(*) > 1 OR {empty} ORDER BY 1 DESC LIMIT 3"
        ).format(keys=keys, stage=_ident(STAGE), empty=empty_key)
    ).fetchall()
    if found and found[0][0]:
        empty = sum(row[-1] for row in found if row[0])
        raise ExportRejected(
            f"row(s) have an empty key column ({', '.join(table.key_columns)}), e.g. "
            + "; ".join(
                ", ".join(f"{k}={v}" for k, v in zip(table.key_columns, row[1:-1], strict=True))
                for row in found
                if row[0]
            )
            + f" ({empty} row(s))"
        )
    if found:
        examples = "; ".join(
            ", ".join(f"{k}={v}" for k, v in zip(table.key_columns, row[1:-1], strict=True))
            + f" ({row[-1]} rows)"
            for row in found
        )
        raise ExportRejected(f"keys appear more than once, e.g. {examples}")


def compute_delta(conn: psycopg.Connection, table: SnapshotTable) -> None:
    """The changed rows into a temporary table: op, new_<col> and old_<col>."""
    names = table.column_names
    new_cols = sql.SQL(", ").join(
        sql.SQL("i.{} AS {}").format(_ident(c), _ident("new_" + c)) for c in names
    )
    old_cols = sql.SQL(", ").join(
        sql.SQL("s.{} AS {}").format(_ident(c), _ident("old_" + c)) for c in names
    )
    first_key = _ident(table.key_columns[0])
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {delta} ON COMMIT DROP AS "
            "SELECT CASE WHEN s.{k} IS NULL THEN 'INSERT' WHEN i.{k} IS NULL THEN 'DELETE' "
            "ELSE 'UPDATE' END AS op, {new_cols}, {old_cols} "
            "FROM {stage} i "
            "FULL JOIN (SELECT {state_cols} FROM snapshot_state.{table} WHERE client_id = %s) s "
            "ON {match} WHERE {changed}"
        ).format(
            delta=_ident(DELTA),
            k=first_key,
            new_cols=new_cols,
            old_cols=old_cols,
            stage=_ident(STAGE),
            state_cols=_columns(names),
            table=_ident(table.table),
            match=_key_match(table, "i", "s"),
            changed=_changed(table),
        ),
        (table.client_id,),
    )


def check_types(conn: psycopg.Connection, table: SnapshotTable) -> None:
    """Every new value of a typed column casts to its type; ExportRejected naming the first
    that does not (only the changed rows are checked: unchanged ones were checked before)."""
    typed = [c for c, kind in table.columns if kind != "text"]
    if not typed:
        return
    for column in typed:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("SELECT count({col}::{type}) FROM {delta} WHERE op <> 'DELETE'").format(
                        col=_ident("new_" + column),
                        type=sql.SQL(table.pg_type(column)),
                        delta=_ident(DELTA),
                    )
                )
        except psycopg.errors.DataError as error:
            raise ExportRejected(f"column {column}: {_first_line(error)}") from None


def write_delta(
    conn: psycopg.Connection, table: SnapshotTable, export_version: str, base_sequence: int
) -> tuple[int, int, int]:
    """Apply the delta to the current state and append the change log from base_sequence + 1.
    Returns (inserts, updates, deletes)."""
    names = table.column_names
    keys = list(table.key_columns)
    counts: dict[str, int] = dict(
        conn.execute(
            sql.SQL("SELECT op, count(*) FROM {} GROUP BY op").format(_ident(DELTA))
        ).fetchall()
    )
    inserts, updates, deletes = (counts.get(op, 0) for op in ("INSERT", "UPDATE", "DELETE"))
    if not (inserts or updates or deletes):
        return 0, 0, 0
    key_of_change = sql.SQL(", ").join(
        sql.SQL("{}, COALESCE({}, {})").format(
            sql.Literal(k), _ident("new_" + k), _ident("old_" + k)
        )
        for k in keys
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO snapshots.changes "
            "(client_id, table_name, sequence, export_version, op, key, old_values, new_values) "
            "SELECT %s, %s, %s + row_number() OVER (), %s, op, jsonb_build_object({key}), "
            "CASE WHEN op <> 'INSERT' THEN {old} END, CASE WHEN op <> 'DELETE' THEN {new} END "
            "FROM {delta}"
        ).format(
            key=key_of_change,
            old=_json_object(names, "old_"),
            new=_json_object(names, "new_"),
            delta=_ident(DELTA),
        ),
        (table.client_id, table.table, base_sequence, export_version),
    )
    if updates or deletes:
        conn.execute(
            sql.SQL(
                "DELETE FROM snapshot_state.{table} s USING {delta} d "
                "WHERE s.client_id = %s AND d.op <> 'INSERT' AND {match}"
            ).format(
                table=_ident(table.table),
                delta=_ident(DELTA),
                match=sql.SQL(" AND ").join(
                    sql.SQL("s.{} = d.{}").format(_ident(k), _ident("old_" + k)) for k in keys
                ),
            ),
            (table.client_id,),
        )
    if inserts or updates:
        conn.execute(
            sql.SQL(
                "INSERT INTO snapshot_state.{table} (client_id, {cols}) "
                "SELECT %s, {new_cols} FROM {delta} WHERE op <> 'DELETE'"
            ).format(
                table=_ident(table.table),
                cols=_columns(names),
                new_cols=_columns(names, "new_"),
                delta=_ident(DELTA),
            ),
            (table.client_id,),
        )
    return inserts, updates, deletes


def apply_delta(
    conn: psycopg.Connection,
    table: SnapshotTable,
    export_version: str,
    chunks: Iterator[bytes],
    base_sequence: int,
) -> DeltaStats:
    """Stage, check, compare and write, inside the caller's transaction. Raises ExportRejected
    (the caller rolls back) when the export cannot be applied."""
    conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(WORK_MEM)))
    rows = stage_export(conn, table, chunks)
    check_export(conn, table)
    compute_delta(conn, table)
    check_types(conn, table)
    inserts, updates, deletes = write_delta(conn, table, export_version, base_sequence)
    changed = inserts + updates + deletes
    return DeltaStats(
        rows=rows,
        inserts=inserts,
        updates=updates,
        deletes=deletes,
        first_sequence=base_sequence + 1 if changed else None,
        last_sequence=base_sequence + changed if changed else None,
    )
