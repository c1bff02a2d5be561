"""The persistence dead-letter queue: deliveries that failed maxReceiveCount times.

Listing looks at every message and puts it back (visibility 0), so it is safe to run any time;
redriving moves each message back to the persistence queue, where it is processed like a fresh
delivery (load_upload reconciles with S3, so a stale message does no harm).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from botocore.client import BaseClient

from dataharvest.config import Settings, resource_name

# How long a listed message stays hidden while the listing collects the others.
LIST_VISIBILITY_S = 30


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    keys: list[str]
    receive_count: int
    first_received: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__


def queue_urls(sqs: BaseClient, config: Settings) -> tuple[str, str]:
    """(persistence queue, its dead-letter queue), by the names serverless.yml gives them."""
    source = sqs.get_queue_url(QueueName=resource_name(config.stage, "persistence"))["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=resource_name(config.stage, "persistence-dlq"))["QueueUrl"]
    return source, dlq


def object_keys(body: str) -> list[str]:
    """The S3 keys a persistence message is about (decoded as the handler decodes them)."""
    try:
        event = json.loads(body)
    except ValueError:
        return ["(not JSON)"]
    if event.get("Event") == "s3:TestEvent":
        return ["(s3:TestEvent)"]
    return [unquote_plus(r["s3"]["object"]["key"]) for r in event.get("Records", [])]


def _receive(sqs: BaseClient, url: str) -> list[dict[str, Any]]:
    return sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=LIST_VISIBILITY_S,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["All"],
    ).get("Messages", [])


def list_dead_letters(sqs: BaseClient, dlq_url: str) -> list[DeadLetter]:
    found: dict[str, dict[str, Any]] = {}
    try:
        while batch := _receive(sqs, dlq_url):
            found.update((m["MessageId"], m) for m in batch)
    finally:
        for message in found.values():
            sqs.change_message_visibility(
                QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return [
        DeadLetter(
            message_id=m["MessageId"],
            keys=object_keys(m["Body"]),
            receive_count=int(m["Attributes"].get("ApproximateReceiveCount", 0)),
            first_received=datetime.fromtimestamp(
                int(m["Attributes"].get("SentTimestamp", 0)) / 1000, UTC
            ).isoformat(timespec="seconds"),
        )
        for m in found.values()
    ]


def redrive(sqs: BaseClient, dlq_url: str, source_url: str) -> int:
    """Move every dead letter back to the persistence queue; returns how many moved."""
    moved = 0
    while batch := _receive(sqs, dlq_url):
        entries = [{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(batch)]
        response = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"could not move messages back: {response['Failed']}")
        sqs.delete_message_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
        moved += len(batch)
    return moved
