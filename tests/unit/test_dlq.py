"""What `dataharvest dlq` says about a dead letter, and which queues `--queue` selects: no
services."""

from __future__ import annotations

import json

import pytest

from dataharvest.dlq import DeadLetterQueue, UnknownQueue, describe, select
from dataharvest.work import WorkMessage

QUEUES = [
    DeadLetterQueue("catapult-failures", "http://q/catapult-failures", None),
    DeadLetterQueue("persistence-dlq", "http://q/persistence-dlq", "http://q/persistence"),
    DeadLetterQueue("tax-transformer-dlq", "http://q/tax-dlq", "http://q/tax"),
]


def test_a_persistence_delivery_names_its_decoded_keys() -> None:
    body = json.dumps({"Records": [{"s3": {"object": {"key": "acme/accounts_20240102.csv"}}}]})
    assert describe(body) == ["acme/accounts_20240102.csv"]
    body = json.dumps({"Records": [{"s3": {"object": {"key": "a+b%2Fc.csv"}}}]})
    assert describe(body) == ["a b/c.csv"]


def test_a_work_message_names_its_item_transformer_and_action() -> None:
    message = WorkMessage("acme", "20240102", "tax_transformer", "APPLY", {"v": "1"})
    assert describe(message.to_json()) == ["acme/20240102 tax_transformer APPLY"]


def test_an_on_failure_record_names_its_stream_range() -> None:
    body = json.dumps(
        {
            "requestContext": {"condition": "RetryAttemptsExhausted"},
            "DDBStreamBatchInfo": {
                "batchSize": 2,
                "startSequenceNumber": "100",
                "endSequenceNumber": "101",
            },
        }
    )
    assert describe(body) == ["2 stream record(s) 100..101 (RetryAttemptsExhausted)"]


def test_a_scheduled_runs_record_names_its_time_and_error() -> None:
    record = {
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"detail-type": "Scheduled Event", "time": "2030-06-03T04:15:00Z"},
        "responsePayload": {"errorType": "OperationalError", "errorMessage": "db down"},
    }
    assert describe(json.dumps(record)) == [
        "scheduled run of 2030-06-03T04:15:00Z RetriesExhausted (OperationalError: db down)"
    ]
    other = {"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": {}}
    assert describe(json.dumps(other)) == ["invocation RetriesExhausted"]


def test_anything_else_is_shown_as_sent() -> None:
    assert describe("poison-1") == ["poison-1"]
    assert describe("x" * 100) == ["x" * 77 + "..."]


def test_select_all_one_or_refuse() -> None:
    assert select(QUEUES, None, "prod") == QUEUES
    assert select(QUEUES, "tax-transformer-dlq", "prod") == [QUEUES[2]]
    assert select(QUEUES, "dataharvest-prod-persistence-dlq", "prod") == [QUEUES[1]]
    with pytest.raises(UnknownQueue) as refused:
        select(QUEUES, "nope", "prod")
    assert str(refused.value) == (
        "no dead-letter queue named 'nope' (the stage has: catapult-failures, "
        "persistence-dlq, tax-transformer-dlq)"
    )
