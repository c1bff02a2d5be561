"""audit.file_loads: the load history of each input, and which version of it is current.

Exactly one row per input (client, entity, date) is current (a partial unique index enforces
it): the version loaded, rejected whole, or the retraction after a delete. Its load_id is the
input's sequence number in the metastore; ids only grow, and the loads of one input run one
at a time under its advisory lock, so a later state always has a larger id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from dataharvest.db import advisory_xact_lock
from dataharvest.persistence.routing import Route

COLUMNS = (
    "load_id, source_key, source_version, content_sha256, status, rows_total, rows_loaded, "
    "rows_rejected, reason, ignored_columns, finished_at"
)


@dataclass(frozen=True)
class LoadRecord:
    load_id: int
    source_key: str
    source_version: str | None
    content_sha256: str | None
    status: str
    rows_total: int
    rows_loaded: int
    rows_rejected: int
    reason: str | None
    ignored_columns: list[str]
    finished_at: datetime

    def is_version(self, key: str, version: str) -> bool:
        return self.source_key == key and self.source_version == version


def lock_input(conn: psycopg.Connection, route: Route) -> None:
    """Serialize every load of one input until the end of the current transaction."""
    advisory_xact_lock(conn, route.lock_name)


def current_load(conn: psycopg.Connection, route: Route) -> LoadRecord | None:
    with conn.cursor(row_factory=class_row(LoadRecord)) as cur:
        return cur.execute(
            f"SELECT {COLUMNS} FROM audit.file_loads "
            "WHERE client_id = %s AND entity = %s AND business_date = %s AND is_current",
            (route.client_id, route.entity, route.business_date),
        ).fetchone()


def seen_unchanged(conn: psycopg.Connection, route: Route, key: str, version: str) -> str | None:
    """The content hash of this version if an earlier delivery found it identical to the
    then current load."""
    row = conn.execute(
        "SELECT content_sha256 FROM audit.file_loads WHERE source_key = %s AND source_version = %s"
        " AND client_id = %s AND status = 'unchanged' LIMIT 1",
        (key, version, route.client_id),
    ).fetchone()
    return row[0] if row else None


def reserve_load_id(conn: psycopg.Connection) -> int:
    """A load id taken before the load's rows are written (they carry it)."""
    row = conn.execute("SELECT nextval(pg_get_serial_sequence('audit.file_loads', 'load_id'))")
    value = row.fetchone()
    assert value is not None
    return int(value[0])


def record_load(
    conn: psycopg.Connection,
    route: Route,
    *,
    load_id: int | None = None,
    key: str,
    version: str | None,
    sha256: str | None,
    status: str,
    rows_total: int = 0,
    rows_loaded: int = 0,
    rows_rejected: int = 0,
    reason: str | None = None,
    ignored_columns: tuple[str, ...] = (),
) -> LoadRecord:
    """Append a load to the history; unless it is 'unchanged' it becomes the current one."""
    current = status != "unchanged"
    if current:
        _no_longer_current(conn, route)
    with conn.cursor(row_factory=class_row(LoadRecord)) as cur:
        record = cur.execute(
            "INSERT INTO audit.file_loads (load_id, client_id, business_date, entity, "
            "source_key, source_version, content_sha256, status, rows_total, rows_loaded, "
            "rows_rejected, reason, ignored_columns, is_current) "
            "VALUES (coalesce(%s, nextval(pg_get_serial_sequence('audit.file_loads', "
            "'load_id'))), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {COLUMNS}",
            (
                load_id,
                route.client_id,
                route.business_date,
                route.entity,
                key,
                version,
                sha256,
                status,
                rows_total,
                rows_loaded,
                rows_rejected,
                reason,
                list(ignored_columns),
                current,
            ),
        ).fetchone()
    assert record is not None
    return record


def record_unroutable(
    conn: psycopg.Connection, key: str, version: str, reason: str, client_id: str | None
) -> bool:
    """Record an unroutable upload once per object version; False when already recorded."""
    advisory_xact_lock(conn, f"unroutable/{key}")
    inserted = conn.execute(
        "INSERT INTO audit.file_loads (client_id, source_key, source_version, status, reason) "
        "SELECT %(client)s, %(key)s, %(version)s, 'unroutable', %(reason)s WHERE NOT EXISTS ("
        " SELECT 1 FROM audit.file_loads WHERE source_key = %(key)s"
        " AND source_version = %(version)s AND status = 'unroutable')",
        {"client": client_id, "key": key, "version": version, "reason": reason},
    )
    return inserted.rowcount == 1


def delete_rejections(conn: psycopg.Connection, route: Route) -> None:
    """Remove the rejections of the input, whichever version they came from."""
    conn.execute(
        "DELETE FROM audit.rejections WHERE client_id = %s AND business_date = %s AND entity = %s",
        (route.client_id, route.business_date, route.entity),
    )


def complete_load(
    conn: psycopg.Connection,
    route: Route,
    load_id: int,
    *,
    status: str,
    rows_total: int,
    rows_loaded: int,
    rows_rejected: int,
    reason: str | None = None,
) -> LoadRecord:
    """A load staged in chunks ends: it becomes the input's current load ('loaded' or
    'rejected'), or 'abandoned' (never current; a newer version overtook it)."""
    current = status in ("loaded", "rejected")
    if current:
        _no_longer_current(conn, route)
    with conn.cursor(row_factory=class_row(LoadRecord)) as cur:
        record = cur.execute(
            "UPDATE audit.file_loads SET status = %s, rows_total = %s, rows_loaded = %s, "
            "rows_rejected = %s, reason = %s, is_current = %s, finished_at = clock_timestamp() "
            f"WHERE load_id = %s RETURNING {COLUMNS}",
            (status, rows_total, rows_loaded, rows_rejected, reason, current, load_id),
        ).fetchone()
    assert record is not None
    return record


def _no_longer_current(conn: psycopg.Connection, route: Route) -> None:
    """The input's current load steps down (a new one becomes current in the same transaction)."""
    conn.execute(
        "UPDATE audit.file_loads SET is_current = false "
        "WHERE client_id = %s AND entity = %s AND business_date = %s AND is_current",
        (route.client_id, route.entity, route.business_date),
    )
