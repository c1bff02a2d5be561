"""Large files in parallel chunks: plan, stage each byte range on its own, commit once.

A stored file larger than `chunk_bytes` (uncompressed; gzip has no byte ranges, see below)
is loaded in three steps, each idempotent:

1. plan (`plan_load` + `record_plan`, in the S3 event's load transaction): one sequential
   read of the object finds the chunk boundaries (after a line end outside quotes, so a quoted
   newline never splits a record) and the line each chunk starts on, and hashes the object.
   The load is recorded as 'staging' (not current) with one audit.load_chunks row per chunk;
   after the commit one message per chunk goes to the chunk queue (`dispatch`).
2. stage (`stage_chunk`, one invocation per message, in parallel): a ranged GET of the chunk,
   its rows into a leaf table of its own (fast path or staged rules, as for a whole file), its
   rejections into audit.chunk_rejections, and the chunk marked staged, in one transaction. A
   failed chunk rolls back alone and its message is retried alone.
3. commit (`commit_load`, run by whichever chunk finishes last): under the input's lock, the
   duplicate check across all chunks, the reject ratio, and the swap of every chunk's leaf
   into the input's partition, in one transaction. Until then nothing of the load is visible.

A newer version of the input overtakes a load still staging: the newer load (or the commit,
finding the object's version changed) abandons it and drops its leaves. A load whose chunks
never all stage (a chunk dead-lettered and never redriven) is abandoned by
`abandon_stale_loads` after a day (run by `dataharvest retention apply`).

gzip: a decompressing reader cannot hand out byte ranges, so a .csv.gz loads in one
invocation whatever its size, up to MAX_GZIP_BYTES stored bytes (rejected with that reason
above; docs/DECISIONS.md, "Large files").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import boto3
import psycopg
from psycopg import sql
from psycopg.errors import BadCopyFileFormat, CharacterNotInRepertoire, DataError
from psycopg.rows import dict_row

from dataharvest.config import environment
from dataharvest.db import shared_connection
from dataharvest.observability import logger
from dataharvest.persistence import fastpath, source, storage, validate
from dataharvest.persistence.exceptions import FileRejected, refused_by_database
from dataharvest.persistence.header import HeaderMap, match_header, parse_header
from dataharvest.persistence.mark import mark_input
from dataharvest.persistence.records import (
    LoadRecord,
    complete_load,
    current_load,
    delete_rejections,
    lock_input,
)
from dataharvest.persistence.routing import Route
from dataharvest.persistence.settings import ClientSettings, get_settings
from dataharvest.persistence.staging import STAGING, copy_fallback, copy_fast, create_staging
from dataharvest.schemas import ENTITIES

# gzip files load in one invocation: at the measured 200,000+ rows/s and 5-10x compression,
# 512 MiB stored stays well inside Lambda's 15 minutes (BENCHMARKS.md).
MAX_GZIP_BYTES = 512 << 20
STALE_AFTER = "1 day"

FaultHook = Callable[[str], None]


@dataclass(frozen=True)
class Chunk:
    chunk: int
    byte_start: int
    byte_end: int
    first_line: int


@dataclass(frozen=True)
class Plan:
    chunks: list[Chunk]
    sha256: str


def split(raw: Iterator[bytes], chunk_bytes: int) -> tuple[bytes, list[Chunk]]:
    """The header line and the body's chunks, each ending after a line end outside quotes.

    Quote parity from the start of the file tells whether a position is inside a quoted field
    (RFC 4180 escapes a quote by doubling it, which keeps the parity right).
    """
    header: bytes | None = None
    offset = 0  # stored bytes before the current block
    quotes = 0  # quote characters before the current block
    newlines = 0  # line ends before the current block
    boundaries: list[tuple[int, int]] = []  # (byte offset, line a chunk starts on)
    next_cut = 0
    pending = b""
    for block in raw:
        if header is None:
            pending += block
            end = pending.find(b"\n")
            if len(pending[:end] if end >= 0 else pending) > source.MAX_HEADER_BYTES:
                raise FileRejected(
                    f"the header line is longer than {source.MAX_HEADER_BYTES:,} bytes, the "
                    "most it may hold"
                )
            if end < 0:
                continue
            block, pending = pending, b""
            header = block[:end].removesuffix(b"\r")
            boundaries.append((end + 1, 2))
            next_cut = end + 1 + chunk_bytes
        position = max(next_cut - offset, 0)
        while position < len(block):
            newline = block.find(b"\n", position)
            while newline >= 0 and (quotes + block.count(b'"', 0, newline)) % 2:
                newline = block.find(b"\n", newline + 1)
            if newline < 0:
                break
            boundaries.append((offset + newline + 1, newlines + block.count(b"\n", 0, newline) + 2))
            next_cut = offset + newline + 1 + chunk_bytes
            position = next_cut - offset
        offset += len(block)
        quotes += block.count(b'"')
        newlines += block.count(b"\n")
    if header is None:
        if pending.strip():
            return pending.removesuffix(b"\r"), []  # a header without a line end, no body
        raise FileRejected("the file is empty: no header row")
    ends = [start for start, _ in boundaries[1:]] + [offset]
    chunks: list[Chunk] = []
    for (start, line), end in zip(boundaries, ends, strict=True):
        if end > start:
            chunks.append(Chunk(len(chunks), start, end, line))
    return header, chunks


def plan_load(
    route: Route, obj: source.ObjectVersion, settings: ClientSettings, chunk_bytes: int
) -> tuple[HeaderMap, Plan]:
    """Read the object once: header check, chunk boundaries, hash (FileRejected if bad)."""
    if obj.size > settings.max_inflated_bytes:
        name = obj.key.rsplit("/", 1)[-1]
        raise FileRejected(
            f"{name} is larger than this client's max_inflated_bytes "
            f"({settings.max_inflated_bytes:,} bytes)"
        )
    stream = source.SourceStream(obj, gzip=False)
    try:
        header_line, chunks = split(stream.stored(), chunk_bytes)
        sha256 = stream.sha256()
    finally:
        stream.close()
    entity = ENTITIES[route.entity]
    names = parse_header(header_line.removeprefix(source.UTF8_BOM))
    header = match_header(names, entity, settings.aliases(entity.name))
    return header, Plan(chunks, sha256)


def record_plan(
    conn: psycopg.Connection,
    route: Route,
    obj: source.ObjectVersion,
    load_id: int,
    header: HeaderMap,
    plan: Plan,
) -> None:
    """The load as 'staging' (not current) and its chunks, in the plan's transaction."""
    conn.execute(
        "INSERT INTO audit.file_loads (load_id, client_id, business_date, entity, source_key, "
        "source_version, content_sha256, status, ignored_columns, is_current) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, 'staging', %s, false)",
        (
            load_id,
            route.client_id,
            route.business_date,
            route.entity,
            obj.key,
            obj.version,
            plan.sha256,
            list(header.ignored),
        ),
    )
    meta = json.dumps(
        {
            "bucket": obj.bucket,
            "version_id": obj.version_id,
            "etag": obj.etag,
            "size": obj.size,
            "field_count": header.field_count,
            "columns": header.columns,
        }
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO audit.load_chunks (load_id, chunk, chunks, client_id, business_date, "
            "entity, source_key, source_version, byte_start, byte_end, first_line, header) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    load_id,
                    c.chunk,
                    len(plan.chunks),
                    route.client_id,
                    route.business_date,
                    route.entity,
                    obj.key,
                    obj.version,
                    c.byte_start,
                    c.byte_end,
                    c.first_line,
                    meta,
                )
                for c in plan.chunks
            ],
        )
    logger.info(
        "large file: staging in chunks",
        extra={"key": obj.key, "load_id": load_id, "chunks": len(plan.chunks)},
    )


