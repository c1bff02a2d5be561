"""Event-source mappings: deliver SQS messages and DynamoDB stream records to a function the
way AWS Lambda does.

SQS: batches of up to batchSize, partial batch responses (ReportBatchItemFailures), failed
messages stay on the queue until their visibility timeout ends and move to the DLQ after
maxReceiveCount (the queue's redrive policy, enforced by the endpoint).
DynamoDB streams: per-shard order, filterPatterns applied with `dataharvest.filters.matches`,
batchSize, retries up to maximumRetryAttempts, bisectBatchOnFunctionError, partial batch
responses, and the on-failure destination once retries are exhausted.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dataharvest.filters import matches
from dataharvest.local.instances import InvokeError, Worker

# Empty sources are polled again after a wait that doubles from MIN to MAX.
IDLE_BACKOFF_MIN_S = 0.02
IDLE_BACKOFF_MAX_S = 0.25
SHARD_REFRESH_S = 5.0
# An SQS receive waits this long for a message (moto re-checks the queue every second).
SQS_LONG_POLL_S = 1
# How long a stream mapping waits between retries of a failed batch (AWS backs off similarly).
STREAM_RETRY_BACKOFF_S = 0.2


@dataclass
class Activity:
    """What `dataharvest run` waits on: no invocation in flight and every mapping idle."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    in_flight: int = 0
    invocations: int = 0
    failures: int = 0

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.generation += 1
            self.invocations += 1

    def end(self, failed: bool) -> None:
        with self.lock:
            self.in_flight -= 1
            self.generation += 1
            self.failures += int(failed)


class Mapping(threading.Thread):
    def __init__(self, worker: Worker, activity: Activity, stop: threading.Event, name: str):
        super().__init__(daemon=True, name=name)
        self.worker = worker
        self.activity = activity
        self.stop_event = stop
        self.idle = False
        self.error: str | None = None

    def invoke(self, event: dict[str, Any]) -> Any:
        self.activity.begin()
        failed = True
        try:
            result = self.worker.invoke(event)
            failed = bool(isinstance(result, dict) and result.get("batchItemFailures"))
            return result
        finally:
            self.activity.end(failed)

    # True when poll_once itself waits for the source (an SQS long poll): no backoff then.
    long_polls = False

    def run(self) -> None:
        # Sources that cannot long-poll are polled again after a backoff while they stay empty.
        backoff = IDLE_BACKOFF_MIN_S
        while not self.stop_event.is_set():
            try:
                found = self.poll_once()
                self.idle = not found
                self.error = None
                if found or self.long_polls:
                    backoff = IDLE_BACKOFF_MIN_S
                else:
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, IDLE_BACKOFF_MAX_S)
            except Exception as error:  # a broken endpoint must not kill the mapping thread
                self.idle = False
                self.error = f"{type(error).__name__}: {error}"
                self.stop_event.wait(1.0)

    def poll_once(self) -> bool:
        """Deliver what is there; True when something was found (the source was not empty)."""
        raise NotImplementedError

    def source_empty(self) -> bool:
        """A fresh look at the source, for the quiet check (the idle flag may be a poll old)."""
        return self.idle


