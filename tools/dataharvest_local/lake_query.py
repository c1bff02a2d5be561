"""`dataharvest query`: SQL over the lake tables, in-process (DuckDB over Arrow scans).

Tables are named as in PostgreSQL (`raw.transactions`, `etl.portfolio_summary`): each name the
SQL mentions is resolved in the lake's catalog and its current snapshot's data files handed to
DuckDB as a pyarrow dataset under that name (lake_scan), so DuckDB pushes the query's filters
and columns into the scan: only the files of matching slices are opened, only the columns the
query uses read. Only the tables a query names are planned at all. Decimals stay exact
end to end: decimal(38, 18) in Iceberg, DECIMAL in DuckDB, `Decimal` in Python, their exact
text in every output format.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from dataharvest.lake import catalog as lake_catalog
from dataharvest.lake.location import LakeLocation
from dataharvest.lake.tables import LAKE_TABLES
from dataharvest_local import lake_scan

TABLE_NAME = re.compile(r"\b(raw|etl|audit)\s*\.\s*([a-z_][a-z0-9_]*)\b", re.IGNORECASE)


class QueryError(ValueError):
    """The query names a table the lake does not have, or DuckDB refused it."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def referenced_tables(sql_text: str) -> list[str]:
    names = {f"{m[1].lower()}.{m[2].lower()}" for m in TABLE_NAME.finditer(sql_text)}
    return sorted(names)


def run_query(
    sql_text: str,
    lake: LakeLocation,
    cat: Catalog | None = None,
    *,
    counter: lake_scan.ScanCounter | None = None,
) -> QueryResult:
    """Run the SQL over the lake; `counter`, when given, records the data files opened."""
    cat = cat or lake_catalog.catalog()
    filesystem = lake_scan.s3_filesystem(lake)
    con = duckdb.connect()
    try:
        for pg_name in referenced_tables(sql_text):
            try:
                iceberg = lake_catalog.load(lake, pg_name, cat)
            except NoSuchTableError as error:
                raise QueryError(
                    f"{pg_name} is not in the lake (yet): lake tables are "
                    f"{', '.join(LAKE_TABLES)}, created by their first export"
                ) from error
            arrow = lake_scan.dataset(iceberg, filesystem, counter)
            schema, table = pg_name.split(".")
            source = f"lake_{schema}_{table}"
            con.register(source, arrow)
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            con.execute(f'CREATE VIEW "{schema}"."{table}" AS SELECT * FROM "{source}"')
        try:
            cursor = con.execute(sql_text)
        except duckdb.Error as error:
            raise QueryError(str(error).splitlines()[0]) from error
        if cursor.description is None:
            return QueryResult([], [])
        return QueryResult([d[0] for d in cursor.description], cursor.fetchall())
    finally:
        con.close()


def text(value: Any) -> str:
    """A value as it is printed: decimals exact, without the trailing zeros of the lake scale."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        out = format(value, "f")
        return out.rstrip("0").rstrip(".") if "." in out else out
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def to_csv(result: QueryResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow([text(v) for v in row])
    return buffer.getvalue()


def _json_value(value: Any) -> str:
    # Decimals as JSON numbers with their exact digits (a float would round them).
    if isinstance(value, Decimal):
        return text(value)
    if isinstance(value, date | datetime):
        return json.dumps(value.isoformat())
    return json.dumps(value)


def to_json(result: QueryResult) -> str:
    """An array of objects, one per row, keys in column order."""
    objects = [
        "{"
        + ", ".join(
            f"{json.dumps(c)}: {_json_value(v)}" for c, v in zip(result.columns, row, strict=True)
        )
        + "}"
        for row in result.rows
    ]
    if not objects:
        return "[]\n"
    return "[\n  " + ",\n  ".join(objects) + "\n]\n"
