"""load_upload: make PostgreSQL and the metastore reflect the current state of one S3 key.

An S3 event is only a hint that key K changed. Under the input's advisory lock the current
object is looked up (HEAD) and compared with the input's current load, so duplicate,
late and out-of-order events all converge on the same state:

- the key is gone: the input is retracted (if K is what it was loaded from);
- the object is the version already current (or identical content under a new version): no-op;
- otherwise that version is loaded: staged with COPY, validated in SQL, and swapped in for the
  previous version's rows in the same transaction, so readers see old or new, never a gap.

The metastore is written after the commit, from the committed state (see publish.py).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.errors import BadCopyFileFormat, CharacterNotInRepertoire, UniqueViolation

from dataharvest.db import shared_connection
from dataharvest.observability import logger
from dataharvest.persistence import source, validate
from dataharvest.persistence.exceptions import FileRejected, UnroutableKey, refused_by_database
from dataharvest.persistence.header import HeaderMap, match_header, parse_header
from dataharvest.persistence.publish import publish_input
from dataharvest.persistence.records import (
    LoadRecord,
    current_load,
    delete_input_rows,
    lock_input,
    record_load,
    record_unroutable,
    seen_unchanged,
)
from dataharvest.persistence.routing import Route, is_client_id, route
from dataharvest.persistence.settings import ClientSettings, get_settings
from dataharvest.persistence.staging import (
    STAGING,
    Staged,
    copy_fallback,
    copy_fast,
    create_staging,
)
from dataharvest.schemas import ENTITIES, Entity

# Test-only fault injection: called with "before_commit" inside the load transaction and
# "after_commit" between the commit and the metastore write; raising there simulates a crash.
FaultHook = Callable[[str], None]


def load_upload(
    bucket: str,
    key: str,
    event_name: str = "",
    *,
    conn: psycopg.Connection | None = None,
    fault: FaultHook | None = None,
) -> LoadRecord | None:
    """Reconcile the input behind `key` with S3; returns its current load (None if none).

    Data problems never raise (they are rejections); database, S3 and DynamoDB errors do, so
    the delivery is retried. `conn` defaults to the process's shared connection.
    """
    try:
        target = route(key)
    except UnroutableKey as error:
        _record_unroutable(conn or shared_connection(), bucket, key, event_name, error)
        return None
    conn = conn or shared_connection()
    with conn.transaction():
        lock_input(conn, target)
        current = current_load(conn, target)
        obj = source.head(bucket, key)
        record = _reconcile(conn, target, key, obj, current)
        if fault:
            fault("before_commit")
    if fault:
        fault("after_commit")
    if record is not None:
        publish_input(target, record)
    return record


def _reconcile(
    conn: psycopg.Connection,
    target: Route,
    key: str,
    obj: source.ObjectVersion | None,
    current: LoadRecord | None,
) -> LoadRecord | None:
    if obj is None:
        if current and current.source_key == key and current.status != "retracted":
            delete_input_rows(conn, target)
            record = record_load(
                conn, target, key=key, version=None, sha256=None, status="retracted"
            )
            logger.info("input retracted", extra=_log(target, record))
            return record
        return current  # deleted before it was loaded, or replaced from another key
    if current and current.is_version(key, obj.version):
        return current  # a redelivery, or an older event: this version is already current
    settings = get_settings(conn, target.client_id)
    if current and current.content_sha256:
        earlier = seen_unchanged(conn, target, key, obj.version)
        if earlier and _same_content(current, obj, earlier, settings):
            return current  # a redelivery of identical content, found so before
    return _load_version(conn, target, obj, current, settings)


def _load_version(
    conn: psycopg.Connection,
    target: Route,
    obj: source.ObjectVersion,
    current: LoadRecord | None,
    settings: ClientSettings,
) -> LoadRecord | None:
    entity = ENTITIES[target.entity]
    refused = entity.unique_column.name
    try:
        header, staged, sha256 = _stage(conn, obj, target, entity, settings)
    except FileRejected as rejection:
        return _reject_file(conn, target, obj, current, settings, rejection.reason)
    except psycopg.Error as error:
        if (reason := refused_by_database(error, refused)) is None:
            raise
        return _reject_file(conn, target, obj, current, settings, reason)
    if _same_content(current, obj, sha256, settings):
        conn.execute(sql.SQL("DROP TABLE {}").format(STAGING))
        return _unchanged(conn, target, obj, sha256, current)

    try:
        # A savepoint: when PostgreSQL refuses a value, the transaction can still record that.
        with conn.transaction():
            conn.execute(validate.create_rejects())
            delete_input_rows(conn, target)
            loaded, duplicates = _insert_rows(conn, target, obj, entity, header)
            if loaded + duplicates < staged.rows:
                # Some rows broke rules: find which and why (a clean file never pays for this).
                conn.execute(validate.insert_rule_rejects(entity, header))
    except psycopg.Error as error:
        if (reason := refused_by_database(error, refused)) is None:
            raise
        return _reject_file(conn, target, obj, current, settings, reason)
    rejected = staged.rows - loaded
    ratio = settings.max_reject_ratio
    if staged.rows and Decimal(rejected) / staged.rows > ratio:
        # Over the client's threshold the file is rejected whole: nothing of it stays loaded.
        delete_input_rows(conn, target)
        reason = (
            f"{rejected} of {staged.rows} rows rejected ({Decimal(rejected) / staged.rows:.1%}), "
            f"more than this client's max_reject_ratio {ratio}"
        )
        _store_rejections(conn, target, obj, whole_file_reason=reason)
        record = record_load(
            conn,
            target,
            key=obj.key,
            version=obj.version,
            sha256=sha256,
            status="rejected",
            rows_total=staged.rows,
            rows_rejected=rejected,
            reason=reason,
            ignored_columns=header.ignored,
        )
        logger.warning("file rejected", extra=_log(target, record))
        return record
    _store_rejections(conn, target, obj)
    record = record_load(
        conn,
        target,
        key=obj.key,
        version=obj.version,
        sha256=sha256,
        status="loaded",
        rows_total=staged.rows,
        rows_loaded=loaded,
        rows_rejected=rejected,
        ignored_columns=header.ignored,
    )
    logger.info("file loaded", extra={**_log(target, record), "malformed": staged.malformed})
    return record


def _stage(
    conn: psycopg.Connection,
    obj: source.ObjectVersion,
    target: Route,
    entity: Entity,
    settings: ClientSettings,
) -> tuple[HeaderMap, Staged, str]:
    """Header checked and body in pg_temp.staging; returns them with the object's hash."""
    stream = source.SourceStream(obj, target.gzip, settings.inflation_limits)
    try:
        header_line, body = source.split_header(stream.chunks())
        header = match_header(parse_header(header_line), entity, settings.aliases(entity.name))
        try:
            with conn.transaction():
                create_staging(conn, header.field_count)
                staged = copy_fast(conn, header.field_count, body)
            return header, staged, stream.sha256()
        except (BadCopyFileFormat, CharacterNotInRepertoire) as error:
            logger.info(
                "COPY refused the file; parsing it record by record",
                extra={**_route_log(target), "copy_error": str(error).splitlines()[0]},
            )
    finally:
        stream.close()
    stream = source.SourceStream(obj, target.gzip, settings.inflation_limits)
    try:
        _, body = source.split_header(stream.chunks())
        with conn.transaction():
            create_staging(conn, header.field_count)
            staged = copy_fallback(conn, header.field_count, body)
        return header, staged, stream.sha256()
    finally:
        stream.close()


