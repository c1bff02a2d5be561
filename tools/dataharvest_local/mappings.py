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

from dataharvest.dlq import describe
from dataharvest.filters import matches
from dataharvest_local.instances import Invocation, InvokeError, Worker

# Empty sources are polled again after a wait that doubles from MIN to MAX.
IDLE_BACKOFF_MIN_S = 0.02
IDLE_BACKOFF_MAX_S = 0.25
SHARD_REFRESH_S = 5.0
# An SQS receive waits this long for a message (moto re-checks the queue every second).
SQS_LONG_POLL_S = 1
# How long a stream mapping waits between retries of a failed batch (AWS backs off similarly).
STREAM_RETRY_BACKOFF_S = 0.2
# A crashed invocation's messages come back after this long by default, not after the queue's
# visibility timeout (90 minutes for persistence): nothing is gained locally by waiting.
CRASH_RETRY_S = 5
# A failure stays in the report this long after its retry was due (it may have been
# dead-lettered on that receive: the report does not follow it there).
FAILURE_REPORT_GRACE_S = 60


@dataclass
class Failure:
    """A delivery that failed and will be retried: what `dataharvest run` reports."""

    function: str
    source: str  # the mapping: sqs:<queue> or stream:<table>
    message_id: str
    key: str  # what it is about (dataharvest.dlq.describe)
    attempt: int
    max_attempts: int | None  # the queue's maxReceiveCount; None for a stream or no DLQ
    error: str
    retry_at: float  # time.time() at which it is delivered again
    crashed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "retry_at"},
            "retry_in": max(0, round(self.retry_at - time.time())),
        }