class SqsMapping(Mapping):
    def __init__(
        self,
        worker,
        activity,
        stop,
        *,
        sqs,
        queue_url: str,
        queue_arn: str,
        batch_size: int,
        report_failures: bool,
        retry_delay_cap: int | None,
    ):
        super().__init__(worker, activity, stop, f"sqs:{queue_arn.rsplit(':', 1)[-1]}")
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.batch_size = batch_size
        self.report_failures = report_failures
        self.retry_delay_cap = retry_delay_cap

    long_polls = True

    def poll_once(self) -> bool:
        # A long poll, as Lambda's pollers do: the endpoint answers as soon as a message
        # arrives, and an idle queue costs one request per SQS_LONG_POLL_S.
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            WaitTimeSeconds=SQS_LONG_POLL_S,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return False  # in-flight retries are checked by source_empty() when it matters
        region = self.queue_arn.split(":")[3]
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": self.queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
        failed_ids: set[str]
        try:
            result = self.invoke({"Records": records})
            failed_ids = set()
            if self.report_failures and isinstance(result, dict):
                failed_ids = {f["itemIdentifier"] for f in result.get("batchItemFailures") or []}
        except InvokeError:
            failed_ids = {r["messageId"] for r in records}
        done = [r for r in records if r["messageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        if failed_ids and self.retry_delay_cap is not None:
            for r in records:
                if r["messageId"] in failed_ids:
                    self.sqs.change_message_visibility(
                        QueueUrl=self.queue_url,
                        ReceiptHandle=r["receiptHandle"],
                        VisibilityTimeout=self.retry_delay_cap,
                    )
        return True

    def source_empty(self) -> bool:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return not any(int(v) for v in attrs.values())


class StreamMapping(Mapping):
    def __init__(
        self,
        worker,
        activity,
        stop,
        *,
        streams,
        sqs,
        stream_arn: str,
        batch_size: int,
        starting_position: str,
        filter_patterns: list[dict],
        max_retry_attempts: int,
        bisect: bool,
        report_failures: bool,
        on_failure_queue_url: str | None,
        function_arn: str,
    ):
        super().__init__(worker, activity, stop, f"stream:{stream_arn.split('/')[1]}")
        self.streams = streams
        self.sqs = sqs
        self.stream_arn = stream_arn
        self.batch_size = batch_size
        self.starting_position = starting_position
        # As Lambda stores them: JSON text, parsed and validated once.
        self.filter_patterns = [json.dumps(p) for p in filter_patterns]
        self.max_retry_attempts = max_retry_attempts
        self.bisect = bisect
        self.report_failures = report_failures
        self.on_failure_queue_url = on_failure_queue_url
        self.function_arn = function_arn
        self.iterators: dict[str, str] = {}
        self.shards_checked_at = 0.0
        self.delivered = 0

    def _shard_iterators(self) -> dict[str, str]:
        # New shards are rare; look for them every few seconds, not on every poll.
        if self.iterators and time.monotonic() - self.shards_checked_at < SHARD_REFRESH_S:
            return self.iterators
        self.shards_checked_at = time.monotonic()
        description = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        for shard in description["Shards"]:
            if shard["ShardId"] not in self.iterators:
                self.iterators[shard["ShardId"]] = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn,
                    ShardId=shard["ShardId"],
                    ShardIteratorType=self.starting_position,
                )["ShardIterator"]
        return self.iterators

    def poll_once(self) -> bool:
        busy = False
        for shard_id, iterator in list(self._shard_iterators().items()):
            response = self.streams.get_records(ShardIterator=iterator, Limit=1000)
            self.iterators[shard_id] = response["NextShardIterator"]
            records = response.get("Records", [])
            if not records:
                continue
            busy = True
            for record in records:
                record["eventSourceARN"] = self.stream_arn
            wanted = [r for r in records if self._passes_filters(r)]
            for start in range(0, len(wanted), self.batch_size):
                self._deliver(shard_id, wanted[start : start + self.batch_size])
        return busy

    def _passes_filters(self, record: dict[str, Any]) -> bool:
        # Lambda drops records that match none of the patterns before batching.
        if not self.filter_patterns:
            return True
        return any(matches(pattern, record) for pattern in self.filter_patterns)

    def _deliver(self, shard_id: str, batch: list[dict[str, Any]], attempt: int = 0) -> None:
        while batch:
            try:
                result = self.invoke({"Records": batch})
            except InvokeError:
                failed_from = 0
            else:
                failures = (result or {}).get("batchItemFailures") if self.report_failures else None
                if not failures:
                    self.delivered += len(batch)
                    return
                sequence_numbers = [r["dynamodb"]["SequenceNumber"] for r in batch]
                first = min(sequence_numbers.index(f["itemIdentifier"]) for f in failures)
                self.delivered += first
                failed_from = first
            batch = batch[failed_from:]
            self.stop_event.wait(STREAM_RETRY_BACKOFF_S)
            if self.bisect and len(batch) > 1:
                # Splitting a batch does not count towards the retry quota (AWS Lambda docs).
                half = len(batch) // 2
                self._deliver(shard_id, batch[:half], attempt)
                self._deliver(shard_id, batch[half:], attempt)
                return
            if attempt >= self.max_retry_attempts:
                self._send_to_on_failure(shard_id, batch, attempt)
                return
            attempt += 1

    def _send_to_on_failure(self, shard_id: str, batch: list[dict[str, Any]], attempt: int) -> None:
        if not self.on_failure_queue_url:
            return  # AWS drops the batch when no destination is configured
        arrival = [r["dynamodb"].get("ApproximateCreationDateTime") for r in batch]
        body = {
            "requestContext": {
                "requestId": f"local-{time.time_ns()}",
                "functionArn": self.function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": attempt + 1,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": str(arrival[0]),
                "approximateArrivalOfLastRecord": str(arrival[-1]),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        self.sqs.send_message(QueueUrl=self.on_failure_queue_url, MessageBody=json.dumps(body))
