"""The local event-source runner delivers like AWS Lambda (issue 3), proven with the probe
service in tests/fixtures/services/probe against the real local stack."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from boto3.dynamodb.conditions import Key

pytestmark = pytest.mark.integration


def _log(source: str) -> list[dict]:
    table = boto3.resource("dynamodb").Table("dataharvest-local-probe-log")
    items = table.query(KeyConditionExpression=Key("source").eq(source), ConsistentRead=True)
    return items["Items"]


def _queue_url(name: str) -> str:
    return boto3.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def _drain(queue: str) -> list[str]:
    sqs = boto3.client("sqs")
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=_queue_url(queue), MaxNumberOfMessages=10)
        if not got.get("Messages"):
            return bodies
        for message in got["Messages"]:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=_queue_url(queue), ReceiptHandle=message["ReceiptHandle"])


def test_failed_sqs_record_is_retried_then_dead_lettered_while_its_batch_succeeds(wait_quiet):
    run = uuid.uuid4().hex[:8]
    bodies = [f"ok-{run}-1", f"fail-{run}", f"ok-{run}-2", f"ok-{run}-3"]
    boto3.client("sqs").send_message_batch(
        QueueUrl=_queue_url("dataharvest-local-probe"),
        Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
    )
    wait_quiet()
    seen = [item["payload"] for item in _log("sqs") if run in item["payload"]]
    # The good records are processed once; the failing one once per receive (maxReceiveCount 2).
    assert sorted(seen) == sorted([f"fail-{run}", f"fail-{run}", *bodies[:1], *bodies[2:]])
    assert _drain("dataharvest-local-probe-dlq") == [f"fail-{run}"]


def test_stream_records_reach_the_handler_only_when_the_filter_matches_in_shard_order(
    wait_quiet,
):
    table = boto3.resource("dynamodb").Table("dataharvest-local-probe")
    run = uuid.uuid4().hex[:8]
    expected = []
    for i in range(10):
        kind = "wanted" if i % 3 != 1 else "other"
        table.put_item(Item={"pk": f"{run}-{i:02d}", "kind": kind})
        if kind == "wanted":
            expected.append(f"{run}-{i:02d}")
    # An update that no longer matches the filter is not delivered either.
    table.put_item(Item={"pk": f"{run}-00", "kind": "other"})
    wait_quiet()
    delivered = [item["payload"] for item in _log("stream") if item["payload"].startswith(run)]
    assert delivered == expected
    batches = [i["payload"] for i in _log("stream-batch") if i["payload"].startswith(run)]
    assert all(len(b.split(",")) <= 4 for b in batches)


def test_poison_stream_record_is_bisected_retried_and_sent_to_the_on_failure_destination(
    wait_quiet,
):
    table = boto3.resource("dynamodb").Table("dataharvest-local-probe")
    run = uuid.uuid4().hex[:8]
    for i in range(4):
        item = {"pk": f"{run}-{i}", "kind": "wanted"}
        if i == 2:
            item["poison"] = True
        table.put_item(Item=item)
    wait_quiet()
    delivered = [item["payload"] for item in _log("stream") if item["payload"].startswith(run)]
    # Bisecting isolates the poison record: every other record is delivered, in order.
    assert delivered == [f"{run}-0", f"{run}-1", f"{run}-3"]
    failures = [json.loads(b) for b in _drain("dataharvest-local-probe-stream-failures")]
    assert len(failures) == 1
    info = failures[0]["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1
    assert failures[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