def _insert_rows(
    conn: psycopg.Connection,
    target: Route,
    obj: source.ObjectVersion,
    entity: Entity,
    header: HeaderMap,
) -> tuple[int, int]:
    """Insert the good rows; returns (rows inserted, later duplicates rejected)."""
    lineage = {
        "client_id": target.client_id,
        "business_date": target.business_date,
        "source_key": obj.key,
        "source_version": obj.version,
    }
    try:
        with conn.transaction():
            insert = validate.insert_raw(entity, header, lineage, dedupe=False)
            return conn.execute(insert).rowcount, 0
    except UniqueViolation:
        # Rare: the file repeats a key. Keep the first row per key, reject the later ones.
        loaded = conn.execute(validate.insert_raw(entity, header, lineage, dedupe=True)).rowcount
        duplicates = conn.execute(validate.insert_duplicate_rejects(entity, header)).rowcount
        return loaded, duplicates


def _store_rejections(
    conn: psycopg.Connection,
    target: Route,
    obj: source.ObjectVersion,
    whole_file_reason: str | None = None,
) -> None:
    lineage = sql.SQL(", ").join(
        sql.Literal(v)
        for v in (target.client_id, target.business_date, target.entity, obj.key, obj.version)
    )
    columns = sql.SQL(
        "INSERT INTO audit.rejections (client_id, business_date, entity, source_key, "
        "source_version, line_number, column_name, value, reason) "
    )
    if whole_file_reason is not None:
        conn.execute(
            columns
            + sql.SQL("VALUES ({}, NULL, NULL, NULL, {})").format(
                lineage, sql.Literal(whole_file_reason)
            )
        )
    if conn.execute(sql.SQL("SELECT to_regclass('pg_temp.rejects')")).fetchone()[0]:
        conn.execute(
            columns
            + sql.SQL(
                "SELECT {}, line, column_name, value, reason FROM {} "
                "ORDER BY line, ordinal, position"
            ).format(lineage, validate.REJECTS)
        )


