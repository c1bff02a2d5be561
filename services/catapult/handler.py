"""Catapult Lambdas: metastore stream -> dataharvest.catapult.dispatch_record per record;
schedule -> dataharvest.catapult.reconcile."""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.catapult import dispatch_record
from dataharvest.catapult import reconcile as reconcile_items
from dataharvest.deadline import guarded
from dataharvest.observability import logger, metrics, tracer
from dataharvest.registry import RegistryCache

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
registry_cache = RegistryCache()  # lives as long as the execution environment


@tracer.capture_method
def record_handler(record: DynamoDBRecord) -> None:
    dispatch_record(record.raw_event, registry_cache)


@logger.inject_lambda_context(correlation_id_path="Records[0].eventID")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=guarded(record_handler), processor=processor, context=context
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def reconcile(event: dict, context: LambdaContext) -> dict:
    """Scheduled: send every item what it still needs; raising fails the run (retried, then
    recorded in the on-failure queue), after every other send was attempted."""
    decisions = reconcile_items()
    logger.info("reconciled", extra={"dispatched": len(decisions)})
    return {"dispatched": len(decisions)}
