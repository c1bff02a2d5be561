"""Rows of one client and date out of PostgreSQL as Arrow record batches, in bounded memory.

`COPY (SELECT ...) TO STDOUT (FORMAT csv)` streams the rows; pyarrow's incremental CSV reader
parses them block by block into batches with the lake types, so memory holds one block and one
batch whatever the size of the slice. CSV keeps NULL (unquoted empty) apart from the empty
string (quoted), and decimals travel as their exact text.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from dataharvest.lake.tables import LakeTable

BLOCK_BYTES = 8 << 20
Chunk = bytes | bytearray | memoryview


class _CopyReader(io.RawIOBase):
    """A read-only file over the chunks of a COPY ... TO STDOUT."""

    def __init__(self, chunks: Iterator[Chunk]):
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def slice_batches(
    conn: psycopg.Connection, table: LakeTable, client_id: str, day: date
) -> Iterator[pa.RecordBatch]:
    """The rows of `table` for one client and date, in batches of the lake schema."""
    query = sql.SQL(
        "COPY (SELECT {columns} FROM {table} WHERE client_id = {client} AND business_date = {day})"
        " TO STDOUT (FORMAT csv)"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
        table=sql.Identifier(*table.pg_name.split(".")),
        client=sql.Literal(client_id),
        day=sql.Literal(day),
    )
    with conn.cursor().copy(query) as copy:
        chunks = iter(copy)
        first = next(chunks, None)
        if first is None:
            return
        reader = pacsv.open_csv(
            io.BufferedReader(_CopyReader(_prepend(first, chunks)), BLOCK_BYTES),
            read_options=pacsv.ReadOptions(
                column_names=table.column_names, block_size=BLOCK_BYTES, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(zip(table.column_names, table.arrow_schema.types, strict=True)),
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        for batch in reader:
            if batch.num_rows:
                yield batch


def _prepend(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest
