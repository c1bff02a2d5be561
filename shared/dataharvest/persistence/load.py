"""load_upload: make PostgreSQL and the metastore reflect the current state of one S3 key.

An S3 event is only a hint that key K changed. Under the input's advisory lock the current
object is looked up (HEAD) and compared with the input's current load, so duplicate,
late and out-of-order events all converge on the same state:

- the key is gone: the input is retracted (if K is what it was loaded from);
- the object is the version already current (or identical content under a new version): no-op;
- otherwise that version is loaded into a leaf table of its own (plain lines COPYed straight
  in, the rest through the SQL rules), analyzed, and swapped in for the previous version's
  leaves in the same transaction, so readers see old or new, never a gap (storage.py). A file
  above the chunk size is only planned here and staged in parallel chunks (chunks.py).

The metastore is written after the commit, from the committed state (see publish.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.errors import BadCopyFileFormat, CharacterNotInRepertoire, DataError

from dataharvest.config import environment
from dataharvest.db import shared_connection
from dataharvest.observability import logger
from dataharvest.ops import metrics, outcomes
from dataharvest.persistence import chunks, fastpath, source, storage, validate
from dataharvest.persistence.exceptions import FileRejected, UnroutableKey, refused_by_database
from dataharvest.persistence.header import HeaderMap, match_header, parse_header
from dataharvest.persistence.mark import mark_input
from dataharvest.persistence.records import (
    LoadRecord,
    current_load,
    delete_rejections,
    lock_input,
    record_load,
    record_unroutable,
    reserve_load_id,
    seen_unchanged,
)
from dataharvest.persistence.routing import Route, is_client_id, route_of
from dataharvest.persistence.settings import ClientSettings, get_settings
from dataharvest.persistence.staging import (
    STAGING,
    copy_fallback,
    copy_fast,
    create_staging,
)
from dataharvest.schemas import ENTITIES, Entity

# Test-only fault injection: called with "before_commit" inside the load transaction and
# "after_commit" between the commit and the metastore write; raising there simulates a crash.
FaultHook = Callable[[str], None]


@dataclass(frozen=True)
class StagedLoad:
    """A version's rows in its leaf (not attached yet), and what became of the file's rows."""

    header: HeaderMap
    leaf: storage.Leaf
    rows_total: int  # records in the file, malformed ones included
    rows_loaded: int
    sha256: str
    path: str  # "plain": the fast path (records it set aside staged); "staged": staged whole


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
    from dataharvest.snapshots.routing import is_snapshot_key  # it imports persistence

    if is_snapshot_key(key):
        _load_snapshot(bucket, key, event_name, conn or shared_connection())
        return None
    try:
        route = route_of(key)
    except UnroutableKey as error:
        _record_unroutable(conn or shared_connection(), bucket, key, event_name, error)
        return None
    conn = conn or shared_connection()
    started = time.monotonic()
    storage.ensure_parents(conn, route.entity, route.business_date, route.client_id)
    staging: list[int] = []  # a large file's load, staged in chunks after this commit
    with conn.transaction():
        lock_input(conn, route)
        current = current_load(conn, route)
        obj = source.head(bucket, key)
        record = _reconcile(conn, route, key, obj, current, staging)
        if fault:
            fault("before_commit")
    if fault:
        fault("after_commit")
    for load_id in staging:
        chunks.dispatch(conn, load_id)
    if record is not None:
        mark_input(route, record, conn)
    metrics.emit(
        "persistence",
        route.entity,
        metrics.LOAD_SECONDS,
        time.monotonic() - started,
        metrics.Seconds,
        client_id=route.client_id,
        key=key,
    )
    return record


def _load_snapshot(bucket: str, key: str, event_name: str, conn: psycopg.Connection) -> None:
    """A full-table export under `{client}/snapshots/` (issue 15): its delta is applied and
    published by dataharvest.snapshots; a malformed key or an unregistered table is unroutable."""
    from dataharvest.snapshots import ingest
    from dataharvest.snapshots.routing import route_snapshot

    try:
        ingest.handle_upload(bucket, key, route_snapshot(key), conn=conn)
    except UnroutableKey as error:
        _record_unroutable(conn, bucket, key, event_name, error)


def _reconcile(
    conn: psycopg.Connection,
    route: Route,
    key: str,
    obj: source.ObjectVersion | None,
    current: LoadRecord | None,
    staging: list[int],
) -> LoadRecord | None:
    if obj is None:
        if current and current.source_key == key and current.status != "retracted":
            record = retract(conn, route, key=key, reason=None)
            logger.info("input retracted", extra=_log(route, record))
            return record
        return current  # deleted before it was loaded, or replaced from another key
    if current and current.is_version(key, obj.version):
        return current  # a redelivery, or an older event: this version is already current
    in_flight = chunks.staging_load(conn, route, key, obj.version)
    if in_flight is not None:
        staging.append(in_flight)  # a redelivery while its chunks stage: send what is left
        return current
    settings = get_settings(conn, route.client_id)
    if current and current.content_sha256:
        earlier = seen_unchanged(conn, route, key, obj.version)
        if earlier and _same_content(current, obj, earlier, settings):
            return current  # a redelivery of identical content, found so before
    return _load_version(conn, route, obj, current, settings, staging)


def retract(conn: psycopg.Connection, route: Route, *, key: str, reason: str | None) -> LoadRecord:
    """The input has no rows any more (its object was deleted, or its date expired)."""
    chunks.abandon_other_loads(conn, route)
    storage.swap(conn, route.entity, route.business_date, route.client_id, None, [])
    delete_rejections(conn, route)
    return record_load(
        conn, route, key=key, version=None, sha256=None, status="retracted", reason=reason
    )


def _load_version(
    conn: psycopg.Connection,
    route: Route,
    obj: source.ObjectVersion,
    current: LoadRecord | None,
    settings: ClientSettings,
    staging: list[int],
) -> LoadRecord | None:
    entity = ENTITIES[route.entity]
    load_id = reserve_load_id(conn)
    # An older version still staging in chunks will never be current now.
    chunks.abandon_other_loads(conn, route)
    chunk_bytes = environment().chunk_bytes
    if route.gzip and obj.size > chunks.MAX_GZIP_BYTES:
        reason = (
            f"the gzip file is {obj.size:,} bytes; gzip files load in one piece, at most "
            f"{chunks.MAX_GZIP_BYTES:,} bytes: upload it uncompressed (large files load in "
            "parallel chunks) or split it"
        )
        return _reject_file(conn, route, obj, current, settings, load_id, reason)
    if not route.gzip and obj.size > chunk_bytes:
        try:
            header, plan = chunks.plan_load(route, obj, settings, chunk_bytes)
        except FileRejected as rejection:
            return _reject_file(conn, route, obj, current, settings, load_id, rejection.reason)
        if _same_content(current, obj, plan.sha256, settings):
            return _unchanged(conn, route, obj, plan.sha256, current)
        chunks.record_plan(conn, route, obj, load_id, header, plan)
        staging.append(load_id)
        return current
    try:
        # A savepoint: when PostgreSQL refuses a value, the transaction can still record that.
        with conn.transaction():
            staged = _stage(conn, obj, route, entity, settings, load_id)
    except FileRejected as rejection:
        return _reject_file(conn, route, obj, current, settings, load_id, rejection.reason)
    except psycopg.Error as error:
        if (refusal := refused_by_database(error, entity.unique_column.name)) is None:
            raise
        return _reject_file(conn, route, obj, current, settings, load_id, refusal)
    if _same_content(current, obj, staged.sha256, settings):
        storage.drop_leaf(conn, staged.leaf)
        return _unchanged(conn, route, obj, staged.sha256, current)
    return _commit(conn, route, obj, load_id, staged, settings)


def _commit(
    conn: psycopg.Connection,
    route: Route,
    obj: source.ObjectVersion,
    load_id: int,
    staged: StagedLoad,
    settings: ClientSettings,
) -> LoadRecord:
    """Make the staged version current, or reject it whole over the client's threshold."""
    delete_rejections(conn, route)
    rows = staged.rows_total
    rejected = rows - staged.rows_loaded
    ratio = settings.max_reject_ratio
    common: dict[str, Any] = {
        "load_id": load_id,
        "key": obj.key,
        "version": obj.version,
        "sha256": staged.sha256,
        "rows_total": rows,
        "rows_rejected": rejected,
        "ignored_columns": staged.header.ignored,
    }
    day, client = route.business_date, route.client_id
    if rows and Decimal(rejected) / rows > ratio:
        # Over the client's threshold the file is rejected whole: nothing of it stays loaded.
        storage.drop_leaf(conn, staged.leaf)
        storage.swap(conn, route.entity, day, client, None, [])
        reason = (
            f"{rejected} of {rows} rows rejected ({Decimal(rejected) / rows:.1%}), "
            f"more than this client's max_reject_ratio {ratio}"
        )
        _store_rejections(conn, route, obj, whole_file_reason=reason)
        record = record_load(conn, route, status="rejected", reason=reason, **common)
        logger.warning("file rejected", extra=_log(route, record))
        return record
    storage.swap(conn, route.entity, day, client, load_id, [staged.leaf])
    _store_rejections(conn, route, obj)
    record = record_load(conn, route, status="loaded", rows_loaded=staged.rows_loaded, **common)
    logger.info("file loaded", extra={**_log(route, record), "path": staged.path})
    return record


