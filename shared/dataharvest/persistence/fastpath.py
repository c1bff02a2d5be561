"""The fast path of a load: plainly valid lines go straight into the leaf, the rest to staging.

Most lines of most files are plain: one record per line, every value already in the form the
contract's rules accept and the table stores (no surrounding white space, no lower-case
keyword, quoted or not). For such lines PostgreSQL's typed `COPY` into the leaf stores exactly
what the staged validation would, so each block of the body is checked against one regular
expression built from the header (in C, in this process, while the server ingests the
previous block) and streamed into the leaf with no staging table in between.

A block with a line the expression does not accept is taken line by line: its plain lines
still go to the leaf (numbered explicitly), and every other record (a quoted newline, a blank
line, surrounding white space, a value the rules may reject...) is set aside with its line
number for the staged path, which applies every rule to just those records and reports every
rejection. The check is conservative, never lenient: whatever it does not accept gets the full
rules. A file whose set-aside records pass SET_ASIDE_LIMIT bytes takes the staged path whole.
Fields that are no contract column are copied into placeholder columns of the leaf and the
columns dropped (COPY cannot skip a field; dropping a column rewrites nothing).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from dataharvest.persistence import staging, validate
from dataharvest.persistence.header import HeaderMap
from dataharvest.persistence.storage import Leaf
from dataharvest.schemas import Column, Entity

# Field patterns, each a subset of what the contract's rules accept for the column. Written so
# that nothing backtracks (possessive runs, `*+`/`++`): a text value is runs of non-blank
# characters separated by runs of blanks, so it neither starts nor ends with a blank. The same
# language as "an edge, then any characters and an edge", checked ~4x faster by Python's `re`.
_TEXT_EDGE = rb'[^,"\r\n \t]'
TEXT = _TEXT_EDGE + rb"++(?:[ \t]++" + _TEXT_EDGE + rb"++)*+"
# Inside quotes commas are data and a quote is written twice.
_QUOTED_CHAR = rb'(?:[^"\r\n]|"")'
_QUOTED_EDGE = rb'(?:[^"\r\n \t]|"")'
QUOTED_TEXT = rb'"' + _QUOTED_EDGE + rb"(?:" + _QUOTED_CHAR + rb"*" + _QUOTED_EDGE + rb')?"'
# Printable ASCII without lower-case letters, comma and quote: upper() leaves it unchanged.
_UPPER_EDGE = rb"[!#-+\--`{-~]"
UPPER_TEXT = _UPPER_EDGE + rb"++(?:[ \t]++" + _UPPER_EDGE + rb"++)*+"
INTEGER = rb"[+-]?[0-9]{1,18}"  # 18 digits always fit a bigint; longer ones are staged
DECIMAL = rb"[+-]?[0-9]+(?:\.[0-9]+)?"
NON_NEGATIVE_DECIMAL = rb"[0-9]+(?:\.[0-9]+)?"
CURRENCY = rb"[A-Z]{3}"

SET_ASIDE_LIMIT = 32 << 20  # bytes of records set aside for staging, held in memory


class NotPlain(Exception):
    """The file takes the staged path whole."""


def field_pattern(column: Column) -> bytes:
    if column.type == "integer":
        plain = INTEGER
    elif column.type == "decimal":
        plain = NON_NEGATIVE_DECIMAL if column.non_negative else DECIMAL
    elif column.currency:
        plain = CURRENCY
    elif column.upper:
        plain = UPPER_TEXT
    else:
        plain = TEXT
    quoted = QUOTED_TEXT if plain is TEXT else rb'"' + plain + rb'"'
    pattern = rb"(?:" + plain + rb"|" + quoted + rb")"
    # An unquoted empty field is NULL to COPY, as a missing value is to the rules; a quoted
    # empty field ("") is an empty string to COPY, so it is never plain.
    return pattern if column.required else pattern + rb"?"


@dataclass(frozen=True)
class LinePlan:
    block: re.Pattern[bytes]  # any number of plain lines, each with its line end
    line: re.Pattern[bytes]  # one plain line without its "\n"
    columns: list[str]  # leaf columns in file order
    # One plain line from line start to line end (MULTILINE), its text key the only group;
    # None when the key is no text column of the file. See `plain_block`.
    keyed: re.Pattern[bytes] | None = None


# A field that is no contract column: anything COPY reads as one field on one line.
IGNORED = rb'(?:[^,"\r\n]*|"(?:[^"\r\n]|"")*")'
IGNORED_PREFIX = "ignored_field_"  # placeholder columns, dropped once the rows are in


def plan(entity: Entity, header: HeaderMap) -> LinePlan:
    """The patterns and the leaf columns in file order. A field that is no contract column
    goes to a placeholder column of the leaf (COPY cannot skip a field), dropped afterwards."""
    by_field = {index: name for name, index in header.columns.items()}
    names = [by_field.get(i, f"{IGNORED_PREFIX}{i + 1}") for i in range(header.field_count)]
    fields = [
        IGNORED if name.startswith(IGNORED_PREFIX) else field_pattern(entity.column(name))
        for name in names
    ]
    line = b",".join(fields)
    keyed = None
    key = entity.unique_column
    if key.type == "text" and key.name in header.columns:
        # The field patterns hold no capturing group: the key's is the only one.
        index = header.columns[key.name]
        fields[index] = b"(" + fields[index] + b")"
        keyed = re.compile(b"^" + b",".join(fields) + rb"\r?$", re.MULTILINE)
    # Possessive: a line's match ends at its line end, so giving an earlier line back can never
    # help; without the `+` the loop keeps a backtracking point per line (3-4x slower).
    return LinePlan(
        re.compile(rb"(?:" + line + rb"\r?\n)*+"), re.compile(line + rb"\r?"), names, keyed
    )


def plain_block(planned: LinePlan, block: bytes, keys: KeyOrder | None = None) -> bool:
    """Whether every line of `block` (whole lines, each with its line end) is plain; the key
    proof is fed on the way.

    While the keys may still be proven and the block has no quote, one pass of `keyed` both
    checks the lines and collects their keys (a third less time than the block check plus the
    key split): each match is one whole line (`^` to `$`, no field crosses a line end, no line
    is empty since the key is required), so as many matches as line ends means every line
    matched. Otherwise the block check decides."""
    if keys is not None and keys.proven and planned.keyed is not None and b'"' not in block:
        # Up to the last line end, not past it: `^` would match the empty end as a line.
        found = planned.keyed.findall(block, 0, len(block) - 1)
        if len(found) != block.count(b"\n"):
            return False
        keys.feed_keys(found)
        return True
    if planned.block.fullmatch(block) is None:
        return False
    if keys is not None:
        keys.feed(block)
    return True


@dataclass
class Copied:
    rows: int = 0  # plain rows copied into the leaf
    set_aside: list[tuple[int, bytes]] = field(default_factory=list)  # (line, record)
    keys_distinct: bool = False  # proven by KeyOrder: no two copied rows share the key


class KeyOrder:
    """Proves a file's within-file keys distinct while its blocks go by, when the keys come in
    strictly increasing byte order (partner exports usually list records by their reference):
    the load then skips the distinct-key count, a full scan and sort of the leaf (~0.4 s per
    million rows), and the work moves to this process, where it overlaps the server's COPY.

    Conservative, never lenient: only text keys (an integer's text orders differently from its
    value); a block with a quote (the key's text could differ from its value), an empty key or a
    key not above the one before ends the proof, and the count decides as before. Distinct
    bytes are distinct text values: PostgreSQL compares text byte by byte for equality."""

    def __init__(self, entity: Entity, header: HeaderMap):
        column = entity.unique_column
        index = header.columns.get(column.name)
        self.proven = column.type == "text" and index is not None
        # The key field of each line, in lines without quotes: no field holds a comma or a
        # line end. (Plain blocks take their keys from `LinePlan.keyed` instead, in the pass
        # that checks them; this serves the lines of mixed blocks.)
        self._key = re.compile(rb"^(?:[^,\r\n]*,){%d}([^,\r\n]*)" % (index or 0), re.MULTILINE)
        self._last = b""

    def feed(self, lines: bytes) -> None:
        """Whole lines, every one of them copied into the leaf (blank lines aside)."""
        if not self.proven:
            return
        if b'"' in lines:
            self.proven = False
            return
        # Up to the last line end, not past it: `^` would match the empty end as a line.
        self.feed_keys(self._key.findall(lines, 0, len(lines) - lines.endswith(b"\n")))

    def feed_keys(self, keys: list[bytes]) -> None:
        """The keys of whole lines, in file order, every one of them copied into the leaf."""
        if not keys or not self.proven:
            return
        # Strictly increasing from the last key of the previous block on; b"" (no key yet, or
        # an empty key) is below every key, so an empty key fails the first comparison.
        self.proven = self._last < keys[0] and all(map(operator.lt, keys, islice(keys, 1, None)))
        self._last = keys[-1]

    def give_up(self) -> None:
        self.proven = False


class _LeafCopy:
    """The leaf's COPY, restarted around the explicitly numbered lines of a mixed block."""

    def __init__(self, conn: psycopg.Connection, leaf: Leaf, columns: list[str]):
        self.conn = conn
        names = sql.SQL(", ").join(sql.Identifier(n) for n in columns)
        self.sequenced = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            leaf.identifier, names
        )
        self.numbered = sql.SQL("COPY {} (line_number, {}) FROM STDIN (FORMAT csv)").format(
            leaf.identifier, names
        )
        self.cursor = conn.cursor()
        self.statement: sql.Composed | None = None
        self.copy: psycopg.Copy | None = None
        self.context: AbstractContextManager[psycopg.Copy] | None = None
        self.rows = 0

    def write(self, data: bytes, numbered: bool = False) -> None:
        statement = self.numbered if numbered else self.sequenced
        if self.context is not None and self.statement is not statement:
            self.close()
        if self.context is None:
            self.statement = statement
            self.context = self.cursor.copy(statement, writer=QueuedLibpqWriter(self.cursor))
            self.copy = self.context.__enter__()
        assert self.copy is not None
        self.copy.write(data)

    def close(self, error: BaseException | None = None) -> None:
        if self.context is not None:
            context, self.context = self.context, None
            context.__exit__(type(error) if error else None, error, None)
            if error is None:
                self.rows += self.cursor.rowcount


