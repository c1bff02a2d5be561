"""The local runner: every function of the given stacks as a warm worker process, and its
event-source mappings read from each service's serverless.yml `events:` (sqs, stream, and
schedule: dataharvest_local.schedule, on the runner's schedule clock)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataharvest_local.instances import FunctionSpec, InvokeError, Worker
from dataharvest_local.kinesis import KinesisMapping
from dataharvest_local.mappings import (
    CRASH_RETRY_S,
    Activity,
    Mapping,
    SqsMapping,
    StreamMapping,
)
from dataharvest_local.provision import Provisioner, Stack
from dataharvest_local.schedule import (
    DEFAULT_MAX_RETRY_ATTEMPTS,
    ScheduleClock,
    ScheduleEvent,
    ScheduleMapping,
)
from dataharvest_local.slsconfig import LOCAL_ACCOUNT_ID

# How often the quiet check looks again while invocations are in flight.
QUIET_CHECK_S = 0.02
# How long after its retry time a failed delivery still counts as about to be redelivered.
REDELIVERY_GRACE_S = 2.0


class Runner:
    """All functions and event-source mappings of the given stacks."""

    def __init__(
        self,
        provisioner: Provisioner,
        log_dir: Path,
        base_env: dict[str, str],
        retry_delay_cap: int | None = None,
        crash_retry_s: int = CRASH_RETRY_S,
        service_environment: Callable[[str], dict[str, str]] | None = None,
        schedule_clock: ScheduleClock | None = None,
        settle_s: float = 0.0,
    ):
        self.provisioner = provisioner
        self.log_dir = log_dir
        self.base_env = base_env
        self.retry_delay_cap = retry_delay_cap
        self.crash_retry_s = crash_retry_s
        # Per-service overrides of base_env (the database role each service connects as).
        self.service_environment = service_environment
        self.activity = Activity()
        self.stop_event = threading.Event()
        self.workers: dict[str, Worker] = {}
        self.mappings: list[Mapping] = []
        # Waited once the stack looks idle, before the sources are asked: for an AWS endpoint
        # that delivers events (S3 notifications, stream records) a moment after the call
        # that caused them. The embedded moto server delivers them within the call: 0.
        self.settle_s = settle_s
        # Functions only a schedule invokes: not warmed at start.
        self.lazy: set[str] = set()
        # The time `schedule` events see (schedule.py): real time unless the caller pauses it.
        self.schedule_clock = schedule_clock or ScheduleClock()
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
        if self.service_environment is not None:
            env.update(self.service_environment(file.service))
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
            events = definition.get("events") or []
            if not any(
                "sqs" in event or "stream" in event or "schedule" in event for event in events
            ):
                # Nothing would ever invoke this function locally: no worker process.
                continue
            spec = self.function_spec(stack, key)
            worker = self.workers[spec.name] = Worker(spec, self.log_dir)
            if not any("sqs" in event or "stream" in event for event in events):
                # Only a schedule invokes it: its process starts on the first due time.
                self.lazy.add(spec.name)
            function_arn = (
                f"arn:aws:lambda:{stack.file.region}:{LOCAL_ACCOUNT_ID}:function:{spec.name}"
            )
            schedules = [
                scheduled
                for event in events
                if "schedule" in event
                for scheduled in ScheduleEvent.from_config(event["schedule"])
            ]
            for index, scheduled in enumerate(schedules, start=1):
                self.mappings.append(
                    self._schedule_mapping(
                        worker, stack, definition, scheduled, index, function_arn, sqs
                    )
                )
            for event in events:
                if "sqs" in event:
                    self.mappings.append(self._sqs_mapping(worker, stack, event["sqs"], sqs))
                    # More instances polling the same queue, up to the mapping's maximum
                    # concurrency and the local cap (e.g. a large file's chunks in parallel).
                    for instance in range(1, self._instances(event["sqs"])):
                        extra = self.workers[f"{spec.name}#{instance}"] = Worker(
                            spec, self.log_dir, instance
                        )
                        self.mappings.append(self._sqs_mapping(extra, stack, event["sqs"], sqs))
                elif "stream" in event and _is_kinesis(event["stream"]):
                    self.mappings.append(
                        self._stream_mapping(
                            worker,
                            stack,
                            event["stream"],
                            self.provisioner.client("kinesis"),
                            sqs,
                            function_arn,
                            KinesisMapping,
                        )
                    )
                elif "stream" in event:
                    self.mappings.append(
                        self._stream_mapping(
                            worker, stack, event["stream"], streams, sqs, function_arn
                        )
                    )

    def _schedule_mapping(
        self,
        worker: Worker,
        stack: Stack,
        definition: dict[str, Any],
        scheduled: ScheduleEvent,
        index: int,
        function_arn: str,
        sqs: Any,
    ) -> ScheduleMapping:
        """A `schedule` event: an asynchronous invocation at each due time, retried
        `maximumRetryAttempts` times, then sent to `destinations.onFailure` (an SQS queue)."""
        on_failure = (definition.get("destinations") or {}).get("onFailure")
        if isinstance(on_failure, dict):
            on_failure = on_failure.get("arn")
        on_failure_url = (
            self._queue_url(self.provisioner.resolve(on_failure, stack)) if on_failure else None
        )
        return ScheduleMapping(
            worker,
            self.activity,
            self.stop_event,
            event=scheduled,
            index=index,
            clock=self.schedule_clock,
            region=stack.file.region,
            account=LOCAL_ACCOUNT_ID,
            function_arn=function_arn,
            max_retry_attempts=int(
                definition.get("maximumRetryAttempts", DEFAULT_MAX_RETRY_ATTEMPTS)
            ),
            retry_delay_cap=self.retry_delay_cap,
            sqs=sqs,
            on_failure_queue_url=on_failure_url,
        )

    def schedules(self) -> list[dict[str, Any]]:
        """Each schedule's function, expression, next due time and invocations so far."""
        return [m.describe() for m in self.mappings if isinstance(m, ScheduleMapping)]

    @staticmethod
    def _instances(config: Any) -> int:
        """Local instances of an SQS-triggered function: DATAHARVEST_LOCAL_CONCURRENCY (default
        1, one process per function) up to the mapping's maximumConcurrency."""
        cap = int(os.environ.get("DATAHARVEST_LOCAL_CONCURRENCY") or 1)
        maximum = config.get("maximumConcurrency", 1) if isinstance(config, dict) else 1
        return max(1, min(cap, int(maximum)))

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
            crash_retry_s=self.crash_retry_s,
        )

    def _stream_mapping(
        self,
        worker: Worker,
        stack: Stack,
        config: dict,
        streams,
        sqs,
        function_arn: str,
        kind: type[StreamMapping] = StreamMapping,
    ) -> StreamMapping:
        arn = self.provisioner.resolve(config["arn"], stack)
        on_failure = (config.get("destinations") or {}).get("onFailure")
        if isinstance(on_failure, dict):
            on_failure = on_failure.get("arn")
        on_failure_url = (
            self._queue_url(self.provisioner.resolve(on_failure, stack)) if on_failure else None
        )
        return kind(
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
        for name, worker in self.workers.items():
            if name not in self.lazy:
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
        retrying = [f.as_dict() for f in self.activity.failures_now()]
        with self.activity.lock:
            return {
                "generation": self.activity.generation,
                "in_flight": self.activity.in_flight,
                "invocations": self.activity.invocations,
                "failures": self.activity.failures,
                "idle": self.activity.in_flight == 0 and all(m.idle for m in self.mappings),
                "mappings": {m.name: {"idle": m.idle, "error": m.error} for m in self.mappings},
                "retrying": retrying,
            }

    def wait_quiet(self, timeout: float = 300.0) -> bool:
        """Block until nothing is in flight and every source was seen empty after that."""
        return self.wait_settled(timeout) == "quiet"

    def wait_settled(self, timeout: float = 300.0, stall_after: float | None = None) -> str:
        """Block until quiet ("quiet"), or, with `stall_after`, until the only work left is
        failed deliveries whose retries are all more than `stall_after` seconds away
        ("retrying"); "busy" when the timeout ran out first.

        Quiet: no invocation in flight, every source looked at after that and found empty,
        and no invocation began meanwhile. A short-polling source (a stream) is woken to poll
        at once, and its next empty poll must have started after the stack went idle (a
        record the last invocation wrote is seen by it); a queue is asked directly
        (`pending`: its message counts), as a long poll cannot be hurried.
        """
        deadline = time.monotonic() + timeout
        polled = [m for m in self.mappings if not m.long_polls]
        while time.monotonic() < deadline:
            first = self.status()
            if first["idle"] and self.settle_s:
                time.sleep(self.settle_s)
                first = self.status()
            if first["idle"] and self._polled_after_idle(polled, first["generation"], deadline):
                second = self.status()
                if second["idle"] and second["generation"] == first["generation"]:
                    pending = {m.pending() for m in self.mappings}
                    if self.status()["generation"] == first["generation"]:
                        if pending <= {"none"}:
                            return "quiet"
                        if stall_after is not None and pending <= {"none", "retries"}:
                            # Failures whose retry is long past were redelivered since, or
                            # dead-lettered: only the ones still to come count. One just due
                            # may still be hidden for a moment (the queue's own timer runs a
                            # little behind ours): it counts as due now, not as gone.
                            now = time.time()
                            retry_in = [
                                f.retry_at - now
                                for f in self.activity.failures_now()
                                if f.retry_at > now - REDELIVERY_GRACE_S
                            ]
                            if retry_in and min(retry_in) > stall_after:
                                return "retrying"
            time.sleep(QUIET_CHECK_S)
        return "busy"

    def _polled_after_idle(self, polled: list[Mapping], generation: int, deadline: float) -> bool:
        """Wakes the short-polling sources and waits until each has started and finished an
        empty poll after now; False when an invocation began meanwhile (or time ran out)."""
        mark = time.monotonic()
        for mapping in polled:
            mapping.wake()
        while any(m.empty_poll_started < mark for m in polled):
            if self.activity.generation != generation or time.monotonic() > deadline:
                return False
            if any(m.error for m in polled):
                return False  # a broken source is never quiet
            time.sleep(0.005)
        return True


def _is_kinesis(config: Any) -> bool:
    """A `stream` event of a Kinesis data stream (`type: kinesis`), not a DynamoDB stream."""
    if not isinstance(config, dict):
        return False
    arn = config.get("arn")
    return config.get("type") == "kinesis" or (isinstance(arn, str) and ":kinesis:" in arn)
