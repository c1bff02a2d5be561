"""One object for the process environment, read at the edge (handler start, CLI start).

In the cloud the values come from the function's environment (serverless.yml); locally the
event-source runner sets the very same variables from the same serverless.yml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_MAX_REJECT_RATIO = "0.10"
# Raw inputs are kept this many days after their business date (`dataharvest retention`).
DEFAULT_RETENTION_DAYS = 400
# Inflation limits of an upload (migration 0005 has the same defaults).
DEFAULT_MAX_INFLATED_BYTES = 20 << 30
DEFAULT_MAX_INFLATION_RATIO = "100"


@dataclass(frozen=True)
class Environment:
    stage: str
    database_url: str | None
    database_secret_arn: str | None
    database_host: str | None  # overrides the secret's host: the RDS Proxy endpoint
    metastore_table: str
    result_queue_url: str | None
    home: Path
    # Large files: a stored file above chunk_bytes loads as chunks of about that size, staged
    # in parallel through the chunk queue (persistence/chunks.py).
    chunk_queue_url: str | None = None
    chunk_bytes: int = 128 << 20
    # The function's own database user in the cloud: IAM token auth (security/connection.py).
    database_user: str | None = None


def resource_name(stage: str, suffix: str) -> str:
    """The naming rule shared by serverless.yml and the local stack: dataharvest-<stage>-<x>."""
    return f"dataharvest-{stage}-{suffix}"


def read_environment(environ: dict[str, str] | None = None) -> Environment:
    env = os.environ if environ is None else environ
    stage = env.get("DATAHARVEST_STAGE", "local")
    return Environment(
        stage=stage,
        database_url=env.get("DATABASE_URL") or None,
        database_secret_arn=env.get("DATABASE_SECRET_ARN") or None,
        database_host=env.get("DATABASE_HOST") or None,
        metastore_table=env.get("METASTORE_TABLE") or resource_name(stage, "metastore"),
        result_queue_url=env.get("RESULT_QUEUE_URL") or None,
        home=Path(env.get("DATAHARVEST_HOME") or ".dataharvest").resolve(),
        chunk_queue_url=env.get("CHUNK_QUEUE_URL") or None,
        chunk_bytes=int(env.get("DATAHARVEST_CHUNK_BYTES") or 128 << 20),
        database_user=env.get("DATABASE_USER") or None,
    )


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The environment of this process; handlers call it once per cold start."""
    return read_environment()