def staging_load(conn: psycopg.Connection, route: Route, key: str, version: str) -> int | None:
    """The load of exactly this object version still staging, if any."""
    row = conn.execute(
        "SELECT load_id FROM audit.file_loads WHERE client_id = %s AND entity = %s "
        "AND business_date = %s AND source_key = %s AND source_version = %s "
        "AND status = 'staging'",
        (route.client_id, route.entity, route.business_date, key, version),
    ).fetchone()
    return row[0] if row else None


def abandon_other_loads(conn: psycopg.Connection, route: Route) -> None:
    """Loads of the input still staging will never be committed: a newer state is decided."""
    rows = conn.execute(
        "SELECT load_id FROM audit.file_loads WHERE client_id = %s AND entity = %s "
        "AND business_date = %s AND status = 'staging'",
        (route.client_id, route.entity, route.business_date),
    ).fetchall()
    for (load_id,) in rows:
        _abandon(conn, route, load_id, "overtaken by a newer version of the input")


def _abandon(conn: psycopg.Connection, route: Route, load_id: int, reason: str) -> None:
    storage.drop_unattached_leaves(conn, route.entity, load_id)
    conn.execute("DELETE FROM audit.chunk_rejections WHERE load_id = %s", (load_id,))
    complete_load(
        conn, route, load_id, status="abandoned", rows_total=0, rows_loaded=0,
        rows_rejected=0, reason=reason,
    )  # fmt: skip
    logger.info("chunked load abandoned", extra={"load_id": load_id, "reason": reason})


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return boto3.client("sqs")


