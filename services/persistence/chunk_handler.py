"""Persistence, large files: one chunk message -> dataharvest.persistence.chunks.stage_chunk."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.deadline import guarded
from dataharvest.observability import logger, tracer
from dataharvest.persistence.chunks import stage_chunk

processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    body = json.loads(record.body)
    stage_chunk(load_id=int(body["load_id"]), chunk=int(body["chunk"]))


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId")
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=guarded(record_handler), processor=processor, context=context
    )
