"""The lake exporter on the real local stack: uploads through S3 -> persistence -> catapult ->
lake_exporter -> Iceberg tables on the local S3 endpoint with the SQL catalog in PostgreSQL."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from drops import delete_upload
from pyiceberg.expressions import And, EqualTo

from dataharvest import cli, metastore
from dataharvest.lake import catalog as lake_catalog
from dataharvest.lake.export import export_work
from dataharvest.lake.settings import load_lake_settings
from dataharvest.lake.tables import LAKE_TABLES
from dataharvest.transformers import runtime
from dataharvest.work import WorkMessage

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "acme-bank"
DAY = date(2024, 1, 2)
KEY = "20240102"
NAMES = ("clients", "portfolios", "accounts", "transactions")
EXPORTER = runtime.Transformer(name="lake_exporter", output_tables=(), write_outside=export_work)


def upload(stack_info, client_id: str, name: str, content: bytes) -> None:
    boto3.client("s3").put_object(
        Bucket=stack_info.export("LandingBucketName"), Key=f"{client_id}/{name}", Body=content
    )


def upload_example(stack_info, client_id: str) -> None:
    for name in NAMES:
        upload(
            stack_info, client_id, f"{name}_{KEY}.csv", (EXAMPLE / f"{name}_{KEY}.csv").read_bytes()
        )


def lake_table(pg_name: str):
    lake = load_lake_settings()
    return lake_catalog.open_catalog(lake).load_table(lake_catalog.identifier(lake, pg_name))


def lake_rows(pg_name: str, client_id: str, snapshot_id: int | None = None) -> list[tuple]:
    where = And(EqualTo("client_id", client_id), EqualTo("business_date", DAY.isoformat()))
    arrow = lake_table(pg_name).scan(row_filter=where, snapshot_id=snapshot_id).to_arrow()
    return sorted(tuple(r.values()) for r in arrow.to_pylist())


def pg_rows(db, pg_name: str, client_id: str) -> list[tuple]:
    columns = [f.name for f in lake_table(pg_name).schema().fields]
    rows = db.execute(
        f"SELECT {', '.join(columns)} FROM {pg_name} WHERE client_id = %s AND business_date = %s",
        (client_id, DAY),
    ).fetchall()
    return sorted(rows)


def test_upload_exports_every_table_slice_exactly(stack_info, db, client_id, wait_quiet):
    upload_example(stack_info, client_id)
    wait_quiet()

    counts = {}
    for pg_name in LAKE_TABLES:
        assert lake_rows(pg_name, client_id) == pg_rows(db, pg_name, client_id), pg_name
        counts[pg_name] = len(pg_rows(db, pg_name, client_id))
    assert counts == {
        "raw.clients": 3,
        "raw.portfolios": 6,
        "raw.accounts": 4,
        "raw.transactions": 9,
        "etl.portfolio_summary": 4,
        "etl.client_tax_summary": 3,
        "audit.rejections": 1,
        "audit.data_quality_issues": 3,
    }
    # Money is exact: the lake's decimal(38, 18) holds PostgreSQL's NUMERIC value unchanged.
    taxes = {r[2]: r[4] for r in lake_rows("etl.client_tax_summary", client_id)}
    assert taxes == {"C-1001": Decimal("120.50"), "C-1002": Decimal("310.00"), "C-1003": 0}
    # Parquet data files, zstd, partitioned by day and client.
    table = lake_table("raw.transactions")
    files = [
        f for f in table.inspect.files().to_pylist() if f"client_id={client_id}" in f["file_path"]
    ]
    assert len(files) == 1
    assert files[0]["file_format"] == "PARQUET"
    assert files[0]["partition"] == {"business_date_day": DAY, "client_id": client_id}
    with table.io.new_input(files[0]["file_path"]).open() as stream:
        metadata = pq.ParquetFile(stream).metadata
        assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert [str(f) for f in table.spec().fields] == [
        "1000: business_date_day: day(2)",
        "1001: client_id: identity(1)",
    ]
