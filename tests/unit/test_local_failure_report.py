"""How the local stack reports failing deliveries (no services): per-record errors from a
worker's captured batch log lines, and the line `dataharvest run` prints."""

from __future__ import annotations

import logging

from dataharvest_local.cli import describe_failure
from dataharvest_local.worker import RecordErrors, record_errors


def test_record_errors_follow_the_partial_batch_response() -> None:
    captured = RecordErrors()
    for text in ("<class 'ValueError'>:bad row", "<class 'psycopg.OperationalError'>:down"):
        captured.emit(
            logging.LogRecord(
                "b", logging.DEBUG, "", 0, f"Record processing exception: {text}", None, None
            )
        )
    captured.emit(logging.LogRecord("b", logging.DEBUG, "", 0, "something else", None, None))
    result = {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}
    assert record_errors(result, captured.errors) == {
        "m1": "ValueError: bad row",
        "m3": "OperationalError: down",
    }
    assert record_errors({"batchItemFailures": []}, captured.errors) == {}


def test_when_every_record_failed_errors_follow_the_records() -> None:
    event = {"Records": [{"messageId": "a"}, {"dynamodb": {"SequenceNumber": "7"}}]}
    assert record_errors(None, ["E: 1", "E: 2"], event) == {"a": "E: 1", "7": "E: 2"}
    assert record_errors(None, ["E: 1"], event) == {}  # cannot tell which failed


def test_the_line_run_prints() -> None:
    failure = {
        "function": "dataharvest-persistence-local-persist",
        "key": "acme/accounts_20240102.csv",
        "attempt": 2,
        "max_attempts": 5,
        "error": "OperationalError: down",
        "retry_in": 5398,
        "crashed": False,
    }
    assert describe_failure(failure) == (
        "dataharvest-persistence-local-persist: acme/accounts_20240102.csv failed "
        "(attempt 2 of 5): OperationalError: down; retrying in 5398 s"
    )
    assert describe_failure({**failure, "crashed": True, "max_attempts": None}).startswith(
        "dataharvest-persistence-local-persist: acme/accounts_20240102.csv crashed (attempt 2): "
    )
