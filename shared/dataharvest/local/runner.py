"""Local event-source mappings: deliver SQS messages and DynamoDB stream records to the
unchanged handlers the way AWS Lambda does, from each service's serverless.yml `events:`.

SQS: batches of up to batchSize, partial batch responses (ReportBatchItemFailures), failed
messages stay on the queue until their visibility timeout ends and move to the DLQ after
maxReceiveCount (the queue's redrive policy, enforced by the endpoint).
DynamoDB streams: per-shard order, filterPatterns applied with `dataharvest.filters.matches`,
batchSize, retries up to maximumRetryAttempts, bisectBatchOnFunctionError, partial batch
responses, and the on-failure destination once retries are exhausted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dataharvest.filters import matches
from dataharvest.local.provision import Provisioner, Stack

# Empty sources are polled again after a wait that doubles from MIN to MAX.
IDLE_BACKOFF_MIN_S = 0.02
IDLE_BACKOFF_MAX_S = 0.25
SHARD_REFRESH_S = 5.0
# How long a stream mapping waits between retries of a failed batch (AWS backs off similarly).
STREAM_RETRY_BACKOFF_S = 0.2


@dataclass
class FunctionSpec:
    name: str
    service: str
    directory: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]


class InvokeError(RuntimeError):
    """The function failed (raised, crashed or timed out): the whole batch failed."""


class Worker:
    """One Lambda instance of a function: a long-lived process serving one invoke at a time."""

    def __init__(self, spec: FunctionSpec, log_dir: Path):
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHARVEST_LOCAL",))}
        env.update(self.spec.environment)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.spec.directory), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataharvest.local.worker",
                str(self.spec.directory),
                self.spec.handler,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=str(self.spec.directory),
            text=True,
            bufsize=1,
        )
        log.close()
        ready = process.stdout.readline() if process.stdout else ""
        if not ready:
            raise InvokeError(f"{self.spec.name}: init failed, see {self.log_path}")
        return process

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            assert process.stdin and process.stdout
            process.stdin.write(json.dumps(event, default=str) + "\n")
            process.stdin.flush()
            reply_line = _readline_with_timeout(process, self.spec.timeout)
            if reply_line is None:
                # Lambda ends a timed-out invocation and starts a fresh environment.
                process.kill()
                self._process = None
                raise InvokeError(f"{self.spec.name}: timed out after {self.spec.timeout} s")
            if not reply_line:
                self._process = None
                raise InvokeError(f"{self.spec.name}: runtime exited, see {self.log_path}")
            reply = json.loads(reply_line)
            if not reply["ok"]:
                raise InvokeError(
                    f"{self.spec.name}: {reply['errorType']}: {reply['errorMessage']}"
                )
            return reply["result"]

    def warm(self) -> None:
        """Start the instance ahead of its first event (like provisioned concurrency)."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()

    def stop(self) -> None:
        with self._lock:
            if self._process and self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._process = None


def _readline_with_timeout(process: subprocess.Popen[str], timeout: float) -> str | None:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else None


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

    def run(self) -> None:
        # Short polls with a backoff while the source stays empty: long polls against moto's
        # server spin its threads and cost a core with a dozen mappings idling.
        backoff = IDLE_BACKOFF_MIN_S
        while not self.stop_event.is_set():
            try:
                found = self.poll_once()
                self.idle = not found
                self.error = None
                if found:
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

    def poll_once(self) -> bool:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            WaitTimeSeconds=0,
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