@dataclass
class Activity:
    """What `dataharvest run` waits on: no invocation in flight and every mapping idle."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    in_flight: int = 0
    invocations: int = 0
    failures: int = 0
    failing: dict[tuple[str, str], Failure] = field(default_factory=dict)

    def failed(self, failure: Failure) -> None:
        with self.lock:
            self.failing[(failure.source, failure.message_id)] = failure

    def delivered(self, source: str, message_ids: list[str]) -> None:
        with self.lock:
            for message_id in message_ids:
                self.failing.pop((source, message_id), None)

    def forget(self, source: str) -> None:
        with self.lock:
            for key in [k for k in self.failing if k[0] == source]:
                del self.failing[key]

    def waiting_retries(self, source: str) -> int:
        """Failed deliveries of this source whose retry is still to come."""
        now = time.time()
        with self.lock:
            return sum(f.source == source and f.retry_at > now for f in self.failing.values())

    def failures_now(self) -> list[Failure]:
        now = time.time()
        with self.lock:
            for key, failure in list(self.failing.items()):
                if failure.retry_at + FAILURE_REPORT_GRACE_S < now:
                    del self.failing[key]
            return sorted(self.failing.values(), key=lambda f: f.retry_at)

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
        # When (monotonic) the last poll that found the source empty started: the quiet check
        # asks every source for one such poll after the stack went idle (runner.wait_settled).
        self.empty_poll_started = 0.0
        self._wake = threading.Event()

    def wake(self) -> None:
        """Poll now instead of at the end of the idle backoff."""
        self._wake.set()

    def invoke(self, event: dict[str, Any]) -> Invocation:
        self.activity.begin()
        failed = True
        try:
            invocation = self.worker.invoke(event)
            result = invocation.result
            failed = bool(isinstance(result, dict) and result.get("batchItemFailures"))
            return invocation
        finally:
            self.activity.end(failed)

    # True when poll_once itself waits for the source (an SQS long poll): no backoff then.
    long_polls = False

    def run(self) -> None:
        # Sources that cannot long-poll are polled again after a backoff while they stay empty.
        backoff = IDLE_BACKOFF_MIN_S
        while not self.stop_event.is_set():
            try:
                started = time.monotonic()
                if self.long_polls:
                    # Waiting in the source is idle: the quiet check asks the queue itself
                    # (`pending`), so it need not wait for the long poll to come back empty.
                    self.idle = True
                found = self.poll_once()
                self.idle = not found
                self.error = None
                if not found:
                    self.empty_poll_started = started
                if found or self.long_polls:
                    backoff = IDLE_BACKOFF_MIN_S
                else:
                    if self._wake.wait(backoff):
                        self._wake.clear()  # the poll below answers every wake before it
                    backoff = min(backoff * 2, IDLE_BACKOFF_MAX_S)
            except Exception as error:  # a broken endpoint must not kill the mapping thread
                self.idle = False
                self.error = f"{type(error).__name__}: {error}"
                self.stop_event.wait(1.0)

    def poll_once(self) -> bool:
        """Deliver what is there; True when something was found (the source was not empty)."""
        raise NotImplementedError

    def pending(self) -> str:
        """A fresh look at the source, for the quiet check (the idle flag may be a poll old):
        "none", "retries" (only failed deliveries waiting for their retry) or "work"."""
        return "none" if self.idle else "work"


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
        crash_retry_s: int = CRASH_RETRY_S,
    ):
        super().__init__(worker, activity, stop, f"sqs:{queue_arn.rsplit(':', 1)[-1]}")
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.batch_size = batch_size
        self.report_failures = report_failures
        self.retry_delay_cap = retry_delay_cap
        self.crash_retry_s = crash_retry_s
        self._queue_attributes: tuple[int, int | None] | None = None

    def queue_attributes(self) -> tuple[int, int | None]:
        """(visibility timeout, maxReceiveCount or None), read once."""
        if self._queue_attributes is None:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
            )["Attributes"]
            policy = json.loads(attributes.get("RedrivePolicy") or "{}")
            max_receives = policy.get("maxReceiveCount")
            self._queue_attributes = (
                int(attributes.get("VisibilityTimeout", 30)),
                int(max_receives) if max_receives else None,
            )
        return self._queue_attributes

    def retry_delay(self, crashed: bool) -> int:
        """When a failed message comes back: the queue's visibility timeout as in AWS, unless
        the stack caps it; a crashed invocation's after a short delay."""
        delay = self.queue_attributes()[0]
        if self.retry_delay_cap is not None:
            delay = min(delay, self.retry_delay_cap)
        if crashed:
            delay = min(delay, self.crash_retry_s)
        return delay

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
            return False  # in-flight retries are checked by pending() when it matters
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
        errors: dict[str, str]
        crashed = False
        try:
            invocation = self.invoke({"Records": records})
            failed_ids: set[str] = set()
            if self.report_failures and isinstance(invocation.result, dict):
                failed_ids = {
                    f["itemIdentifier"] for f in invocation.result.get("batchItemFailures") or []
                }
            errors = invocation.errors
        except InvokeError as error:
            failed_ids = {r["messageId"] for r in records}
            errors = {i: error.errors.get(i, str(error)) for i in failed_ids}
            crashed = error.crashed
        done = [r for r in records if r["messageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        self.activity.delivered(self.name, [r["messageId"] for r in done])
        if failed_ids:
            self._retry_later([r for r in records if r["messageId"] in failed_ids], errors, crashed)
        return True

    def _retry_later(
        self, failed: list[dict[str, Any]], errors: dict[str, str], crashed: bool
    ) -> None:
        visibility, max_receives = self.queue_attributes()
        delay = self.retry_delay(crashed)
        for r in failed:
            if delay != visibility:
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=r["receiptHandle"],
                    VisibilityTimeout=delay,
                )
            self.activity.failed(
                Failure(
                    function=self.worker.spec.name,
                    source=self.name,
                    message_id=r["messageId"],
                    key=", ".join(describe(r["body"])),
                    attempt=int(r["attributes"].get("ApproximateReceiveCount", 1)),
                    max_attempts=max_receives,
                    error=errors.get(r["messageId"], "reported as a failed batch item"),
                    retry_at=time.time() + delay,
                    crashed=crashed,
                )
            )

    def pending(self) -> str:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        counts = {k: int(v) for k, v in attrs.items()}
        hidden = counts.pop("ApproximateNumberOfMessagesNotVisible")
        if any(counts.values()):
            return "work"
        if not hidden:
            # Nothing waits for a retry here (purged, redriven, dead-lettered): forget them.
            self.activity.forget(self.name)
            return "none"
        # Asked only when no invocation is in flight: a hidden message is one waiting for its
        # retry, or one someone else holds (a `dlq list`, a test's receive).
        return "retries" if hidden <= self.activity.waiting_retries(self.name) else "work"


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

    @staticmethod
    def sequence_number(record: dict[str, Any]) -> str:
        """The record's sequence number, its itemIdentifier in a partial batch response."""
        return record["dynamodb"]["SequenceNumber"]

    # The on-failure record's batch-info key and each record's arrival (DynamoDB streams).
    BATCH_INFO = "DDBStreamBatchInfo"

    @staticmethod
    def arrival_time(record: dict[str, Any]) -> Any:
        return record["dynamodb"].get("ApproximateCreationDateTime")

    def _passes_filters(self, record: dict[str, Any]) -> bool:
        # Lambda drops records that match none of the patterns before batching.
        if not self.filter_patterns:
            return True
        return any(matches(pattern, record) for pattern in self.filter_patterns)

    def _deliver(self, shard_id: str, batch: list[dict[str, Any]], attempt: int = 0) -> None:
        while batch:
            sequence_numbers = [self.sequence_number(r) for r in batch]
            try:
                invocation = self.invoke({"Records": batch})
            except InvokeError as error:
                failed_from = 0
                message = error.errors.get(sequence_numbers[0], str(error))
            else:
                result = invocation.result
                failures = (result or {}).get("batchItemFailures") if self.report_failures else None
                if not failures:
                    self.delivered += len(batch)
                    self.activity.delivered(self.name, sequence_numbers)
                    return
                first = min(sequence_numbers.index(f["itemIdentifier"]) for f in failures)
                self.delivered += first
                self.activity.delivered(self.name, sequence_numbers[:first])
                failed_from = first
                message = invocation.errors.get(
                    sequence_numbers[first], "reported as a failed batch item"
                )
            batch = batch[failed_from:]
            self._report(batch[0], attempt, message)
            self.stop_event.wait(STREAM_RETRY_BACKOFF_S)
            if self.bisect and len(batch) > 1:
                # Splitting a batch does not count towards the retry quota (AWS Lambda docs).
                half = len(batch) // 2
                self._deliver(shard_id, batch[:half], attempt)
                self._deliver(shard_id, batch[half:], attempt)
                return
            if attempt >= self.max_retry_attempts:
                self._send_to_on_failure(shard_id, batch, attempt)
                self.activity.delivered(self.name, [self.sequence_number(r) for r in batch])
                return
            attempt += 1

    def _report(self, record: dict[str, Any], attempt: int, error: str) -> None:
        keys = (record["dynamodb"].get("Keys") or {}).values()
        self.activity.failed(
            Failure(
                function=self.worker.spec.name,
                source=self.name,
                message_id=record["dynamodb"]["SequenceNumber"],
                key="stream record " + "/".join(str(next(iter(k.values()))) for k in keys),
                attempt=attempt + 1,
                max_attempts=self.max_retry_attempts + 1,
                error=error,
                retry_at=time.time() + STREAM_RETRY_BACKOFF_S,
                crashed=False,
            )
        )

    def _send_to_on_failure(self, shard_id: str, batch: list[dict[str, Any]], attempt: int) -> None:
        if not self.on_failure_queue_url:
            return  # AWS drops the batch when no destination is configured
        body = self.failure_body(shard_id, batch, attempt)
        self.sqs.send_message(QueueUrl=self.on_failure_queue_url, MessageBody=json.dumps(body))

    def failure_body(self, shard_id: str, batch: list[dict[str, Any]], attempt: int) -> dict:
        """What Lambda sends to the on-failure destination of a stream mapping."""
        arrival = [self.arrival_time(r) for r in batch]
        return {
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
            self.BATCH_INFO: {
                "shardId": shard_id,
                "startSequenceNumber": self.sequence_number(batch[0]),
                "endSequenceNumber": self.sequence_number(batch[-1]),
                "approximateArrivalOfFirstRecord": str(arrival[0]),
                "approximateArrivalOfLastRecord": str(arrival[-1]),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