def _stage(
    conn: psycopg.Connection,
    obj: source.ObjectVersion,
    route: Route,
    entity: Entity,
    settings: ClientSettings,
    load_id: int,
) -> StagedLoad:
    """The file's good rows in a new leaf of load `load_id`, its rejections in pg_temp.rejects."""
    limits = settings.inflation_limits
    stream = source.SourceStream(obj, route.gzip, limits)
    try:
        header_line, body = source.split_header(stream.chunks())
        header = match_header(parse_header(header_line), entity, settings.aliases(entity.name))
        plain = fastpath.plan(entity, header)
        try:
            with conn.transaction():
                leaf = _new_leaf(conn, route, load_id)
                rows, loaded, distinct = fastpath.load_lines(
                    conn, entity, header, leaf, plain, body, 2
                )
                if not distinct and _has_duplicates(conn, entity, leaf, loaded):
                    # Rare: the staged path reports each later duplicate exactly.
                    raise fastpath.NotPlain("duplicate keys")
                storage.finish_leaf(conn, leaf)
            return StagedLoad(header, leaf, rows, loaded, stream.sha256(), "plain")
        except (fastpath.NotPlain, DataError) as why:
            logger.info(
                "the file needs the staged path",
                extra={
                    **_route_log(route),
                    "why": str(why).splitlines()[0] if str(why) else type(why).__name__,
                },
            )
    finally:
        stream.close()
    staged_rows, sha256 = _copy_to_staging(conn, obj, route, header, limits)
    leaf = _new_leaf(conn, route, load_id)
    conn.execute(validate.create_rejects())
    loaded = conn.execute(validate.insert_rows(entity, header, leaf.identifier, False)).rowcount
    duplicates = 0
    if _has_duplicates(conn, entity, leaf, loaded):
        # The file repeats a key: keep the first row per key, reject the later ones.
        conn.execute(sql.SQL("TRUNCATE {}").format(leaf.identifier))
        loaded = conn.execute(validate.insert_rows(entity, header, leaf.identifier, True)).rowcount
        duplicates = conn.execute(validate.insert_duplicate_rejects(entity, header)).rowcount
    if loaded + duplicates < staged_rows:
        # Some rows broke rules: find which and why (a clean file never pays for this scan).
        conn.execute(validate.insert_rule_rejects(entity, header))
    conn.execute(sql.SQL("DROP TABLE {}").format(STAGING))
    storage.finish_leaf(conn, leaf)
    return StagedLoad(header, leaf, staged_rows, loaded, sha256, "staged")


