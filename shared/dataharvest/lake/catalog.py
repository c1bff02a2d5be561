"""The Iceberg catalog of the lake: Glue in the cloud, a SQL catalog on PostgreSQL locally.

Tables are addressed by their PostgreSQL names (`raw.transactions`); the namespace of schema
`raw` is the Glue database `dataharvest_<stage>_raw` (settings.namespace).
"""

from __future__ import annotations

import os
from functools import lru_cache

import psycopg
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table

from dataharvest.lake.location import LakeLocation, read_lake_location

# The tables pyiceberg's SQL catalog keeps (locally, in the public schema of our database).
SQL_CATALOG_TABLES = ("iceberg_tables", "iceberg_namespace_properties")


def file_io_properties(lake: LakeLocation) -> dict[str, str]:
    props = {"s3.region": lake.region}
    if lake.endpoint_url:
        props["s3.endpoint"] = lake.endpoint_url
        # The local endpoint takes any key; pyarrow's S3 client still wants one set.
        props["s3.access-key-id"] = os.environ.get("AWS_ACCESS_KEY_ID", "local")
        props["s3.secret-access-key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "local")
    return props


def open_catalog(lake: LakeLocation) -> Catalog:
    props = {"warehouse": lake.warehouse, **file_io_properties(lake)}
    if lake.database_url:
        # SQLAlchemy names the psycopg 3 driver explicitly.
        uri = lake.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
        return load_catalog("dataharvest", type="sql", uri=uri, **props)
    return load_catalog("dataharvest", type="glue", **{"glue.region": lake.region}, **props)


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    """The catalog of this process (a Lambda instance keeps it across invocations)."""
    return open_catalog(read_lake_location())


def identifier(lake: LakeLocation, pg_name: str) -> tuple[str, str]:
    schema, _, table = pg_name.partition(".")
    return lake.namespace(schema), table


def load(lake: LakeLocation, pg_name: str, cat: Catalog | None = None) -> Table:
    return (cat or catalog()).load_table(identifier(lake, pg_name))


def drop_local_catalog(conn: psycopg.Connection) -> None:
    """Forget every lake table of the local SQL catalog: a fresh local AWS endpoint has no lake
    bucket contents, so entries pointing at its old metadata files would be dangling."""
    for name in SQL_CATALOG_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS public.{name}")
