"""A batch never outlasts its function: a record is started only while there is time for it.

Lambda hands one invocation a batch whose records run one after another. Each function says
how long one record may take (RECORD_BUDGET_SECONDS in its serverless.yml, from the durations
measured in BENCHMARKS.md). Once less than that is left, the remaining records fail without
being started (partial batch response): a stream batch is retried from the first of them at
once, and an SQS record is made visible again at once, so it goes to a fresh invocation
instead of waiting out the queue's visibility timeout (90 minutes for persistence).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import boto3

from dataharvest.observability import logger

DEFAULT_BUDGET_SECONDS = 60.0


class NotEnoughTime(Exception):
    """Too little of the invocation is left to start this record; it is retried."""


def budget_seconds() -> float:
    return float(os.environ.get("RECORD_BUDGET_SECONDS") or DEFAULT_BUDGET_SECONDS)


def guarded(record_handler: Callable[[Any], Any]) -> Callable[..., Any]:
    """`record_handler` for powertools' batch processor, refusing records it has no time for.

    powertools passes `lambda_context` to a record handler that names it. The first record of
    an invocation always runs: refusing it would gain nothing (the next invocation has no more
    time) and would only loop a record whose budget was set above the function's timeout."""
    started: set[str] = set()  # invocations that took a record already (one, in practice)

    def handle(record: Any, lambda_context: Any = None) -> Any:
        request = str(getattr(lambda_context, "aws_request_id", None))
        first = request not in started
        if first:
            started.clear()
            started.add(request)
        if lambda_context is not None and not first:
            left_ms = lambda_context.get_remaining_time_in_millis()
            budget = budget_seconds()
            if left_ms < budget * 1000:
                _release(record)
                raise NotEnoughTime(
                    f"{left_ms / 1000:.1f} s left in this invocation, a record may take "
                    f"{budget:.0f} s: not started, retried by a fresh invocation"
                )
        return record_handler(record)

    return handle


def _release(record: Any) -> None:
    """Make an SQS record visible again now (other event sources retry on their own)."""
    raw = getattr(record, "raw_event", record)
    if not isinstance(raw, dict) or raw.get("eventSource") != "aws:sqs":
        return
    try:
        queue_url = _queue_url(raw["eventSourceARN"])
        _sqs().change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=raw["receiptHandle"], VisibilityTimeout=0
        )
    except Exception as error:  # the record fails either way; it only returns later
        logger.warning(
            "could not make a refused record visible again; it returns after the queue's "
            "visibility timeout",
            extra={"message_id": raw.get("messageId"), "error": str(error)},
        )


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return boto3.client("sqs")


@lru_cache(maxsize=16)
def _queue_url(arn: str) -> str:
    _, _, _, _, account, name = arn.split(":", 5)
    return str(_sqs().get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
