"""Retention: raw inputs older than their client's retention leave PostgreSQL whole.

An input whose business date is more than `retention_days` (per client, default 400) before
the day of the run is retracted the way a deleted upload is (its leaves detached and dropped,
its rejections removed, a 'retracted' load recorded with the reason, the metastore item
updated so the outputs derived from it are retracted too), each input under its own lock and
in its own transaction. Then the emptied day and client partitions are dropped. Running it
twice changes nothing the second time.

The S3 object stays: a new upload of an expired input loads again and is expired again by the
next run (the lake tier is where history lives).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import psycopg

from dataharvest.config import DEFAULT_RETENTION_DAYS
from dataharvest.observability import logger
from dataharvest.persistence import storage
from dataharvest.persistence.chunks import abandon_stale_loads
from dataharvest.persistence.load import retract
from dataharvest.persistence.mark import mark_input
from dataharvest.persistence.records import current_load, lock_input
from dataharvest.persistence.routing import Route


@dataclass(frozen=True)
class Expired:
    client_id: str
    entity: str
    business_date: date
    load_id: int  # the retraction's
    retention_days: int


def expired_inputs(
    conn: psycopg.Connection, today: date, client_id: str | None = None
) -> list[tuple[Route, str, int]]:
    """(input, source key, retention days) of every current input past its retention."""
    rows = conn.execute(
        """
        SELECT f.client_id, f.entity, f.business_date, f.source_key,
               coalesce(s.retention_days, %(default)s) AS days
        FROM audit.file_loads f
        LEFT JOIN config.client_settings s USING (client_id)
        WHERE f.is_current AND f.status <> 'retracted'
          AND f.business_date < %(today)s::date - coalesce(s.retention_days, %(default)s)
          AND (%(client)s::text IS NULL OR f.client_id = %(client)s)
        ORDER BY f.business_date, f.client_id, f.entity
        """,
        {"today": today, "default": DEFAULT_RETENTION_DAYS, "client": client_id},
    ).fetchall()
    return [
        (Route(client_id, entity, business_date, gzip=key.endswith(".gz")), key, days)
        for client_id, entity, business_date, key, days in rows
    ]


def apply_retention(
    conn: psycopg.Connection, today: date | None = None, client_id: str | None = None
) -> list[Expired]:
    """Retract every expired input (of one client, or all) and drop emptied partitions."""
    today = today or date.today()
    if client_id is None:
        abandon_stale_loads(conn)  # housekeeping of the same kind: chunked loads never finished
    expired: list[Expired] = []
    for route, key, days in expired_inputs(conn, today, client_id):
        with conn.transaction():
            lock_input(conn, route)
            current = current_load(conn, route)
            if current is None or current.status == "retracted" or current.source_key != key:
                continue  # changed since it was listed: the next run decides again
            reason = (
                f"expired: business date {route.business_date} is more than {days} days "
                f"before {today} (the client's retention)"
            )
            record = retract(conn, route, key=key, reason=reason)
        mark_input(route, record, conn)
        logger.info("input expired", extra={"key": key, "load_id": record.load_id})
        expired.append(
            Expired(route.client_id, route.entity, route.business_date, record.load_id, days)
        )
    # Empty partitions of days every client has let go of (a load of a day that recent may be
    # about to use its partition).
    row = conn.execute(
        "SELECT least(min(retention_days), %s) FROM config.client_settings",
        (DEFAULT_RETENTION_DAYS,),
    ).fetchone()
    shortest = row[0] if row and row[0] is not None else DEFAULT_RETENTION_DAYS
    storage.drop_empty_parents(conn, before=today - timedelta(days=shortest))
    return expired
