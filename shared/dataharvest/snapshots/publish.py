"""Publish a table's change log to the Kinesis stream, in sequence order, from a cursor.

`snapshots.table_state.published_sequence` is the last sequence known to be on the stream. A
batch is read after the cursor, sent with PutRecords (the entries a partial failure refused are
sent again, alone, until they are in), and the cursor moves past the batch only then. After a
failure the next run starts at the cursor: nothing is skipped; at most the one batch in flight
when a process died is sent again, and a consumer recognizes it by `sequence`.

The partition key is client/table/key, so the changes of one key stay in one shard, in order;
a batch never holds the same key twice (a retry of the first could otherwise land after the
second).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import boto3
import psycopg

from dataharvest.observability import logger
from dataharvest.ops import metrics

# PutRecords takes at most 500 records and 5 MiB per request.
MAX_RECORDS = 500
MAX_BATCH_BYTES = 4 << 20
MAX_PARTITION_KEY = 256
PUT_ATTEMPTS = 8
STREAM_ENV = "SNAPSHOT_STREAM_NAME"

# Test-only fault injection: called with "before_put" / "after_put" around each PutRecords.
FaultHook = Callable[[str], None]


class PublishError(RuntimeError):
    """Some records could not be put after every retry; the cursor stays before them."""


@lru_cache(maxsize=1)
def kinesis_client() -> Any:
    return boto3.client("kinesis")


def stream_name() -> str:
    name = os.environ.get(STREAM_ENV)
    if not name:
        raise RuntimeError(f"{STREAM_ENV} is not set: no stream to publish snapshot changes to")
    return name


def partition_key(client_id: str, table: str, key: dict[str, Any]) -> str:
    """client/table/key values; hashed when longer than Kinesis allows (still one per key)."""
    values = "/".join(str(key[k]) for k in sorted(key))
    text = f"{client_id}/{table}/{values}"
    if len(text.encode()) <= MAX_PARTITION_KEY:
        return text
    return f"{client_id}/{table}/#" + hashlib.sha256(values.encode()).hexdigest()


def record(client_id: str, table: str, row: tuple[Any, ...]) -> dict[str, Any]:
    """One change as it goes on the stream (the consumer's contract, docs/SPEC.md §7)."""
    sequence, version, op, key, old, new = row
    return {
        "client_id": client_id,
        "table": table,
        "export_version": version,
        "sequence": sequence,
        "op": op,
        "key": key,
        "old": old,
        "new": new,
    }


def _pending(
    conn: psycopg.Connection, client_id: str, table: str, after: int
) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT sequence, export_version, op, key, old_values, new_values FROM snapshots.changes "
        "WHERE client_id = %s AND table_name = %s AND sequence > %s ORDER BY sequence LIMIT %s",
        (client_id, table, after, MAX_RECORDS),
    ).fetchall()


def _batch(
    client_id: str, table: str, rows: list[tuple[Any, ...]]
) -> list[tuple[int, dict[str, Any]]]:
    """The longest prefix that fits one PutRecords with every partition key once."""
    out: list[tuple[int, dict[str, Any]]] = []
    keys: set[str] = set()
    size = 0
    for row in rows:
        data = json.dumps(record(client_id, table, row), separators=(",", ":")).encode()
        key = partition_key(client_id, table, row[3])
        if key in keys or (out and size + len(data) + len(key) > MAX_BATCH_BYTES):
            break
        keys.add(key)
        size += len(data) + len(key)
        out.append((row[0], {"Data": data, "PartitionKey": key}))
    return out


def _put(stream: str, entries: list[dict[str, Any]]) -> None:
    """Put every entry; resend those a partial failure refused (throttling), with backoff."""
    client = kinesis_client()
    waiting = entries
    for attempt in range(PUT_ATTEMPTS):
        response = client.put_records(StreamName=stream, Records=waiting)
        if not response.get("FailedRecordCount"):
            return
        waiting = [
            entry
            for entry, result in zip(waiting, response["Records"], strict=True)
            if result.get("ErrorCode")
        ]
        time.sleep(min(2.0, 0.05 * 2**attempt))
    raise PublishError(f"{len(waiting)} record(s) still refused after {PUT_ATTEMPTS} attempts")


def publish_pending(
    conn: psycopg.Connection,
    client_id: str,
    table: str,
    *,
    stream: str | None = None,
    fault: FaultHook | None = None,
) -> int:
    """Send every change after the cursor; returns how many were sent. Call it holding the
    table's lock (ingest.py), so one publisher moves a cursor at a time."""
    stream = stream or stream_name()
    sent = 0
    while True:
        cursor = conn.execute(
            "SELECT published_sequence FROM snapshots.table_state "
            "WHERE client_id = %s AND table_name = %s",
            (client_id, table),
        ).fetchone()
        if cursor is None:
            return sent
        rows = _pending(conn, client_id, table, cursor[0])
        if not rows:
            break
        batch = _batch(client_id, table, rows)
        if fault:
            fault("before_put")
        _put(stream, [entry for _, entry in batch])
        if fault:
            fault("after_put")
        with conn.transaction():
            conn.execute(
                "UPDATE snapshots.table_state SET published_sequence = %s, updated_at = now() "
                "WHERE client_id = %s AND table_name = %s AND published_sequence < %s",
                (batch[-1][0], client_id, table, batch[-1][0]),
            )
        sent += len(batch)
    with conn.transaction():
        conn.execute(
            "UPDATE snapshots.exports e SET published_at = now() FROM snapshots.table_state t "
            "WHERE e.client_id = %s AND e.table_name = %s AND e.status = 'applied' "
            "AND e.published_at IS NULL AND t.client_id = e.client_id "
            "AND t.table_name = e.table_name "
            "AND COALESCE(e.last_sequence, 0) <= t.published_sequence",
            (client_id, table),
        )
    if sent:
        logger.info(
            "snapshot changes published",
            extra={"client_id": client_id, "table": table, "records": sent},
        )
        # Counted once the cursor is past them: a batch sent again after a crash counts twice
        # on the stream and here alike.
        metrics.emit(
            "persistence", table, metrics.SNAPSHOT_CHANGES_PUBLISHED, sent, client_id=client_id
        )
    return sent
