"""Header row -> which file field holds which contract column.

Names match case-insensitively after trimming, per-client aliases first; unknown names are
ignored (and reported); a missing required column or a column given twice rejects the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from dataharvest.persistence.exceptions import FileRejected
from dataharvest.persistence.settings import normalize_header
from dataharvest.schemas import Entity

# Every field is staged (one text column each, beside staging's own 4), and PostgreSQL takes
# at most 1,600 columns per table and about 8 kB per row: far more than any real file needs.
MAX_FIELDS = 1000


@dataclass(frozen=True)
class HeaderMap:
    field_count: int
    columns: dict[str, int]  # contract column -> 0-based field index; absent optional columns
    ignored: tuple[str, ...]  # header names that are no contract column, as written


def parse_header(line: bytes) -> list[str]:
    """The header line's field names (RFC 4180 quoting allowed)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRejected(f"not valid UTF-8: the header line has {error.reason}") from None
    if not text.strip():
        raise FileRejected("the file is empty: no header row")
    try:
        names = next(csv.reader([text], strict=True))
    except csv.Error as error:
        raise FileRejected(f"the header row is not valid CSV: {error}") from None
    if len(names) > MAX_FIELDS:
        raise FileRejected(
            f"the header has {len(names):,} fields, more than the {MAX_FIELDS:,} a file may have"
        )
    return names


def match_header(names: list[str], entity: Entity, aliases: dict[str, str]) -> HeaderMap:
    columns: dict[str, int] = {}
    ignored: list[str] = []
    for index, name in enumerate(names):
        normalized = normalize_header(name)
        column = aliases.get(normalized, normalized)
        if column not in entity.column_names:
            ignored.append(name)
            continue
        if column in columns:
            raise FileRejected(
                f"the header names column {column} twice (fields {columns[column] + 1} and "
                f"{index + 1}: {names[columns[column]]!r}, {name!r})"
            )
        columns[column] = index
    missing = [c for c in entity.required if c not in columns]
    if missing:
        raise FileRejected(
            f"the header lacks required column(s) {', '.join(missing)} "
            f"(found: {', '.join(repr(n) for n in names)}); a misspelled header can be "
            "mapped with `dataharvest config set-alias`"
        )
    return HeaderMap(field_count=len(names), columns=columns, ignored=tuple(ignored))