class Runner:
    """All functions and event-source mappings of the given stacks."""

    def __init__(
        self,
        provisioner: Provisioner,
        log_dir: Path,
        base_env: dict[str, str],
        retry_delay_cap: int | None = None,
    ):
        self.provisioner = provisioner
        self.log_dir = log_dir
        self.base_env = base_env
        self.retry_delay_cap = retry_delay_cap
        self.activity = Activity()
        self.stop_event = threading.Event()
        self.workers: dict[str, Worker] = {}
        self.mappings: list[Mapping] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def function_spec(self, stack: Stack, key: str) -> FunctionSpec:
        file = stack.file
        provider = file.data.get("provider") or {}
        definition = file.functions[key]
        environment = {
            **self.provisioner.resolve(provider.get("environment") or {}, stack),
            **self.provisioner.resolve(definition.get("environment") or {}, stack),
        }
        name = file.function_name(key)
        timeout = int(definition.get("timeout", provider.get("timeout", 6)))
        memory = int(definition.get("memorySize", provider.get("memorySize", 1024)))
        env = {k: str(v) for k, v in environment.items()}
        env.update(self.base_env)
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
                "AWS_REGION": file.region,
                "AWS_DEFAULT_REGION": file.region,
                "AWS_SAM_LOCAL": "true",
            }
        )
        return FunctionSpec(
            name=name,
            service=file.service,
            directory=file.directory,
            handler=definition["handler"],
            timeout=timeout,
            memory=memory,
            environment=env,
        )

    def add_stack(self, stack: Stack) -> None:
        sqs = self.provisioner.client("sqs")
        streams = self.provisioner.client("dynamodbstreams")
        for key, definition in stack.file.functions.items():
            spec = self.function_spec(stack, key)
            worker = self.workers[spec.name] = Worker(spec, self.log_dir)
            function_arn = f"arn:aws:lambda:{stack.file.region}:123456789012:function:{spec.name}"
            for event in definition.get("events") or []:
                if "sqs" in event:
                    self.mappings.append(self._sqs_mapping(worker, stack, event["sqs"], sqs))
                elif "stream" in event:
                    self.mappings.append(
                        self._stream_mapping(
                            worker, stack, event["stream"], streams, sqs, function_arn
                        )
                    )

    def _queue_url(self, arn: str) -> str:
        for stack in self.provisioner.stacks.values():
            for resource in stack.resources.values():
                if resource.attributes.get("Arn") == arn and resource.type == "AWS::SQS::Queue":
                    return resource.attributes["QueueUrl"]
        raise KeyError(f"no local queue with ARN {arn}")

    def _sqs_mapping(self, worker: Worker, stack: Stack, config: Any, sqs) -> SqsMapping:
        config = (
            {"arn": config} if isinstance(config, (str, dict)) and "arn" not in config else config
        )
        arn = self.provisioner.resolve(config["arn"], stack)
        return SqsMapping(
            worker,
            self.activity,
            self.stop_event,
            sqs=sqs,
            queue_url=self._queue_url(arn),
            queue_arn=arn,
            batch_size=int(config.get("batchSize", 10)),
            report_failures=config.get("functionResponseType") == "ReportBatchItemFailures",
            retry_delay_cap=self.retry_delay_cap,
        )

    def _stream_mapping(
        self, worker: Worker, stack: Stack, config: dict, streams, sqs, function_arn: str
    ) -> StreamMapping:
        arn = self.provisioner.resolve(config["arn"], stack)
        on_failure = (config.get("destinations") or {}).get("onFailure")
        if isinstance(on_failure, dict):
            on_failure = on_failure.get("arn")
        on_failure_url = (
            self._queue_url(self.provisioner.resolve(on_failure, stack)) if on_failure else None
        )
        return StreamMapping(
            worker,
            self.activity,
            self.stop_event,
            streams=streams,
            sqs=sqs,
            stream_arn=arn,
            batch_size=int(config.get("batchSize", 100)),
            starting_position=config.get("startingPosition", "TRIM_HORIZON"),
            filter_patterns=list(config.get("filterPatterns") or []),
            max_retry_attempts=int(config.get("maximumRetryAttempts", 10_000)),
            bisect=bool(config.get("bisectBatchOnFunctionError", False)),
            report_failures=config.get("functionResponseType") == "ReportBatchItemFailures",
            on_failure_queue_url=on_failure_url,
            function_arn=function_arn,
        )

    def start(self) -> None:
        for mapping in self.mappings:
            mapping.start()
        # Cold starts (imports of boto3, powertools, psycopg) take seconds each; take them in
        # the background now rather than on the first event of every function.
        for worker in self.workers.values():
            threading.Thread(target=self._warm, args=(worker,), daemon=True).start()

    @staticmethod
    def _warm(worker: Worker) -> None:
        try:
            worker.warm()
        except InvokeError as error:
            # Not fatal yet: the first invocation starts it again and fails its batch if it
            # still cannot start.
            logging.getLogger(__name__).warning("warm-up failed: %s", error)

    def stop(self) -> None:
        self.stop_event.set()
        for mapping in self.mappings:
            mapping.join(timeout=5)
        for worker in self.workers.values():
            worker.stop()

    def status(self) -> dict[str, Any]:
        with self.activity.lock:
            return {
                "generation": self.activity.generation,
                "in_flight": self.activity.in_flight,
                "invocations": self.activity.invocations,
                "failures": self.activity.failures,
                "idle": self.activity.in_flight == 0 and all(m.idle for m in self.mappings),
                "mappings": {m.name: {"idle": m.idle, "error": m.error} for m in self.mappings},
            }

    def wait_quiet(self, timeout: float = 300.0, settle: float = 0.6) -> bool:
        """Block until nothing is in flight and every mapping saw empty sources twice in a row."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first = self.status()
            if first["idle"]:
                time.sleep(settle)
                second = self.status()
                if (
                    second["idle"]
                    and second["generation"] == first["generation"]
                    and all(m.source_empty() for m in self.mappings)
                    and self.status()["generation"] == first["generation"]
                ):
                    return True
            time.sleep(0.1)
        return False
