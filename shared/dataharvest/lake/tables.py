"""Which PostgreSQL tables the lake holds and how their columns map to Iceberg and Arrow.

A lake table has the columns of its PostgreSQL table or view, in the same order, read from the
PostgreSQL catalog at export time, so a column added by a migration reaches the lake without a
list to keep in step. Money is NUMERIC in PostgreSQL and decimal(38, 18) here: exact, and a
value with more than 18 decimal places is refused by the conversion rather than rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
)

from dataharvest.lake.exceptions import LakeSchemaError

# The current version of each raw input and each output that leaves the hot store.
LAKE_TABLES = (
    "raw.clients",
    "raw.portfolios",
    "raw.accounts",
    "raw.transactions",
    "etl.portfolio_summary",
    "etl.client_tax_summary",
    "audit.rejections",
    "audit.data_quality_issues",
)
PARTITION_COLUMNS = ("business_date", "client_id")
DECIMAL_PRECISION, DECIMAL_SCALE = 38, 18

# PostgreSQL type (format_type) -> (Iceberg type, Arrow type).
_TYPES: dict[str, tuple[IcebergType, pa.DataType]] = {
    "text": (StringType(), pa.string()),
    "date": (DateType(), pa.date32()),
    "smallint": (IntegerType(), pa.int32()),
    "integer": (IntegerType(), pa.int32()),
    "bigint": (LongType(), pa.int64()),
    "boolean": (BooleanType(), pa.bool_()),
    "numeric": (
        DecimalType(DECIMAL_PRECISION, DECIMAL_SCALE),
        pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
    ),
}


@dataclass(frozen=True)
class LakeColumn:
    name: str
    pg_type: str
    iceberg_type: IcebergType
    arrow_type: pa.DataType


@dataclass(frozen=True)
class LakeTable:
    pg_name: str
    columns: tuple[LakeColumn, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    @property
    def iceberg_schema(self) -> Schema:
        # Optional fields throughout: a view's columns carry no NOT NULL, and the lake keeps
        # what PostgreSQL holds rather than restating its constraints.
        return Schema(
            *(
                NestedField(i, c.name, c.iceberg_type, required=False)
                for i, c in enumerate(self.columns, start=1)
            )
        )

    @property
    def partition_spec(self) -> PartitionSpec:
        ids = {c.name: i for i, c in enumerate(self.columns, start=1)}
        return PartitionSpec(
            PartitionField(ids["business_date"], 1000, DayTransform(), "business_date_day"),
            PartitionField(ids["client_id"], 1001, IdentityTransform(), "client_id"),
        )


def describe(conn: psycopg.Connection, pg_name: str) -> LakeTable:
    """The lake shape of a PostgreSQL table or view, from its catalog entry."""
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, NULL)
        FROM pg_attribute a
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (pg_name,),
    ).fetchall()
    columns = []
    for name, pg_type in rows:
        if pg_type not in _TYPES:
            raise LakeSchemaError(
                f"{pg_name}.{name}: PostgreSQL type {pg_type} has no lake mapping "
                f"(supported: {', '.join(sorted(_TYPES))}); add it to dataharvest.lake.tables"
            )
        iceberg_type, arrow_type = _TYPES[pg_type]
        columns.append(LakeColumn(name, pg_type, iceberg_type, arrow_type))
    missing = [c for c in PARTITION_COLUMNS if c not in {col.name for col in columns}]
    if missing:
        raise LakeSchemaError(f"{pg_name}: a lake table needs the columns {', '.join(missing)}")
    return LakeTable(pg_name, tuple(columns))
