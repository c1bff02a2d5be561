"""Rows of one client and date out of PostgreSQL as Arrow record batches, in bounded memory.

`COPY (SELECT ...) TO STDOUT (FORMAT csv)` streams the rows; pyarrow's incremental CSV reader
parses them block by block into batches with the lake types, so memory holds a few blocks and
one batch whatever the size of the slice. CSV keeps NULL (unquoted empty) apart from the empty
string (quoted), and decimals travel as their exact text.

Two costs are kept off the stream (measured in BENCHMARKS.md, "Lake tier"):
- Columns with one value in the whole slice are not copied: `client_id` and `business_date`
  (the slice's own key) always, and the lineage columns of a raw view when the slice is one
  load (it always is: a slice is one input's current version). They are added to each batch as
  constant arrays.
- The server sends a COPY as one protocol message per row. A reader thread takes them from
  libpq directly (psycopg's COPY reader costs three times as much Python per row) and gathers
  them into blocks of about `HANDOVER_BYTES` while the caller parses and writes the previous
  block: pyarrow's parsing and Parquet writing release the GIL, so they overlap. The queue
  between them holds at most `QUEUED_BLOCKS` blocks.
"""

from __future__ import annotations

import hashlib
import io
import queue
import select
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import pq, sql
from psycopg.errors import QueryCanceled
from psycopg.pq.abc import PGconn, PGresult

from dataharvest.lake.tables import LakeTable

# Part of every slice fingerprint: raise it when a change to the export itself (types,
# encoding) must rewrite slices whose rows did not change.
EXPORT_FORMAT = 1
BLOCK_BYTES = 8 << 20
HANDOVER_BYTES = 1 << 20
QUEUED_BLOCKS = 8
# Columns that hold one value per load: sent once, not once per row, when the slice is one load.
LINEAGE_COLUMNS = ("source_key", "source_version", "load_id")

_END = object()
_DONE = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


@dataclass(frozen=True)
class Lineage:
    """A slice's lineage columns, probed once per export (`slice_lineage`)."""

    # Their values when one combination holds the whole slice; {} when several do (or the
    # table has none): then they are copied row by row.
    values: dict[str, Any]
    # Whether the slice has no rows at all (known for tables with lineage columns only).
    empty: bool = False


def slice_batches(
    conn: psycopg.Connection,
    table: LakeTable,
    client_id: str,
    day: date,
    lineage: Lineage | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows of `table` for one client and date, in batches of the lake schema
    (`lineage`: the slice's, when the caller has probed it already)."""
    where = _slice_where(client_id, day)
    source = sql.Identifier(*table.pg_name.split("."))
    if lineage is None:
        lineage = slice_lineage(conn, table, client_id, day)
    constants: dict[str, Any] = {"client_id": client_id, "business_date": day}
    constants.update(lineage.values)
    copied = [c for c in table.column_names if c not in constants]
    query = sql.SQL(
        "COPY (SELECT {columns} FROM {table} WHERE {where}) TO STDOUT (FORMAT csv)"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in copied), table=source, where=where
    )
    schema = table.arrow_schema
    blocks = _Handover(conn, query)
    try:
        first = blocks.next_block()
        if first is None:
            return
        reader = pacsv.open_csv(
            io.BufferedReader(_BlockReader(first, blocks), BLOCK_BYTES),
            read_options=pacsv.ReadOptions(
                column_names=copied, block_size=BLOCK_BYTES, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: schema.field(c).type for c in copied},
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        built: dict[str, pa.Array] = {}
        for batch in reader:
            if batch.num_rows:
                yield _with_constants(batch, schema, constants, built)
    finally:
        blocks.close()


def slice_fingerprint(table: LakeTable, lineage: Lineage) -> str | None:
    """A value that changes whenever the rows `slice_batches` would stream may have changed,
    or None where there is no cheap one (the slice is then always exported).

    Only the raw views have one: their rows live in one leaf per load that is written once and
    never updated (a new version is a new load; retention and retraction detach whole leaves),
    so the load id names the rows. With the table's columns and `EXPORT_FORMAT` it names the
    export too. Derived from the slice's lineage, no query of its own."""
    if "load_id" not in table.column_names:
        return None
    if lineage.empty:
        rows = "empty"
    elif "load_id" in lineage.values:
        rows = f"load {lineage.values['load_id']}"
    else:
        return None  # several loads in one slice: no single name for its rows
    columns = ",".join(f"{c.name}:{c.pg_type}" for c in table.columns)
    text = f"{EXPORT_FORMAT}|{table.pg_name}|{columns}|{rows}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _slice_where(client_id: str, day: date) -> sql.Composed:
    return sql.SQL("client_id = {client} AND business_date = {day}").format(
        client=sql.Literal(client_id), day=sql.Literal(day)
    )


def slice_lineage(conn: psycopg.Connection, table: LakeTable, client_id: str, day: date) -> Lineage:
    """The slice's lineage columns' values when the whole slice has one combination of them."""
    where = _slice_where(client_id, day)
    source = sql.Identifier(*table.pg_name.split("."))
    lineage = [c for c in LINEAGE_COLUMNS if c in table.column_names]
    if not lineage:
        return Lineage({})
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in lineage)
    if "load_id" in lineage:
        # A raw view: its rows live in one leaf partition per load (RANGE (load_id, ...)), and
        # the other lineage columns follow from the load. One row names a load; whether any
        # other load has rows in the slice is answered by partition pruning (`<>`, IS NULL), without
        # reading a row (a GROUP BY over the slice read all of them: 0.27 s per million).
        first = conn.execute(
            sql.SQL("SELECT {columns} FROM {table} WHERE {where} LIMIT 1").format(
                columns=columns, table=source, where=where
            )
        ).fetchone()
        if first is None:
            return Lineage({}, empty=True)
        values = dict(zip(lineage, first, strict=True))
        other = conn.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE {where} "
                "AND (load_id <> {load} OR load_id IS NULL))"
            ).format(table=source, where=where, load=sql.Literal(values["load_id"]))
        ).fetchone()
        return Lineage({} if other is None or other[0] else values)
    rows = conn.execute(
        sql.SQL("SELECT {columns} FROM {table} WHERE {where} GROUP BY {columns} LIMIT 2").format(
            columns=columns, table=source, where=where
        )
    ).fetchall()
    if len(rows) != 1:  # several loads (or none): the columns are copied row by row
        return Lineage({}, empty=not rows)
    return Lineage(dict(zip(lineage, rows[0], strict=True)))


