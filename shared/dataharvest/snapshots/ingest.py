"""One snapshot export upload: record it, apply its delta, publish, update the metastore.

Exports of one (client, table) are handled one at a time under a session advisory lock held
from the first check to the metastore write; other tables and clients run concurrently.

- The object's current version decides (the S3 event is a hint): a deleted key changes
  nothing (an export is not retracted); an object version already recorded is a redelivery:
  nothing is applied again, only what may be left to publish is published.
- An export whose version is not newer than the last applied one is recorded as skipped with
  the reason. A missing intermediate version is not waited for: the delta is always against
  the last applied state.
- The delta commits in one transaction with its change log and statistics (delta.py); an
  export that cannot be applied is recorded as rejected with the reason, and the state stays.
- Publishing resumes from the table's cursor (publish.py); the metastore item of the export's
  business date gets `<table>_snapshot_version` and the counts once its changes are out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from dataharvest import db, metastore
from dataharvest.observability import logger
from dataharvest.ops import metrics
from dataharvest.persistence import source
from dataharvest.persistence.exceptions import FileRejected, UnroutableKey
from dataharvest.persistence.settings import get_settings
from dataharvest.snapshots import delta, publish, tables
from dataharvest.snapshots.routing import SnapshotRoute

FaultHook = Callable[[str], None]
# The service that computes and publishes deltas (the metrics' `service` dimension).
SERVICE = "persistence"


@dataclass(frozen=True)
class ExportRecord:
    export_id: int
    client_id: str
    table_name: str
    export_version: str
    source_key: str
    source_version: str
    business_date: date | None
    status: str
    reason: str | None
    rows_in_export: int | None
    inserts: int | None
    updates: int | None
    deletes: int | None
    unchanged: int | None
    first_sequence: int | None
    last_sequence: int | None
    published_at: datetime | None


COLUMNS = ", ".join(ExportRecord.__dataclass_fields__)


def exports_of(
    conn: psycopg.Connection, client_id: str, table: str | None = None
) -> list[ExportRecord]:
    where, params = "client_id = %s", [client_id]
    if table:
        where, params = where + " AND table_name = %s", [*params, table]
    with conn.cursor(row_factory=class_row(ExportRecord)) as cur:
        return cur.execute(
            f"SELECT {COLUMNS} FROM snapshots.exports WHERE {where} ORDER BY export_id", params
        ).fetchall()


def _recorded(
    conn: psycopg.Connection, route: SnapshotRoute, key: str, version: str
) -> ExportRecord | None:
    with conn.cursor(row_factory=class_row(ExportRecord)) as cur:
        return cur.execute(
            f"SELECT {COLUMNS} FROM snapshots.exports WHERE client_id = %s AND table_name = %s "
            "AND source_key = %s AND source_version = %s",
            (route.client_id, route.table, key, version),
        ).fetchone()


def _record(
    conn: psycopg.Connection, route: SnapshotRoute, key: str, version: str, **values: Any
) -> ExportRecord:
    values = {
        "client_id": route.client_id,
        "table_name": route.table,
        "export_version": route.export_version,
        "source_key": key,
        "source_version": version,
        "business_date": route.business_date or datetime.now(UTC).date(),
        **values,
    }
    names = ", ".join(values)
    placeholders = ", ".join(f"%({n})s" for n in values)
    with conn.cursor(row_factory=class_row(ExportRecord)) as cur:
        recorded = cur.execute(
            f"INSERT INTO snapshots.exports ({names}) VALUES ({placeholders}) RETURNING {COLUMNS}",
            values,
        ).fetchone()
    assert recorded is not None  # INSERT ... RETURNING returns its row
    return recorded


def handle_upload(
    bucket: str,
    key: str,
    route: SnapshotRoute,
    *,
    conn: psycopg.Connection,
    fault: FaultHook | None = None,
) -> ExportRecord | None:
    """Reconcile one snapshot key with S3 (see the module docstring). Raises UnroutableKey when
    the table is not registered for the client; database, S3, Kinesis and DynamoDB errors raise
    (the delivery is retried and resumes where it stopped)."""
    table = tables.get(conn, route.client_id, route.table)
    if table is None:
        raise UnroutableKey(
            key,
            f"snapshot table {route.table!r} is not registered for client {route.client_id} "
            "(dataharvest snapshots register)",
        )
    db.advisory_lock(conn, route.lock_name)
    try:
        obj = source.head(bucket, key)
        if obj is None:
            logger.info("snapshot export removed: an export is never retracted", extra={"key": key})
            return None
        record = _recorded(conn, route, key, obj.version)
        if record is None:
            record = _apply(conn, route, table, key, obj, fault)
        publish.publish_pending(conn, route.client_id, route.table, fault=fault)
        if record.status == "applied":
            _publish_metastore(record)
        return record
    finally:
        if not conn.closed and not conn.broken:
            db.advisory_unlock(conn, route.lock_name)


def _apply(
    conn: psycopg.Connection,
    route: SnapshotRoute,
    table: tables.SnapshotTable,
    key: str,
    obj: source.ObjectVersion,
    fault: FaultHook | None,
) -> ExportRecord:
    conn.execute(
        "INSERT INTO snapshots.table_state (client_id, table_name) VALUES (%s, %s) "
        "ON CONFLICT DO NOTHING",
        (route.client_id, route.table),
    )
    state = conn.execute(
        "SELECT last_version, last_sequence FROM snapshots.table_state "
        "WHERE client_id = %s AND table_name = %s",
        (route.client_id, route.table),
    ).fetchone()
    assert state is not None  # inserted just above
    last_version, last_sequence = state
    if last_version is not None and route.export_version <= last_version:
        reason = (
            f"export version {route.export_version} is not newer than the last applied "
            f"{last_version}"
        )
        logger.warning("snapshot export skipped", extra={"key": key, "reason": reason})
        with conn.transaction():
            return _record(conn, route, key, obj.version, status="skipped", reason=reason)
    limits = get_settings(conn, route.client_id).inflation_limits
    stream = source.SourceStream(obj, route.gzip, limits)
    try:
        with conn.transaction():
            stats = delta.apply_delta(
                conn, table, route.export_version, stream.chunks(), last_sequence
            )
            changed = stats.inserts + stats.updates + stats.deletes
            conn.execute(
                "UPDATE snapshots.table_state SET last_version = %s, "
                "last_sequence = last_sequence + %s, updated_at = now() "
                "WHERE client_id = %s AND table_name = %s",
                (route.export_version, changed, route.client_id, route.table),
            )
            record = _record(
                conn,
                route,
                key,
                obj.version,
                status="applied",
                rows_in_export=stats.rows,
                inserts=stats.inserts,
                updates=stats.updates,
                deletes=stats.deletes,
                unchanged=stats.unchanged,
                first_sequence=stats.first_sequence,
                last_sequence=stats.last_sequence,
            )
            if fault:
                fault("before_commit")
    except (delta.ExportRejected, FileRejected) as rejection:
        logger.warning("snapshot export rejected", extra={"key": key, "reason": rejection.reason})
        with conn.transaction():
            return _record(
                conn, route, key, obj.version, status="rejected", reason=rejection.reason
            )
    finally:
        stream.close()
    logger.info(
        "snapshot export applied",
        extra={"key": key, "rows": stats.rows, "changes": changed},
    )
    delta_metrics(route, key, stats)
    return record


def delta_metrics(route: SnapshotRoute, key: str, stats: delta.DeltaStats) -> None:
    """The applied export's rows by what the delta found, once per export (a redelivery finds
    the export recorded and applies nothing)."""
    for name, value in (
        (metrics.SNAPSHOT_ROWS_INSERTED, stats.inserts),
        (metrics.SNAPSHOT_ROWS_UPDATED, stats.updates),
        (metrics.SNAPSHOT_ROWS_DELETED, stats.deletes),
        (metrics.SNAPSHOT_ROWS_UNCHANGED, stats.unchanged),
    ):
        metrics.emit(
            SERVICE,
            route.table,
            name,
            value,
            client_id=route.client_id,
            key=key,
            export_version=route.export_version,
        )


def metastore_attributes(record: ExportRecord) -> dict[str, object]:
    prefix = f"{record.table_name}_snapshot"
    return {
        f"{prefix}_version": record.export_version,
        f"{prefix}_rows": record.rows_in_export,
        f"{prefix}_inserts": record.inserts,
        f"{prefix}_updates": record.updates,
        f"{prefix}_deletes": record.deletes,
        f"{prefix}_unchanged": record.unchanged,
        f"{prefix}_updated_at": datetime.now(UTC).isoformat(),
    }


def _publish_metastore(record: ExportRecord) -> None:
    """The export's counts on the item of its business date, unless a newer export of the same
    table and date is there already (a late redelivery does not move it back)."""
    attributes = metastore_attributes(record)
    day = record.business_date.strftime("%Y%m%d") if record.business_date else None
    if day is None:
        return
    written = metastore.update_attributes(
        record.client_id,
        day,
        attributes,
        condition="attribute_not_exists(#version) OR #version <= :version",
        condition_names={"#version": f"{record.table_name}_snapshot_version"},
        condition_values={":version": record.export_version},
    )
    if written is None:
        logger.info("metastore has a newer snapshot export", extra={"table": record.table_name})
