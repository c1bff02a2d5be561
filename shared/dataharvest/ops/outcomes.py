"""What became of an upload: the operational side effects of a load (metrics, the partner's
notice and the alarm of a whole-file rejection, the rejection-ratio alarm, clearing a late
input), and the answers the CLI prints per key (`dataharvest run` / `remove` / `uploads`).

`input_marked` is called by persistence every time it makes the metastore show a load
(mark.mark_input), after the database commit: on the first delivery and on every
redelivery of the same version. Everything in it is idempotent (notices once per cause), and
the metrics are counted only when the metastore write happened (`written`), i.e. once per load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from dataharvest.ops import alarms, late, metrics, notices

DEFAULT_ALARM_REJECT_RATIO = Decimal("0.05")


def alarm_reject_ratio(conn: psycopg.Connection, client_id: str) -> Decimal:
    row = conn.execute(
        "SELECT reject_ratio_threshold FROM config.client_alarms WHERE client_id = %s",
        (client_id,),
    ).fetchone()
    return row[0] if row else DEFAULT_ALARM_REJECT_RATIO


def set_alarm_reject_ratio(conn: psycopg.Connection, client_id: str, value: str) -> Decimal:
    try:
        ratio = Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{value!r} is not a number between 0 and 1") from None
    if not ratio.is_finite() or not 0 <= ratio <= 1:
        raise ValueError(f"{value!r} is not a number between 0 and 1")
    conn.execute(
        "INSERT INTO config.client_alarms (client_id, reject_ratio_threshold) VALUES (%s, %s) "
        "ON CONFLICT (client_id) DO UPDATE SET reject_ratio_threshold = excluded"
        ".reject_ratio_threshold, updated_at = now()",
        (client_id, ratio),
    )
    return ratio


def file_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def input_marked(
    conn: psycopg.Connection,
    client_id: str,
    entity: str,
    business_date: date,
    record: Any,
    written: bool,
) -> None:
    """Persistence made the metastore show `record` (a persistence.records.LoadRecord)."""
    log = {"client_id": client_id, "key": record.source_key, "date": f"{business_date:%Y%m%d}"}
    if record.status in ("loaded", "rejected"):
        with conn.transaction():
            late.input_arrived(conn, client_id, entity, business_date)
    if record.status == "rejected":
        cause = "/".join(
            (
                "file_rejected",
                entity,
                f"{business_date:%Y%m%d}",
                record.content_sha256 or record.source_version or "",
                hashlib.sha256((record.reason or "").encode()).hexdigest()[:16],
            )
        )
        notice = notices.Notice(
            client_id,
            business_date,
            cause,
            f"{file_name(record.source_key)}: rejected whole: {record.reason}",
        )
        # The alarm first: should raising it fail, the retry finds no notice and raises it
        # again (a repeated breach within the alarm's window notifies nobody twice).
        if not notices.exists(conn, client_id, cause):
            alarms.breach(
                alarms.FILES_REJECTED,
                f"{client_id}: {record.source_key} rejected whole: {record.reason}",
                **log,
            )
        notices.notify(conn, notice)
    if not written:
        return
    if record.status == "loaded":
        metrics.emit("persistence", entity, metrics.FILES_LOADED, 1, **log)
        metrics.emit("persistence", entity, metrics.ROWS_LOADED, record.rows_loaded, **log)
        metrics.emit("persistence", entity, metrics.ROWS_REJECTED, record.rows_rejected, **log)
        total = record.rows_total
        threshold = alarm_reject_ratio(conn, client_id)
        if total and Decimal(record.rows_rejected) / total > threshold:
            ratio = Decimal(record.rows_rejected) / total
            metrics.emit("persistence", entity, metrics.REJECTION_RATIO_BREACHES, 1, **log)
            alarms.breach(
                alarms.REJECTION_RATIO,
                f"{client_id}: {record.source_key}: {record.rows_rejected} of {total} rows "
                f"rejected ({ratio:.1%}), above this client's alarm threshold {threshold}",
                **log,
            )
    elif record.status == "rejected":
        metrics.emit("persistence", entity, metrics.FILES_REJECTED, 1, reason=record.reason, **log)


def upload_unroutable(
    conn: psycopg.Connection, client_id: str | None, key: str, reason: str, new: bool
) -> None:
    """An upload could not be routed: the metric and alarm (once per object version), and the
    partner's notice when the key names a client (once per key and reason)."""
    if new:
        metrics.emit(
            "persistence",
            "unroutable",
            metrics.FILES_UNROUTABLE,
            1,
            key=key,
            client_id=client_id,
            reason=reason,
        )
        alarms.breach(alarms.FILES_UNROUTABLE, f"{key}: {reason}", key=key, client_id=client_id)
    if client_id is None:
        return
    business_date = _date_in_name(key) or datetime.now(UTC).date()
    notices.notify(
        conn,
        notices.Notice(
            client_id,
            business_date,
            f"unroutable/{key}/{hashlib.sha256(reason.encode()).hexdigest()[:16]}",
            f"{file_name(key)}: not processed: {reason}",
        ),
    )


