"""A batch that would outlast its function: records are started only while their budget fits
in the time left; the others fail (exact partial-batch response) and are visible again at once
for a fresh invocation, instead of after the queue's visibility timeout."""

from __future__ import annotations

import uuid

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)

from dataharvest.deadline import guarded

pytestmark = pytest.mark.integration


class Clock:
    """The Lambda context's view of time: each record handled uses `per_record_ms`."""

    def __init__(self, left_ms: int, per_record_ms: int):
        self.left_ms = left_ms
        self.per_record_ms = per_record_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


def sqs_event(sqs, url: str, count: int) -> tuple[dict, list[str]]:
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for i in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=f"record {i}")
    received = []
    while len(received) < count:
        received += sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600
        ).get("Messages", [])
    records = [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": {},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
        }
        for m in sorted(received, key=lambda m: m["Body"])
    ]
    return {"Records": records}, [r["messageId"] for r in records]


def test_records_without_time_left_fail_and_return_at_once(local_stack, monkeypatch) -> None:
    monkeypatch.setenv("RECORD_BUDGET_SECONDS", "30")
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"deadline-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    event, ids = sqs_event(sqs, url, 3)
    clock = Clock(left_ms=70_000, per_record_ms=25_000)
    handled = []

    def work(record) -> None:
        handled.append(record.body)
        clock.left_ms -= clock.per_record_ms

    result = process_partial_response(
        event=event,
        record_handler=guarded(work),
        processor=BatchProcessor(event_type=EventType.SQS),
        context=clock,
    )
    # 70 s left: record 0 starts (-> 45 s), record 1 starts (-> 20 s), record 2 does not.
    assert handled == ["record 0", "record 1"]
    assert result == {"batchItemFailures": [{"itemIdentifier": ids[2]}]}
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in again] == ["record 2"]  # visible now, not in 10 minutes


def test_a_stream_batch_is_cut_the_same_way(local_stack, monkeypatch) -> None:
    monkeypatch.setenv("RECORD_BUDGET_SECONDS", "5")
    records = [
        {
            "eventID": str(i),
            "eventName": "MODIFY",
            "eventSource": "aws:dynamodb",
            "dynamodb": {"SequenceNumber": str(100 + i), "Keys": {}},
        }
        for i in range(3)
    ]
    clock = Clock(left_ms=6_000, per_record_ms=2_000)
    handled = []

    def work(record) -> None:
        handled.append(record.event_id)
        clock.left_ms -= clock.per_record_ms

    result = process_partial_response(
        event={"Records": records},
        record_handler=guarded(work),
        processor=BatchProcessor(event_type=EventType.DynamoDBStreams),
        context=clock,
    )
    # The stream retries from the first failed record: the cut is a clean restart point.
    assert handled == ["0"]
    assert result == {"batchItemFailures": [{"itemIdentifier": "101"}, {"itemIdentifier": "102"}]}
