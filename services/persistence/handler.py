"""Persistence Lambda: S3 event notifications (via SQS) -> dataharvest.persistence.load_upload."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.deadline import guarded
from dataharvest.observability import logger, metrics, tracer
from dataharvest.persistence import load_upload

processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    body = json.loads(record.body)
    if body.get("Event") == "s3:TestEvent":
        return  # S3 sends one when the notification is configured; nothing to load
    for s3_record in S3Event(body).records:
        # S3 URL-encodes keys in notifications ('/' as %2F, ' ' as '+'); powertools' S3Object.key
        # returns them as sent, so decode here, at the edge.
        load_upload(
            bucket=s3_record.s3.bucket.name,
            key=unquote_plus(s3_record.s3.get_object.key),
            event_name=s3_record.event_name,
        )


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=guarded(record_handler), processor=processor, context=context
    )