def _date_in_name(key: str) -> date | None:
    """The business date of a misnamed upload when its name still holds one (YYYYMMDD)."""
    import re

    match = re.search(r"(?<![0-9])([0-9]{8})(?![0-9])", file_name(key))
    if not match:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%d").date()
    except ValueError:
        return None


# -- what the CLI prints ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyOutcome:
    key: str
    outcome: str  # loaded, rejected, unroutable, unchanged, retracted, pending, superseded
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "outcome": self.outcome, "detail": self.detail}


def key_outcome(conn: psycopg.Connection, key: str, version: str | None) -> KeyOutcome:
    """What became of object version `version` of `key` (None: a deletion of the key)."""
    if version is None:
        row = conn.execute(
            "SELECT status, reason FROM audit.file_loads WHERE source_key = %s AND is_current",
            (key,),
        ).fetchone()
        if row and row[0] == "retracted":
            return KeyOutcome(key, "retracted", "the input and what derives from it are gone")
        if row is None:
            return KeyOutcome(key, "unchanged", "nothing was loaded from this key")
        return KeyOutcome(key, "unchanged", f"the input's current load is {row[0]}")
    rows = conn.execute(
        "SELECT status, rows_total, rows_loaded, rows_rejected, reason, is_current "
        "FROM audit.file_loads WHERE source_key = %s AND source_version = %s "
        "ORDER BY load_id DESC",
        (key, version),
    ).fetchall()
    if not rows:
        return KeyOutcome(key, "pending", "no load recorded yet (see `dataharvest status`)")
    status, _total, loaded, rejected, reason, _current = rows[0]
    if status == "loaded":
        detail = f"{loaded} rows loaded, {rejected} rejected"
        if rejected:
            detail += " (`dataharvest export rejections`)"
        return KeyOutcome(key, "loaded", detail)
    if status == "rejected":
        return KeyOutcome(key, "rejected", f"rejected whole: {reason}")
    if status == "unroutable":
        return KeyOutcome(key, "unroutable", f"not processed: {reason}")
    if status == "unchanged":
        return KeyOutcome(key, "unchanged", "same content as the current load; nothing changed")
    return KeyOutcome(key, status, reason or "")


# How far the loads of uploaded object versions got, in one statement: versions with a load
# recorded that is no longer staging, and the chunks of those still staging (staged / all).
UPLOAD_PROGRESS = """
WITH uploaded AS (
    SELECT DISTINCT u.key, u.version
    FROM unnest(%(keys)s::text[], %(versions)s::text[]) AS u(key, version)
), staging AS (
    SELECT f.load_id FROM audit.file_loads f
    JOIN uploaded u ON f.source_key = u.key AND f.source_version = u.version
    WHERE f.status = 'staging'
)
SELECT
    (SELECT count(*) FROM uploaded u WHERE EXISTS (
        SELECT 1 FROM audit.file_loads f
        WHERE f.source_key = u.key AND f.source_version = u.version AND f.status <> 'staging')),
    (SELECT count(*) FROM uploaded),
    (SELECT count(*) FILTER (WHERE c.staged_at IS NOT NULL) FROM audit.load_chunks c
     WHERE c.load_id IN (SELECT load_id FROM staging)),
    (SELECT count(*) FROM audit.load_chunks c WHERE c.load_id IN (SELECT load_id FROM staging))
"""


@dataclass(frozen=True)
class UploadProgress:
    settled: int  # object versions whose load is recorded (loaded, rejected, unroutable, ...)
    total: int
    chunks_staged: int  # of the loads still staging (large files load in chunks)
    chunks: int


def upload_progress(
    conn: psycopg.Connection, uploaded: list[tuple[str, str | None]]
) -> UploadProgress:
    """How far the loads of `uploaded` (key, version) got (`dataharvest run`'s progress);
    versions without an id are not counted."""
    pairs = [(key, version) for key, version in uploaded if version is not None]
    row = conn.execute(
        UPLOAD_PROGRESS,
        {"keys": [k for k, _ in pairs], "versions": [v for _, v in pairs]},
    ).fetchone()
    assert row is not None  # an aggregate row
    return UploadProgress(*(int(value) for value in row))


UPLOADS = """
SELECT load_id, to_char(business_date, 'YYYY-MM-DD') AS business_date, entity, source_key,
       source_version, status, rows_total, rows_loaded, rows_rejected, reason, is_current,
       to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS finished_at
FROM audit.file_loads
WHERE client_id = %(c)s AND (%(d)s::date IS NULL OR business_date = %(d)s)
ORDER BY load_id
"""


def uploads(
    conn: psycopg.Connection, client_id: str, business_date: date | None
) -> list[dict[str, Any]]:
    """The load history of a client (audit.file_loads), optionally of one business date."""
    cursor = conn.execute(UPLOADS, {"c": client_id, "d": business_date})
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def known_client(conn: psycopg.Connection, client_id: str) -> bool:
    """Whether anything was ever recorded of the client (a load or a setting)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM audit.file_loads WHERE client_id = %(c)s)"
        " OR EXISTS (SELECT 1 FROM config.client_settings WHERE client_id = %(c)s)"
        " OR EXISTS (SELECT 1 FROM config.client_expectations WHERE client_id = %(c)s)",
        {"c": client_id},
    ).fetchone()
    return bool(row and row[0])
