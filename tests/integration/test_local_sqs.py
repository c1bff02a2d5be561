"""The local endpoint's SQS queues after dataharvest_local.aws's patch: AWS semantics kept
(FIFO deduplication, message counts, CreateQueue idempotence) while a send no longer costs
time proportional to the messages a queue holds."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration


def _queue(sqs, fifo: bool, **attributes: str) -> str:
    name = f"probe-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    if fifo:
        attributes["FifoQueue"] = "true"
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def _counts(sqs, url: str) -> tuple[int, int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )


def _receive_all(sqs, url: str) -> list[dict]:
    got: list[dict] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        got.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return got


def test_fifo_deduplication_id_is_remembered_after_the_message_is_deleted(local_stack):
    sqs = boto3.client("sqs")
    url = _queue(sqs, fifo=True)
    send = {"QueueUrl": url, "MessageGroupId": "c1", "MessageDeduplicationId": "d1"}
    sqs.send_message(MessageBody="one", **send)
    # A duplicate is accepted (AWS answers success) but not delivered.
    assert sqs.send_message(MessageBody="one again", **send)["MessageId"]
    assert [m["Body"] for m in _receive_all(sqs, url)] == ["one"]
    # Within the 5-minute interval AWS still drops it after the original was deleted.
    sqs.send_message(MessageBody="one, third time", **send)
    assert _receive_all(sqs, url) == []
    sqs.send_message(MessageBody="two", QueueUrl=url, MessageGroupId="c1",
                     MessageDeduplicationId="d2")  # fmt: skip
    assert [m["Body"] for m in _receive_all(sqs, url)] == ["two"]


def test_fifo_batch_duplicates_and_content_based_deduplication(local_stack):
    sqs = boto3.client("sqs")
    url = _queue(sqs, fifo=True)
    entries = [
        {"Id": str(i), "MessageBody": f"m{i % 3}", "MessageGroupId": "g",
         "MessageDeduplicationId": f"d{i % 3}"}
        for i in range(6)
    ]  # fmt: skip
    response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert len(response["Successful"]) == 6 and not response.get("Failed")
    assert [m["Body"] for m in _receive_all(sqs, url)] == ["m0", "m1", "m2"]

    content_based = _queue(sqs, fifo=True, ContentBasedDeduplication="true")
    for body in ("same", "same", "other"):
        sqs.send_message(QueueUrl=content_based, MessageBody=body, MessageGroupId="g")
    assert [m["Body"] for m in _receive_all(sqs, content_based)] == ["same", "other"]


def test_message_counts_follow_visibility_and_delay(local_stack):
    sqs = boto3.client("sqs")
    url = _queue(sqs, fifo=False)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"now {i}")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    assert _counts(sqs, url) == (3, 0, 1)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)
    assert len(received["Messages"]) == 2
    assert _counts(sqs, url) == (1, 2, 1)
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert one["Attributes"] == {"ApproximateNumberOfMessages": "1"}
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received["Messages"][0]["ReceiptHandle"])
    assert _counts(sqs, url) == (1, 1, 1)


def test_create_queue_is_idempotent_and_rejects_changed_attributes(local_stack):
    sqs = boto3.client("sqs")
    name = f"probe-{uuid.uuid4().hex[:12]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="held")
    again = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})
    assert again["QueueUrl"] == url
    with pytest.raises(ClientError, match=r"QueueAlreadyExists|already exists"):
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "46"})