def copy_lines(
    conn: psycopg.Connection,
    leaf: Leaf,
    planned: LinePlan,
    body: Iterator[bytes],
    first_line: int = 2,
    keys: KeyOrder | None = None,
) -> Copied:
    """COPY the body's plain lines into the leaf; returns them counted, and the other records
    with their lines (and, with `keys`, whether the copied rows' keys are proven distinct).
    Raises NotPlain (or a psycopg DataError) when the file must be staged whole; the caller
    rolls back."""
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
    out = _LeafCopy(conn, leaf, planned.columns)
    copied = Copied()
    walker = _Walker(planned.line, first_line, copied)
    try:
        pending = b""
        for chunk in body:
            data = pending + chunk if pending else chunk
            end = data.rfind(b"\n") + 1
            complete, pending = data[:end], data[end:]
            if not complete:
                continue
            # The check runs while the server ingests the previous block.
            if walker.open_record is None and plain_block(planned, complete, keys):
                if walker.renumber:
                    _restart_sequence(out, walker.line)
                    walker.renumber = False
                out.write(complete)
                walker.line += complete.count(b"\n")
                continue
            _walk(walker, out, complete, keys)
            if walker.set_aside_bytes > SET_ASIDE_LIMIT:
                raise NotPlain(f"more than {SET_ASIDE_LIMIT} bytes of records to stage")
        if pending:  # the last line has no line end
            _walk(walker, out, pending, keys)
        walker.finish()
        out.close()
    except BaseException as error:
        out.close(error)
        raise
    copied.rows = out.rows
    copied.keys_distinct = keys is not None and keys.proven and not copied.set_aside
    return copied


