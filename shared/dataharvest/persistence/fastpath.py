"""The fast path of a load: a file whose every line is plainly valid goes straight into its leaf.

Most files are clean: one record per line, no quotes, every value already in the form the
contract's rules accept and the table stores (no surrounding white space, no lower-case
keyword). For such a file, PostgreSQL's typed `COPY` into the leaf stores exactly what the
staged validation would, so the file is checked line by line against one regular expression
built from its header (in C, in this process, while the server ingests the previous chunk) and
streamed into the leaf without a staging table.

The check is conservative, never lenient: a line it does not accept (a quote, a blank line,
surrounding white space, '+5' for a non-negative value, a 19-digit integer, a lower-case
keyword, any byte outside its classes) sends the whole file to the staged path, which applies
every rule and reports every rejection. So do ignored extra columns (COPY cannot skip a field)
and any error COPY raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from dataharvest.persistence.header import HeaderMap
from dataharvest.persistence.storage import Leaf
from dataharvest.schemas import Column, Entity

# Field patterns, each a subset of what the contract's rules accept for the column.
_TEXT_CHAR = rb'[^,"\r\n]'
_TEXT_EDGE = rb'[^,"\r\n \t]'
TEXT = _TEXT_EDGE + rb"(?:" + _TEXT_CHAR + rb"*" + _TEXT_EDGE + rb")?"
# Printable ASCII without lower-case letters, comma and quote: upper() leaves it unchanged.
_UPPER_EDGE = rb"[!#-+\--`{-~]"
UPPER_TEXT = _UPPER_EDGE + rb"(?:[ \t!#-+\--`{-~]*" + _UPPER_EDGE + rb")?"
INTEGER = rb"[+-]?[0-9]{1,18}"  # 18 digits always fit a bigint; longer ones take the slow path
DECIMAL = rb"[+-]?[0-9]+(?:\.[0-9]+)?"
NON_NEGATIVE_DECIMAL = rb"[0-9]+(?:\.[0-9]+)?"
CURRENCY = rb"[A-Z]{3}"


class NotPlain(Exception):
    """A line the fast path does not accept: the file takes the staged path."""


def field_pattern(column: Column) -> bytes:
    if column.type == "integer":
        pattern = INTEGER
    elif column.type == "decimal":
        pattern = NON_NEGATIVE_DECIMAL if column.non_negative else DECIMAL
    elif column.currency:
        pattern = CURRENCY
    elif column.upper:
        pattern = UPPER_TEXT
    else:
        pattern = TEXT
    return pattern if column.required else rb"(?:" + pattern + rb")?"


def plan(entity: Entity, header: HeaderMap) -> tuple[re.Pattern[bytes], list[str]] | None:
    """The block pattern and the leaf columns in file order; None when the file's shape rules
    the fast path out (a field that is no contract column)."""
    by_field = {index: name for name, index in header.columns.items()}
    if len(by_field) != header.field_count:
        return None
    names = [by_field[i] for i in range(header.field_count)]
    line = b",".join(field_pattern(entity.column(name)) for name in names)
    return re.compile(rb"(?:" + line + rb"\r?\n)*"), names


def copy_plain(
    conn: psycopg.Connection,
    leaf: Leaf,
    block: re.Pattern[bytes],
    names: list[str],
    body: Iterator[bytes],
    first_line: int = 2,
) -> int:
    """COPY the body into the leaf, checking each line first; returns the rows copied.

    Raises NotPlain (or a psycopg DataError) on the first line that needs the staged path; the
    caller rolls back. Line numbers come from a sequence: every record is one line here.
    """
    conn.execute("CREATE TEMP SEQUENCE IF NOT EXISTS pg_temp.line_numbers")
    conn.execute(
        sql.SQL("ALTER SEQUENCE pg_temp.line_numbers RESTART WITH {} CACHE 10000").format(
            sql.Literal(first_line)
        )
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ALTER line_number SET DEFAULT nextval('pg_temp.line_numbers')"
        ).format(leaf.identifier)
    )
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        leaf.identifier, sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )
    with conn.cursor() as cur:
        with cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
            pending = b""
            for chunk in body:
                data = pending + chunk if pending else chunk
                end = data.rfind(b"\n") + 1
                complete, pending = data[:end], data[end:]
                if complete:
                    if block.fullmatch(complete) is None:
                        raise NotPlain
                    copy.write(complete)
            if pending:
                # The last line has no line end.
                if block.fullmatch(pending + b"\n") is None:
                    raise NotPlain
                copy.write(pending + b"\n")
        rows = cur.rowcount
    return rows