def _new_leaf(conn: psycopg.Connection, route: Route, load_id: int) -> storage.Leaf:
    return storage.create_leaf(conn, route.entity, route.business_date, route.client_id, load_id)


def _has_duplicates(
    conn: psycopg.Connection, entity: Entity, leaf: storage.Leaf, rows: int
) -> bool:
    distinct = conn.execute(validate.distinct_keys(entity, leaf.identifier)).fetchone()
    if distinct is not None and distinct[0] == rows:
        return False
    found = conn.execute(validate.has_duplicates(entity, leaf.identifier)).fetchone()
    return bool(found and found[0])


def _copy_to_staging(
    conn: psycopg.Connection,
    obj: source.ObjectVersion,
    route: Route,
    header: HeaderMap,
    limits: source.InflationLimits,
) -> tuple[int, str]:
    """The body in pg_temp.staging (COPY, or the record-by-record parser when COPY refuses
    the file's shape); returns the records staged and the object's hash."""
    stream = source.SourceStream(obj, route.gzip, limits)
    try:
        _, body = source.split_header(stream.chunks())
        try:
            with conn.transaction():
                create_staging(conn, header.field_count)
                staged = copy_fast(conn, header.field_count, body)
            return staged.rows, stream.sha256()
        except (BadCopyFileFormat, CharacterNotInRepertoire) as error:
            logger.info(
                "COPY refused the file; parsing it record by record",
                extra={**_route_log(route), "copy_error": str(error).splitlines()[0]},
            )
    finally:
        stream.close()
    stream = source.SourceStream(obj, route.gzip, limits)
    try:
        _, body = source.split_header(stream.chunks())
        with conn.transaction():
            create_staging(conn, header.field_count)
            staged = copy_fallback(conn, header.field_count, body)
        return staged.rows, stream.sha256()
    finally:
        stream.close()


def _store_rejections(
    conn: psycopg.Connection,
    route: Route,
    obj: source.ObjectVersion,
    whole_file_reason: str | None = None,
) -> None:
    lineage = sql.SQL(", ").join(
        sql.Literal(v)
        for v in (route.client_id, route.business_date, route.entity, obj.key, obj.version)
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
    if (conn.execute(sql.SQL("SELECT to_regclass('pg_temp.rejects')")).fetchone() or [None])[0]:
        conn.execute(
            columns
            + sql.SQL(
                "SELECT {}, line, column_name, value, reason FROM {} "
                "ORDER BY line, ordinal, position"
            ).format(lineage, validate.REJECTS)
        )


def _reject_file(
    conn: psycopg.Connection,
    route: Route,
    obj: source.ObjectVersion,
    current: LoadRecord | None,
    settings: ClientSettings,
    load_id: int,
    reason: str,
) -> LoadRecord | None:
    """A whole-file rejection: the input is no longer persisted, and the reason is recorded."""
    stream = source.SourceStream(obj, route.gzip)
    try:
        sha256 = stream.sha256()
    finally:
        stream.close()
    if _same_content(current, obj, sha256, settings):
        return _unchanged(conn, route, obj, sha256, current)
    storage.swap(conn, route.entity, route.business_date, route.client_id, None, [])
    delete_rejections(conn, route)
    _store_rejections(conn, route, obj, whole_file_reason=reason)
    record = record_load(
        conn,
        route,
        load_id=load_id,
        key=obj.key,
        version=obj.version,
        sha256=sha256,
        status="rejected",
        reason=reason,
    )
    logger.warning("file rejected", extra=_log(route, record))
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
    route: Route,
    obj: source.ObjectVersion,
    sha256: str,
    current: LoadRecord | None,
) -> LoadRecord | None:
    """Identical content under a new version: remembered, so redeliveries skip the read."""
    record_load(conn, route, key=obj.key, version=obj.version, sha256=sha256, status="unchanged")
    logger.info("content unchanged; the current load stays", extra=_route_log(route))
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
    # The metric, alarm and partner notice (idempotent: redeliveries add nothing).
    outcomes.upload_unroutable(conn, client_id, key, error.reason, recorded)


def _route_log(route: Route) -> dict[str, str]:
    return {"client_id": route.client_id, "entity": route.entity, "date": route.date_key}


def _log(route: Route, record: LoadRecord) -> dict[str, object]:
    return {
        **_route_log(route),
        "load_id": record.load_id,
        "status": record.status,
        "version": record.source_version,
        "rows_loaded": record.rows_loaded,
        "rows_rejected": record.rows_rejected,
        "reason": record.reason,
    }
