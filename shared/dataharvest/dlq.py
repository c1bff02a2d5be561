"""Every dead-letter queue of the stage: what failed for good, and how it is brought back.

Two kinds, found by looking at the stage's queues (`dataharvest-<stage>-*`), so a transformer
deployed later is covered without a change here:
- the dead-letter queue named in another queue's redrive policy (persistence, each
  transformer's work queue): deliveries that failed maxReceiveCount times. Redriving moves
  them back to that queue, where they are processed like fresh deliveries: persistence
  reconciles with S3 and the transformer runtime re-reads the metastore item, so a stale
  message does no harm;
- an on-failure destination (`*-failures`: catapult's stream records whose retries ran out,
  the scheduled reconciler's failed runs). Its records carry pointers into the stream, not the
  record (which the stream trims after 24 hours), and the decision they stood for may be stale
  anyway: redriving one runs the reconciler, which re-decides from the current metastore items,
  and then deletes the records.

Listing looks at every message and puts it back (visibility 0), so it is safe to run any time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from botocore.client import BaseClient

from dataharvest.catapult import reconcile
from dataharvest.config import resource_name

# How long a listed message stays hidden while the listing collects the others.
LIST_VISIBILITY_S = 30
# How long redriven records stay hidden: on-failure records wait for a reconciler run.
REDRIVE_VISIBILITY_S = 900
# Queue names ending like this are on-failure destinations (no source queue to move back to).
ON_FAILURE_SUFFIX = "-failures"


class UnknownQueue(ValueError):
    """`--queue NAME` names no dead-letter queue of the stage."""


@dataclass(frozen=True)
class DeadLetterQueue:
    name: str  # without the stage prefix, e.g. persistence-dlq, tax-transformer-dlq
    url: str
    source_url: str | None  # the queue it dead-letters for; None for an on-failure destination

    @property
    def on_failure(self) -> bool:
        return self.source_url is None


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str
    keys: list[str]  # what it is about: S3 keys, work items, stream record ranges
    receive_count: int
    first_received: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "keys": list(self.keys)}


def _stage_queue_urls(sqs: BaseClient, prefix: str) -> list[str]:
    urls: list[str] = []
    kwargs: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 1000}
    while True:
        page = sqs.list_queues(**kwargs)
        urls.extend(page.get("QueueUrls", []))
        if not page.get("NextToken"):
            return urls
        kwargs["NextToken"] = page["NextToken"]


def queues(sqs: BaseClient, stage: str) -> list[DeadLetterQueue]:
    """The stage's dead-letter queues, by name."""
    prefix = resource_name(stage, "")
    urls = _stage_queue_urls(sqs, prefix)
    arn_to_url: dict[str, str] = {}
    source_of: dict[str, str] = {}  # dead-letter queue ARN -> source queue URL
    for url in urls:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]
        )["Attributes"]
        arn_to_url[attributes["QueueArn"]] = url
        if attributes.get("RedrivePolicy"):
            target = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
            source_of[target] = url
    found = []
    for arn, url in arn_to_url.items():
        name = arn.rsplit(":", 1)[-1].removeprefix(prefix)
        if arn in source_of:
            found.append(DeadLetterQueue(name, url, source_of[arn]))
        elif name.endswith(ON_FAILURE_SUFFIX):
            found.append(DeadLetterQueue(name, url, None))
    return sorted(found, key=lambda q: q.name)


def select(found: list[DeadLetterQueue], name: str | None, stage: str) -> list[DeadLetterQueue]:
    """All of them, or the one `name` names (with or without the stage prefix)."""
    if name is None:
        return found
    short = name.removeprefix(resource_name(stage, ""))
    chosen = [q for q in found if q.name == short]
    if not chosen:
        names = ", ".join(q.name for q in found) or "none"
        raise UnknownQueue(f"no dead-letter queue named {name!r} (the stage has: {names})")
    return chosen


def object_keys(event: dict[str, Any]) -> list[str]:
    """The S3 keys a persistence delivery is about (decoded as the handler decodes them)."""
    if event.get("Event") == "s3:TestEvent":
        return ["(s3:TestEvent)"]
    return [unquote_plus(r["s3"]["object"]["key"]) for r in event.get("Records", [])]