def dispatch(conn: psycopg.Connection, load_id: int) -> int:
    """Send a message for every chunk of the load not staged yet; returns how many.

    Safe to repeat: staging a chunk twice is a no-op the second time."""
    queue_url = environment().chunk_queue_url
    if not queue_url:
        raise RuntimeError("CHUNK_QUEUE_URL is not set: large files cannot be staged in chunks")
    pending = [
        r[0]
        for r in conn.execute(
            "SELECT chunk FROM audit.load_chunks WHERE load_id = %s AND staged_at IS NULL "
            "ORDER BY chunk",
            (load_id,),
        ).fetchall()
    ]
    for start in range(0, len(pending), 10):
        entries = [
            {"Id": str(c), "MessageBody": json.dumps({"load_id": load_id, "chunk": c})}
            for c in pending[start : start + 10]
        ]
        failed = _sqs().send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(f"chunk messages not sent: {failed}")
    return len(pending)


def stage_chunk(
    load_id: int,
    chunk: int,
    *,
    conn: psycopg.Connection | None = None,
    fault: FaultHook | None = None,
) -> LoadRecord | None:
    """Stage one chunk (a no-op when staged already or the load is over); when it was the last
    one, commit the load. Returns the load's record if this call ended it."""
    conn = conn or shared_connection()
    rejected: LoadRecord | None = None
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT c.*, f.status FROM audit.load_chunks c "
                "JOIN audit.file_loads f USING (load_id) "
                "WHERE c.load_id = %s AND c.chunk = %s FOR UPDATE OF c",
                (load_id, chunk),
            ).fetchone()
        if row is None or row["status"] != "staging":
            return None  # the load is over (committed, rejected or abandoned)
        # Staged before (a redelivery): only the commit may be left, if it failed after it.
        if row["staged_at"] is None:
            rejected = _stage(conn, row, fault)
    if rejected is not None:
        mark_input(_route(row), rejected, conn)
        return rejected
    return _commit_if_complete(conn, load_id, fault)


def _stage(
    conn: psycopg.Connection, row: dict[str, Any], fault: FaultHook | None
) -> LoadRecord | None:
    """Stage the chunk in the caller's transaction; a whole-file rejection is returned."""
    following = conn.execute(
        "SELECT first_line FROM audit.load_chunks WHERE load_id = %s AND chunk = %s",
        (row["load_id"], row["chunk"] + 1),
    ).fetchone()
    try:
        # A savepoint: when PostgreSQL refuses a value, the transaction can still record that.
        with conn.transaction():
            total, loaded = _stage_rows(conn, row, following[0] if following else None)
    except FileRejected as rejection:
        return _reject_whole(conn, row, rejection.reason)
    except psycopg.Error as error:
        reason = refused_by_database(error, ENTITIES[row["entity"]].unique_column.name)
        if reason is None:
            raise
        return _reject_whole(conn, row, reason)
    if fault:
        fault("chunk_staged")
    conn.execute(
        "UPDATE audit.load_chunks SET rows_staged = %s, rows_rejected = %s, "
        "staged_at = clock_timestamp() WHERE load_id = %s AND chunk = %s",
        (total, total - loaded, row["load_id"], row["chunk"]),
    )
    return None


def _commit_if_complete(
    conn: psycopg.Connection, load_id: int, fault: FaultHook | None
) -> LoadRecord | None:
    remaining = conn.execute(
        "SELECT count(*) FILTER (WHERE staged_at IS NULL) FROM audit.load_chunks "
        "WHERE load_id = %s",
        (load_id,),
    ).fetchone()
    if remaining and remaining[0] == 0:
        return commit_load(load_id, conn=conn, fault=fault)
    return None


def _route(row: dict[str, Any]) -> Route:
    return Route(
        row["client_id"], row["entity"], row["business_date"], row["source_key"].endswith(".gz")
    )


def _stage_rows(
    conn: psycopg.Connection, row: dict[str, Any], end_line: int | None
) -> tuple[int, int]:
    """The chunk's good rows into its leaf, its rejections into audit.chunk_rejections;
    returns (records, rows loaded)."""
    meta = row["header"]
    header = HeaderMap(meta["field_count"], meta["columns"], ())
    entity = ENTITIES[row["entity"]]
    obj = source.ObjectVersion(
        bucket=meta["bucket"],
        key=row["source_key"],
        version=row["source_version"],
        version_id=meta["version_id"],
        etag=meta["etag"],
        size=meta["size"],
    )
    first = row["first_line"]
    byte_range = (row["byte_start"], row["byte_end"])

    def new_leaf() -> storage.Leaf:
        return storage.create_leaf(
            conn,
            row["entity"],
            row["business_date"],
            row["client_id"],
            row["load_id"],
            chunk=row["chunk"],
            first_line=None if row["chunk"] == 0 else first,
            end_line=end_line,
        )

    plain = fastpath.plan(entity, header)
    stream = source.SourceStream(obj, gzip=False, byte_range=byte_range)
    try:
        with conn.transaction():
            leaf = new_leaf()
            body = source.limit_lines(stream.stored(), first)
            # Keys proven distinct within one chunk say nothing across chunks: the commit
            # counts them over the whole file.
            rows, loaded, _ = fastpath.load_lines(conn, entity, header, leaf, plain, body, first)
            _keep_rejections(conn, row)
            storage.finish_leaf(conn, leaf)
        return rows, loaded
    except (fastpath.NotPlain, DataError):
        pass  # the staged path below decides every row
    finally:
        stream.close()
    stream = source.SourceStream(obj, gzip=False, byte_range=byte_range)
    try:
        with conn.transaction():
            create_staging(conn, header.field_count, first)
            body = source.limit_lines(stream.stored(), first)
            staged = copy_fast(conn, header.field_count, body)
    except (BadCopyFileFormat, CharacterNotInRepertoire):
        stream.close()
        stream = source.SourceStream(obj, gzip=False, byte_range=byte_range)
        with conn.transaction():
            create_staging(conn, header.field_count, first)
            body = source.limit_lines(stream.stored(), first)
            staged = copy_fallback(conn, header.field_count, body, first)
    finally:
        stream.close()
    leaf = new_leaf()
    conn.execute(validate.create_rejects())
    loaded = conn.execute(validate.insert_rows(entity, header, leaf.identifier, False)).rowcount
    if loaded < staged.rows:
        conn.execute(validate.insert_rule_rejects(entity, header))
    _keep_rejections(conn, row)
    conn.execute(sql.SQL("DROP TABLE {}").format(STAGING))
    storage.finish_leaf(conn, leaf)
    return staged.rows, loaded


def _keep_rejections(conn: psycopg.Connection, row: dict[str, Any]) -> None:
    """The chunk's rejections (pg_temp.rejects, if any) until the load commits."""
    found = conn.execute("SELECT to_regclass('pg_temp.rejects')").fetchone()
    if not found or found[0] is None:
        return
    conn.execute(
        sql.SQL(
            "INSERT INTO audit.chunk_rejections (load_id, chunk, line_number, position, "
            "column_name, value, reason) SELECT {}, {}, line, position, column_name, value, "
            "reason FROM {}"
        ).format(sql.Literal(row["load_id"]), sql.Literal(row["chunk"]), validate.REJECTS)
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(validate.REJECTS))


