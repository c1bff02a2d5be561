"""Where the lake is: its bucket and its catalog, read from the environment at the edge.

In the cloud the catalog is the AWS Glue Data Catalog (Athena reads the same tables); locally,
where DATABASE_URL names the embedded PostgreSQL, it is a pyiceberg SQL catalog in that
database, and the bucket is on the local AWS endpoint.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from dataharvest.config import resource_name


@dataclass(frozen=True)
class LakeLocation:
    stage: str
    region: str
    bucket: str
    # Local only: the PostgreSQL holding the SQL catalog and the local AWS endpoint.
    database_url: str | None
    endpoint_url: str | None

    @property
    def warehouse(self) -> str:
        return f"s3://{self.bucket}/warehouse"

    def namespace(self, schema: str) -> str:
        """The Glue database (Iceberg namespace) of a PostgreSQL schema: Glue names allow
        lower-case letters, digits and underscores only."""
        return re.sub(r"[^a-z0-9_]", "_", f"dataharvest_{self.stage}_{schema}".lower())


def read_lake_location(environ: dict[str, str] | None = None) -> LakeLocation:
    env = os.environ if environ is None else environ
    stage = env.get("DATAHARVEST_STAGE", "local")
    return LakeLocation(
        stage=stage,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "eu-west-1",
        bucket=env.get("LAKE_BUCKET") or resource_name(stage, "lake"),
        # The local stack gives the lake exporter its read-only role in DATABASE_URL and the
        # catalog (Glue's local stand-in, not part of the data) the owner's URL.
        database_url=env.get("LAKE_CATALOG_URL") or env.get("DATABASE_URL") or None,
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
    )
