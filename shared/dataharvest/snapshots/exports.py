"""`dataharvest export snapshot-changes`: one export's change log, CSV or JSON.

JSON: an array of {sequence, export_version, op, <key columns by name>, old, new} (old/new
objects of every column, values as exported text, null when absent). CSV: sequence,
export_version, op, the key columns, then old_<col> and new_<col> for every other column.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import psycopg

from dataharvest.exports import neutralize
from dataharvest.snapshots.tables import SnapshotTable


def change_rows(
    conn: psycopg.Connection, table: SnapshotTable, export_version: str
) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT sequence, export_version, op, key, old_values, new_values FROM snapshots.changes "
        "WHERE client_id = %s AND table_name = %s AND export_version = %s ORDER BY sequence",
        (table.client_id, table.table, export_version),
    ).fetchall()
    return [
        {
            "sequence": sequence,
            "export_version": version,
            "op": op,
            **{k: key.get(k) for k in table.key_columns},
            "old": old,
            "new": new,
        }
        for sequence, version, op, key, old, new in rows
    ]


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=2)


def to_csv(table: SnapshotTable, records: list[dict[str, Any]], raw: bool = False) -> str:
    values = table.value_columns
    header = [
        "sequence",
        "export_version",
        "op",
        *table.key_columns,
        *(f"old_{c}" for c in values),
        *(f"new_{c}" for c in values),
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        old, new = record["old"] or {}, record["new"] or {}
        cells = [
            record["sequence"],
            record["export_version"],
            record["op"],
            *(record[k] for k in table.key_columns),
            *(old.get(c) for c in values),
            *(new.get(c) for c in values),
        ]
        writer.writerow(
            [
                neutralize(c) if isinstance(c, str) and not raw and i > 2 else c
                for i, c in enumerate(cells)
            ]
        )
    return buffer.getvalue()