def describe(body: str) -> list[str]:
    """What a dead-lettered message is about, in the words an operator looks for."""
    try:
        event = json.loads(body)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return [body if len(body) <= 80 else body[:77] + "..."]
    if "idempotency_key" in event and "transformer" in event:
        return [
            f"{event['client_id']}/{event['business_date']} {event['transformer']} "
            f"{event['action']}"
        ]
    if "DDBStreamBatchInfo" in event:
        info = event["DDBStreamBatchInfo"]
        return [
            f"{info['batchSize']} stream record(s) {info['startSequenceNumber']}.."
            f"{info['endSequenceNumber']} ({event['requestContext'].get('condition', '')})"
        ]
    if "KinesisBatchInfo" in event:  # the snapshot applier's (issue 15)
        info = event["KinesisBatchInfo"]
        return [
            f"{info['batchSize']} snapshot change record(s) of {info['shardId']} "
            f"({event['requestContext'].get('condition', '')})"
        ]
    if "requestContext" in event:  # an asynchronous invocation's on-failure record
        condition = event["requestContext"].get("condition", "failed")
        payload = event.get("requestPayload")
        if isinstance(payload, dict) and payload.get("detail-type") == "Scheduled Event":
            response = event.get("responsePayload") or {}
            error = f"{response.get('errorType', 'error')}: {response.get('errorMessage', '')}"
            return [f"scheduled run of {payload.get('time')} {condition} ({error})"]
        return [f"invocation {condition}"]
    return object_keys(event)


def _receive(sqs: BaseClient, url: str, hide_s: int = LIST_VISIBILITY_S) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=hide_s,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["All"],
    ).get("Messages", [])
    return messages


def list_dead_letters(sqs: BaseClient, queue: DeadLetterQueue) -> list[DeadLetter]:
    found: dict[str, dict[str, Any]] = {}
    try:
        while batch := _receive(sqs, queue.url):
            found.update((m["MessageId"], m) for m in batch)
    finally:
        for message in found.values():
            sqs.change_message_visibility(
                QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return [
        DeadLetter(
            queue=queue.name,
            message_id=m["MessageId"],
            keys=describe(m["Body"]),
            receive_count=int(m["Attributes"].get("ApproximateReceiveCount", 0)),
            first_received=datetime.fromtimestamp(
                int(m["Attributes"].get("SentTimestamp", 0)) / 1000, UTC
            ).isoformat(timespec="seconds"),
        )
        for m in found.values()
    ]


def _delete(sqs: BaseClient, url: str, batch: list[dict[str, Any]]) -> None:
    sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
    )


# The snapshot applier's on-failure queue (issue 15): its records point into the change
# stream; redriving it re-applies every change log to the replicas from PostgreSQL instead.
SNAPSHOT_APPLIER_FAILURES = "snapshot-applier-failures"


def _resync_replicas() -> None:
    from dataharvest import db
    from dataharvest.snapshots.apply import resync_all

    with db.connect() as conn:
        resync_all(conn)


def redrive(sqs: BaseClient, queue: DeadLetterQueue) -> int:
    """Bring the queue's dead letters back; returns how many were handled.

    A dead-letter queue's messages move back to its source queue. An on-failure destination's
    records are answered by one reconciler run over every item (their stream pointers do not
    say which item, and the current item decides anyway), then deleted: a record is deleted
    only after the run that covers it dispatched without error.
    """
    taken: list[dict[str, Any]] = []
    handled = 0
    while batch := _receive(sqs, queue.url, REDRIVE_VISIBILITY_S):
        if queue.source_url is None:
            taken.extend(batch)
            continue
        entries = [{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(batch)]
        response = sqs.send_message_batch(QueueUrl=queue.source_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"could not move messages back: {response['Failed']}")
        _delete(sqs, queue.url, batch)
        handled += len(batch)
    if taken:
        if queue.name == SNAPSHOT_APPLIER_FAILURES:
            _resync_replicas()
        else:
            reconcile()
        for start in range(0, len(taken), 10):
            _delete(sqs, queue.url, taken[start : start + 10])
        handled += len(taken)
    return handled
