"""snapshot_applier Lambda: the snapshot change stream (Kinesis) -> replica.<table>.

A batch is applied set-based in one transaction (dataharvest.snapshots.apply). When that
fails, the batch is applied again record by record with powertools' batch processor, so the
partial batch response names exactly the records that fail; Lambda bisects and retries those
and sends what still fails to the on-failure queue. Applying is idempotent (the highest
sequence per key wins), so retried and duplicated records change nothing.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.db import shared_connection
from dataharvest.observability import logger, metrics, tracer
from dataharvest.snapshots.apply import Change, apply_changes

processor = BatchProcessor(event_type=EventType.KinesisDataStreams)


@tracer.capture_method
def record_handler(record: KinesisStreamRecord) -> None:
    apply_changes(shared_connection(), [Change.from_kinesis(record.raw_event)])


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    records = event.get("Records") or []
    try:
        changed = apply_changes(shared_connection(), [Change.from_kinesis(r) for r in records])
    except Exception:
        logger.exception("batch apply failed; applying record by record", extra={"n": len(records)})
    else:
        logger.info("snapshot changes applied", extra={"records": len(records), "rows": changed})
        return {"batchItemFailures": []}
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