def _reject_file(
    conn: psycopg.Connection,
    target: Route,
    obj: source.ObjectVersion,
    current: LoadRecord | None,
    settings: ClientSettings,
    reason: str,
) -> LoadRecord | None:
    """A whole-file rejection: the input is no longer persisted, and the reason is recorded."""
    stream = source.SourceStream(obj, target.gzip)
    try:
        sha256 = stream.sha256()
    finally:
        stream.close()
    if _same_content(current, obj, sha256, settings):
        return _unchanged(conn, target, obj, sha256, current)
    delete_input_rows(conn, target)
    _store_rejections(conn, target, obj, whole_file_reason=reason)
    record = record_load(
        conn,
        target,
        key=obj.key,
        version=obj.version,
        sha256=sha256,
        status="rejected",
        reason=reason,
    )
    logger.warning("file rejected", extra=_log(target, record))
    return record


def _same_content(
    current: LoadRecord | None,
    obj: source.ObjectVersion,
    sha256: str,
    settings: ClientSettings,
) -> bool:
    """The current load came from these very bytes under the settings in force now (after an
    alias or ratio change the same bytes can give another result, so they are loaded again)."""
    return bool(
        current
        and current.source_key == obj.key
        and current.content_sha256 == sha256
        and (settings.updated_at is None or settings.updated_at < current.finished_at)
    )


def _unchanged(
    conn: psycopg.Connection,
    target: Route,
    obj: source.ObjectVersion,
    sha256: str,
    current: LoadRecord | None,
) -> LoadRecord | None:
    """Identical content under a new version: remembered, so redeliveries skip the read."""
    record_load(conn, target, key=obj.key, version=obj.version, sha256=sha256, status="unchanged")
    logger.info("content unchanged; the current load stays", extra=_route_log(target))
    return current


def _record_unroutable(
    conn: psycopg.Connection, bucket: str, key: str, event_name: str, error: UnroutableKey
) -> None:
    if event_name.startswith("ObjectRemoved"):
        logger.info("unroutable key removed; nothing to do", extra={"key": key})
        return
    obj = source.head(bucket, key)
    if obj is None:
        return  # removed before we got to it: no upload to report
    prefix = key.split("/", 1)[0]
    client_id = prefix if "/" in key and is_client_id(prefix) else None
    with conn.transaction():
        recorded = record_unroutable(conn, key, obj.version, error.reason, client_id)
    if recorded:
        logger.warning("unroutable upload", extra={"key": key, "reason": error.reason})


def _route_log(target: Route) -> dict[str, str]:
    return {"client_id": target.client_id, "entity": target.entity, "date": target.date_key}


def _log(target: Route, record: LoadRecord) -> dict[str, object]:
    return {
        **_route_log(target),
        "load_id": record.load_id,
        "status": record.status,
        "version": record.source_version,
        "rows_loaded": record.rows_loaded,
        "rows_rejected": record.rows_rejected,
        "reason": record.reason,
    }
