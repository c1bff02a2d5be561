"""`dataharvest --stage NAME`: point the CLI at a deployed stage's resources.

Names are resolved the way the root serverless.yml names them for that stage (read with the
local stack's own reader, dataharvest_local.slsconfig, with `${sls:stage}` = NAME): the
metastore table, the result queue, the database secret. The database URL is read from the
stage's secret (the RDS-style JSON: username, password, host, port, dbname; `sslmode` when
present, else `require`), unless DATABASE_URL is set (e.g. to reach the database through a
tunnel). AWS credentials and region are the user's (the usual boto3 chain; AWS_ENDPOINT_URL is
honoured, which is how the tests point a "stage" at the local endpoint).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import boto3
from psycopg.conninfo import make_conninfo

# The commands that run against a deployed stage; every other one is local-only.
STAGE_COMMANDS = ("status", "uploads", "export", "transformers", "dlq", "config")
TRANSFORMER_ACTIONS = ("list", "enable", "disable", "replay")
ENV_FLAG = "DATAHARVEST_TARGET_STAGE"


class StageError(RuntimeError):
    """The stage's resources could not be found."""


@dataclass(frozen=True)
class StageResources:
    stage: str
    metastore_table: str
    result_queue_name: str
    database_secret: str


def resources(stage: str) -> StageResources:
    from dataharvest_local import slsconfig

    root = slsconfig.load(slsconfig.root_file(), stage=stage)
    props = {k: v.get("Properties", {}) for k, v in root.resources.items()}
    return StageResources(
        stage=stage,
        metastore_table=props["MetastoreTable"]["TableName"],
        result_queue_name=props["ResultQueue"]["QueueName"],
        database_secret=props["DatabaseSecret"]["Name"],
    )


def database_url_from_secret(secret_id: str) -> str:
    try:
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except Exception as error:  # botocore's errors: reported, the command fails
        raise StageError(f"cannot read the database secret {secret_id}: {error}") from error
    value = json.loads(secret["SecretString"])
    # A libpq connection string, not a URL: the host may be a socket directory.
    return make_conninfo(
        host=value["host"],
        port=str(value.get("port", 5432)),
        user=value["username"],
        password=value["password"],
        dbname=value.get("dbname", "dataharvest"),
        sslmode=value.get("sslmode", "require"),
    )


def use(stage: str) -> StageResources:
    """Set this process's environment to the stage's resources (the CLI's settings read it)."""
    found = resources(stage)
    sqs = boto3.client("sqs")
    try:
        queue_url = sqs.get_queue_url(QueueName=found.result_queue_name)["QueueUrl"]
    except Exception as error:
        raise StageError(
            f"stage {stage!r}: no result queue {found.result_queue_name} with these AWS "
            f"credentials and region ({error})"
        ) from error
    os.environ.update(
        {
            ENV_FLAG: stage,
            "DATAHARVEST_STAGE": stage,
            "METASTORE_TABLE": found.metastore_table,
            "RESULT_QUEUE_URL": queue_url,
        }
    )
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = database_url_from_secret(found.database_secret)
    from dataharvest import config, metastore

    config.environment.cache_clear()
    metastore.table.cache_clear()
    return found


def target() -> str | None:
    """The deployed stage this process works on (None: the local stack)."""
    return os.environ.get(ENV_FLAG) or None