def _walk(walker: _Walker, out: _LeafCopy, text: bytes, keys: KeyOrder | None) -> None:
    """A mixed block (whole lines, or the last line without its line end): its plain lines
    numbered into the leaf, the rest set aside."""
    set_aside = len(walker.copied.set_aside)
    open_before = walker.open_record is not None
    lines = text.split(b"\n")
    if text.endswith(b"\n"):
        lines.pop()
    numbered = walker.walk(lines)
    if numbered:
        out.write(b"".join(numbered), numbered=True)
    if keys is not None:
        if open_before or len(walker.copied.set_aside) > set_aside:
            keys.give_up()  # staged records join the leaf: only the count can tell
        else:
            keys.feed(text)


def _restart_sequence(out: _LeafCopy, line: int) -> None:
    out.close()
    out.conn.execute("SELECT setval('pg_temp.line_numbers', %s, false)", (line,))


class _Walker:
    """Line by line through mixed blocks, keeping records whose quotes span lines whole."""

    def __init__(self, line_pattern: re.Pattern[bytes], first_line: int, copied: Copied):
        self.pattern = line_pattern
        self.line = first_line  # the line the next physical line is
        self.copied = copied
        self.open_record: tuple[int, list[bytes]] | None = None  # a quote still open
        self.renumber = False  # lines were numbered explicitly: the sequence must catch up
        self.set_aside_bytes = 0

    def walk(self, lines: list[bytes]) -> list[bytes]:
        numbered = []
        for text in lines:
            if self.open_record is not None:
                self.open_record[1].append(text)
                if text.count(b'"') % 2:  # the quote opened earlier closes on this line
                    self._set_aside(self.open_record[0], b"\n".join(self.open_record[1]))
                    self.open_record = None
            elif self.pattern.fullmatch(text):
                numbered.append(b"%d,%b\n" % (self.line, text))
            elif text.count(b'"') % 2:
                self.open_record = (self.line, [text])
            elif text.strip(b"\r"):
                self._set_aside(self.line, text)
            # else: a blank line holds no record
            self.line += 1
        self.renumber = True
        return numbered

    def _set_aside(self, line: int, record: bytes) -> None:
        self.copied.set_aside.append((line, record))
        self.set_aside_bytes += len(record)

    def finish(self) -> None:
        if self.open_record is not None:
            # A quote never closed: the staged path reports it for the whole file.
            raise NotPlain("a quoted field is never closed")