def _reject_whole(conn: psycopg.Connection, row: dict[str, Any], reason: str) -> LoadRecord:
    """A chunk found the file unusable (e.g. a quote never closed): the file is rejected
    whole, as if staged in one piece. Runs in the chunk's transaction."""
    route = _route(row)
    lock_input(conn, route)
    load_id = row["load_id"]
    storage.drop_unattached_leaves(conn, route.entity, load_id)
    conn.execute("DELETE FROM audit.chunk_rejections WHERE load_id = %s", (load_id,))
    storage.swap(conn, route.entity, route.business_date, route.client_id, None, [])
    delete_rejections(conn, route)
    conn.execute(
        "INSERT INTO audit.rejections (client_id, business_date, entity, source_key, "
        "source_version, reason) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            route.client_id,
            route.business_date,
            route.entity,
            row["source_key"],
            row["source_version"],
            reason,
        ),
    )
    record = complete_load(
        conn, route, load_id, status="rejected", rows_total=0, rows_loaded=0, rows_rejected=0,
        reason=reason,
    )  # fmt: skip
    logger.warning("file rejected", extra={"load_id": load_id, "reason": reason})
    return record


def commit_load(
    load_id: int, *, conn: psycopg.Connection | None = None, fault: FaultHook | None = None
) -> LoadRecord | None:
    """Make a fully staged load current (or reject it whole, or abandon it if overtaken)."""
    conn = conn or shared_connection()
    with conn.cursor(row_factory=dict_row) as cur:
        load = cur.execute(
            "SELECT client_id, entity, business_date, source_key, source_version "
            "FROM audit.file_loads WHERE load_id = %s",
            (load_id,),
        ).fetchone()
    if load is None:
        return None
    route = _route(load)
    with conn.transaction():
        lock_input(conn, route)
        with conn.cursor(row_factory=dict_row) as cur:
            chunks = cur.execute(
                "SELECT c.chunk, c.first_line, c.rows_staged, c.rows_rejected, c.staged_at, "
                "c.header, f.status FROM audit.load_chunks c JOIN audit.file_loads f "
                "USING (load_id) WHERE load_id = %s ORDER BY chunk",
                (load_id,),
            ).fetchall()
        if not chunks or chunks[0]["status"] != "staging":
            return None  # committed or abandoned by another invocation
        if any(c["staged_at"] is None for c in chunks):
            return None
        obj = source.head(chunks[0]["header"]["bucket"], load["source_key"])
        current = current_load(conn, route)
        if (
            obj is None
            or obj.version != load["source_version"]
            or (current is not None and current.load_id > load_id)
        ):
            _abandon(conn, route, load_id, "overtaken by a newer version of the input")
            return None
        leaves = [
            storage.Leaf(
                storage.leaf_name(route.entity, load_id, c["chunk"]),
                None if c["chunk"] == 0 else c["first_line"],
                chunks[i + 1]["first_line"] if i + 1 < len(chunks) else None,
            )
            for i, c in enumerate(chunks)
        ]
        total = sum(c["rows_staged"] for c in chunks)
        loaded = total - sum(c["rows_rejected"] for c in chunks)
        loaded -= _reject_duplicates(conn, route, load_id, leaves, loaded)
        record = _finish(conn, route, load_id, leaves, total, loaded)
        if fault:
            fault("before_commit")
    mark_input(route, record, conn)
    return record


def _union(leaves: list[storage.Leaf], columns: sql.Composable) -> sql.Composed:
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {} FROM {}").format(columns, leaf.identifier) for leaf in leaves
    )


def _reject_duplicates(
    conn: psycopg.Connection,
    route: Route,
    load_id: int,
    leaves: list[storage.Leaf],
    rows: int,
) -> int:
    """The within-file key across all chunks: later duplicates leave their leaf and become
    rejections (their value is the key as stored); returns how many."""
    entity = ENTITIES[route.entity]
    key = sql.Identifier(entity.unique_column.name)
    counted = (
        key
        if entity.unique_column.type == "integer"
        else sql.SQL("hashtextextended({}, 0)").format(key)
    )
    distinct = conn.execute(
        sql.SQL("SELECT count(DISTINCT k) FROM ({}) u").format(
            _union(leaves, sql.SQL("{} AS k").format(counted))
        )
    ).fetchone()
    if distinct is not None and distinct[0] == rows:
        return 0
    later = conn.execute(
        sql.SQL(
            "SELECT line_number, k, first_line FROM (SELECT line_number, k,"
            " first_value(line_number) OVER w AS first_line, row_number() OVER w AS n"
            " FROM ({}) u WINDOW w AS (PARTITION BY k ORDER BY line_number)) d WHERE n > 1"
        ).format(_union(leaves, sql.SQL("line_number, {}::text AS k").format(key)))
    ).fetchall()
    if not later:
        return 0
    for leaf in leaves:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE line_number = ANY(%s)").format(leaf.identifier),
            ([line for line, _, _ in later],),
        )
    column = entity.unique_column.name
    position = entity.columns.index(entity.unique_column) + 1
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO audit.chunk_rejections (load_id, chunk, line_number, position, "
            "column_name, value, reason) VALUES (%s, -1, %s, %s, %s, %s, %s)",
            [
                (
                    load_id,
                    line,
                    position,
                    column,
                    value,
                    f"{column}: duplicate of line {first} (the first row with this key is kept)",
                )
                for line, value, first in later
            ],
        )
    return len(later)


