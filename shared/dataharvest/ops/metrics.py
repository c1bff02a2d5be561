"""CloudWatch metrics (powertools Metrics, embedded metric format), one namespace per stage.

Dimensions are `service` and `entity` only: CloudWatch bills and limits per dimension value,
so the client id (unbounded) never becomes one; it goes into the structured log line written
beside every metric, where Logs Insights finds it (`filter client_id = "acme"`).

Inside a Lambda (and the local stack's workers, which set the same variables) each metric is
one EMF document on stdout, which CloudWatch turns into the metric. Elsewhere (the CLI, tests)
only the log line is written: an EMF document on the CLI's stdout would corrupt its output.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from dataharvest.config import environment
from dataharvest.observability import logger

# Metric names (the dashboards and alarms in services/operations/serverless.yml use them).
FILES_LOADED = "FilesLoaded"
FILES_REJECTED = "FilesRejected"
FILES_UNROUTABLE = "FilesUnroutable"
ROWS_LOADED = "RowsLoaded"
ROWS_REJECTED = "RowsRejected"
REJECTION_RATIO_BREACHES = "RejectionRatioBreaches"
LOAD_SECONDS = "LoadSeconds"
TRANSFORMER_RUN_SECONDS = "TransformerRunSeconds"
TRANSFORMER_ROWS_WRITTEN = "TransformerRowsWritten"
CATAPULT_RECORDS_IN = "CatapultRecordsIn"
CATAPULT_WORK_MESSAGES_OUT = "CatapultWorkMessagesOut"
PUBLISHER_MESSAGES_SENT = "PublisherMessagesSent"
PARTNER_NOTICES_SENT = "PartnerNoticesSent"
INPUTS_LATE = "InputsLate"
# Snapshot tables (dimension entity = the snapshot table): the rows of each applied export by
# what the delta found, the changes put on the change stream, the replica rows the applier
# changed.
SNAPSHOT_ROWS_INSERTED = "SnapshotRowsInserted"
SNAPSHOT_ROWS_UPDATED = "SnapshotRowsUpdated"
SNAPSHOT_ROWS_DELETED = "SnapshotRowsDeleted"
SNAPSHOT_ROWS_UNCHANGED = "SnapshotRowsUnchanged"
SNAPSHOT_CHANGES_PUBLISHED = "SnapshotChangesPublished"
SNAPSHOT_CHANGES_APPLIED = "SnapshotChangesApplied"

Count = MetricUnit.Count
Seconds = MetricUnit.Seconds


def namespace(stage: str | None = None) -> str:
    """`DataHarvest/<stage>`: the metrics of each stage apart."""
    return f"DataHarvest/{stage or environment().stage}"


def in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def emit(
    service: str,
    entity: str,
    name: str,
    value: float,
    unit: MetricUnit = Count,
    **log_keys: Any,
) -> None:
    """One metric with dimensions service + entity; `log_keys` (client_id, key, ...) go to
    the structured log line only."""
    if in_lambda():
        with single_metric(name=name, unit=unit, value=value, namespace=namespace()) as metric:
            metric.add_dimension(name="service", value=service)
            metric.add_dimension(name="entity", value=entity)
    logger.info(
        "metric",
        extra={"metric": name, "value": value, "service": service, "entity": entity, **log_keys},
    )