def _with_constants(
    batch: pa.RecordBatch, schema: pa.Schema, constants: dict[str, Any], built: dict[str, pa.Array]
) -> pa.RecordBatch:
    columns = []
    for field in schema:
        if field.name not in constants:
            columns.append(batch.column(field.name))
            continue
        # Built once per slice for the largest batch so far; each batch takes a zero-copy
        # slice (repeating a string a million times per batch cost 0.3 s per 1M rows).
        array = built.get(field.name)
        if array is None or len(array) < batch.num_rows:
            array = pa.repeat(pa.scalar(constants[field.name], field.type), batch.num_rows)
            built[field.name] = array
        columns.append(array.slice(0, batch.num_rows))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class _Handover:
    """Runs the COPY in a thread of its own and hands its rows over in blocks of ~1 MiB."""

    def __init__(self, conn: psycopg.Connection, query: sql.Composed):
        self._blocks: queue.Queue[object] = queue.Queue(maxsize=QUEUED_BLOCKS)
        self._stop = threading.Event()
        self._ended = False  # readers ask again after the end (pyarrow's readahead does)
        self._thread = threading.Thread(
            target=self._copy, args=(conn, query), name="lake-copy", daemon=True
        )
        self._thread.start()

    def _copy(self, conn: psycopg.Connection, query: sql.Composed) -> None:
        try:
            with conn.lock:
                self._copy_out(conn, query.as_bytes(conn))
            self._put(_END)
        except BaseException as error:  # handed to the reading thread, which raises it
            self._put(error)

    def _copy_out(self, conn: psycopg.Connection, statement: bytes) -> None:
        """COPY ... TO STDOUT on libpq directly. psycopg's COPY reader costs ~1 us of Python
        per row (a generator round trip per protocol message, and the server sends one
        message per row); calling `get_copy_data` in a tight loop costs a third of that
        (BENCHMARKS.md, "Lake tier"). The connection's lock keeps psycopg off it meanwhile."""
        pgconn = conn.pgconn
        pgconn.send_query(statement)
        result = _next_result(pgconn)
        if result is None or result.status != pq.ExecStatus.COPY_OUT:
            _finish(conn, result)
            return
        block = bytearray()
        get_copy_data = pgconn.get_copy_data
        cancelled = False
        while True:
            size, data = get_copy_data(1)  # 1: never block, holding the GIL, in libpq
            if size > 0:
                if cancelled:
                    continue  # draining what the server sent before it saw the cancel
                # bytearray += is the cheapest per-row step (one C call; a list and join
                # cost twice as much at a million rows).
                block += data
                if len(block) >= HANDOVER_BYTES:
                    if not self._put(bytes(block)):
                        conn.cancel_safe()  # the reader gave up: stop the server's COPY
                        cancelled = True
                    block.clear()
            elif size == 0:
                _wait_readable(pgconn)
            else:
                break
        if block and not cancelled:
            self._put(bytes(block))
        _finish(conn, _next_result(pgconn), cancelled)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next_block(self) -> bytes | None:
        if self._ended:
            return None
        item = self._blocks.get()
        if item is _END:
            self._ended = True
            return None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        """Stops the thread (a reader that gave up early) and waits for it: the connection
        is free again when this returns."""
        self._stop.set()
        self._thread.join()


def _next_result(pgconn: PGconn) -> PGresult | None:
    while pgconn.is_busy():
        _wait_readable(pgconn)
    return pgconn.get_result()


def _finish(conn: psycopg.Connection, result: PGresult | None, cancelled: bool = False) -> None:
    """Reads the statement's remaining results; raises the first error among them (but not
    the cancel we asked for)."""
    error: psycopg.Error | None = None
    while result is not None:
        if error is None and result.status not in _DONE:
            error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        result = _next_result(conn.pgconn)
    if error is not None and not (cancelled and isinstance(error, QueryCanceled)):
        raise error


def _wait_readable(pgconn: PGconn) -> None:
    """Blocks (GIL released) until the server sends more, then lets libpq read it."""
    select.select([pgconn.socket], [], [])
    pgconn.consume_input()


class _BlockReader(io.RawIOBase):
    """A read-only file over the handed-over blocks."""

    def __init__(self, first: bytes, blocks: _Handover):
        self._blocks = blocks
        self._pending = memoryview(first)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while not self._pending:
            block = self._blocks.next_block()
            if block is None:
                return 0
            self._pending = memoryview(block)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