class LoadedLines(NamedTuple):
    records: int
    loaded: int  # rows in the leaf
    keys_distinct: bool  # proven while copying (KeyOrder); False: not known, count them


def load_lines(
    conn: psycopg.Connection,
    entity: Entity,
    header: HeaderMap,
    leaf: Leaf,
    plain: LinePlan,
    body: Iterator[bytes],
    first_line: int,
) -> LoadedLines:
    """Plain lines straight into the leaf, the records set aside through the staged rules
    (their rejections in pg_temp.rejects)."""
    placeholders = [n for n in plain.columns if n.startswith(IGNORED_PREFIX)]
    for name in placeholders:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(
                leaf.identifier, sql.Identifier(name)
            )
        )
    copied = copy_lines(conn, leaf, plain, body, first_line, KeyOrder(entity, header))
    records, loaded = copied.rows, copied.rows
    if copied.set_aside:
        staging.create_staging(conn, header.field_count, first_line)
        records += staging.copy_records(conn, header.field_count, copied.set_aside)
        conn.execute(validate.create_rejects())
        staged = conn.execute(validate.insert_rows(entity, header, leaf.identifier, False))
        loaded += staged.rowcount
        if staged.rowcount < len(copied.set_aside):
            conn.execute(validate.insert_rule_rejects(entity, header))
        conn.execute(sql.SQL("DROP TABLE {}").format(staging.STAGING))
    for name in placeholders:
        # Dropping a column only marks it dropped: no rewrite. The ignored text stays in the
        # heap (bytes the rows carry until the leaf is dropped), and the leaf attaches as usual.
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(leaf.identifier, sql.Identifier(name))
        )
    return LoadedLines(records, loaded, copied.keys_distinct)