def _finish(
    conn: psycopg.Connection,
    route: Route,
    load_id: int,
    leaves: list[storage.Leaf],
    total: int,
    loaded: int,
) -> LoadRecord:
    """Rejections recorded, then the leaves swapped in (or dropped over the threshold)."""
    settings = get_settings(conn, route.client_id)
    rejected = total - loaded
    delete_rejections(conn, route)
    day, client = route.business_date, route.client_id
    whole_file = None
    if total and Decimal(rejected) / total > settings.max_reject_ratio:
        whole_file = (
            f"{rejected} of {total} rows rejected ({Decimal(rejected) / total:.1%}), "
            f"more than this client's max_reject_ratio {settings.max_reject_ratio}"
        )
    lineage = sql.SQL(", ").join(sql.Literal(v) for v in (client, day, route.entity))
    columns = sql.SQL(
        "INSERT INTO audit.rejections (client_id, business_date, entity, source_key, "
        "source_version, line_number, column_name, value, reason) "
    )
    if whole_file is not None:
        conn.execute(
            columns
            + sql.SQL(
                "SELECT {}, source_key, source_version, NULL, NULL, NULL, {} "
                "FROM audit.file_loads WHERE load_id = {}"
            ).format(lineage, sql.Literal(whole_file), sql.Literal(load_id))
        )
    conn.execute(
        columns
        + sql.SQL(
            "SELECT {}, f.source_key, f.source_version, c.line_number, c.column_name, c.value, "
            "c.reason FROM audit.chunk_rejections c JOIN audit.file_loads f USING (load_id) "
            "WHERE c.load_id = {} ORDER BY c.line_number, c.position"
        ).format(lineage, sql.Literal(load_id))
    )
    conn.execute("DELETE FROM audit.chunk_rejections WHERE load_id = %s", (load_id,))
    if whole_file is not None:
        storage.drop_unattached_leaves(conn, route.entity, load_id)
        storage.swap(conn, route.entity, day, client, None, [])
        record = complete_load(
            conn, route, load_id, status="rejected", rows_total=total, rows_loaded=0,
            rows_rejected=rejected, reason=whole_file,
        )  # fmt: skip
        logger.warning("file rejected", extra={"load_id": load_id, "reason": whole_file})
        return record
    storage.swap(conn, route.entity, day, client, load_id, leaves)
    record = complete_load(
        conn, route, load_id, status="loaded", rows_total=total, rows_loaded=loaded,
        rows_rejected=rejected,
    )  # fmt: skip
    logger.info(
        "file loaded in chunks",
        extra={"load_id": load_id, "chunks": len(leaves), "rows_loaded": loaded},
    )
    return record


def abandon_stale_loads(conn: psycopg.Connection) -> list[int]:
    """Loads staging for more than a day (a chunk dead-lettered and never redriven): their
    leaves are dropped and the load is recorded as abandoned; the input keeps its version."""
    rows = conn.execute(
        "SELECT load_id, client_id, entity, business_date, source_key FROM audit.file_loads "
        f"WHERE status = 'staging' AND started_at < now() - interval '{STALE_AFTER}'"
    ).fetchall()
    abandoned = []
    for load_id, client_id, entity, business_date, key in rows:
        route = Route(client_id, entity, business_date, key.endswith(".gz"))
        with conn.transaction():
            lock_input(conn, route)
            _abandon(conn, route, load_id, f"chunks not all staged within {STALE_AFTER}")
        abandoned.append(load_id)
    return abandoned
