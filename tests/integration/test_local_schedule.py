"""The local runner's scheduler (issue 17): the operations service's late checker runs on its
`schedule` event as the schedule clock moves (paused in tests), once per due time, as of the
scheduled time; a failing scheduled invocation is retried like an asynchronous Lambda
invocation, logged, and sent to the function's on-failure destination (`dlq list` names it)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, timedelta
from pathlib import Path

import boto3
import pytest
from operations_support import expect_accounts_by_six, next_weekday, notices, reset_alarm
from persistence_support import item

from dataharvest.ops import alarms
from dataharvest_local import cli
from dataharvest_local.schedule import ScheduleMapping

pytestmark = pytest.mark.integration

CHECKER = "dataharvest-operations-local-checkLate"
FAILING = "dataharvest-scheduled-probe-local-failing"


def schedule_of(local_stack, function: str) -> ScheduleMapping:
    (mapping,) = [
        m
        for m in local_stack.runner.mappings
        if isinstance(m, ScheduleMapping) and m.worker.spec.name == function
    ]
    return mapping


def test_the_late_checker_runs_on_the_schedule_clock(
    local_stack, client_id, db, inbox, wait_quiet
) -> None:
    clock = local_stack.schedule_clock
    assert clock.paused
    checker = schedule_of(local_stack, CHECKER)
    assert checker.schedule.expression == "rate(15 minutes)"
    # A business date ahead of the clock, so its due time is still to come.
    day = next_weekday(clock.now().astimezone(UTC).date() + timedelta(days=2))
    expectation = expect_accounts_by_six(db, client_id, day)
    due = expectation.due_at(day)
    yyyymmdd = f"{day:%Y%m%d}"
    fired = len(checker.fired)

    # Up to just before the cutoff: the windows passed run once, as of the latest; nothing late.
    clock.set(due - timedelta(minutes=1))
    wait_quiet()
    assert len(checker.fired) == fired + 1
    assert due - timedelta(minutes=16) < checker.fired[-1] <= due - timedelta(minutes=1)
    assert notices(db, client_id) == []
    assert "account_late" not in item(client_id, yyyymmdd)
    reset_alarm(alarms.INPUTS_LATE)
    inbox.drain()

    # The first window after it: the item is marked, one notice, one alarm.
    clock.set(due + timedelta(minutes=16))
    wait_quiet()
    assert len(checker.fired) == fired + 2 and checker.fired[-1] > due
    assert item(client_id, yyyymmdd)["account_late"] is True
    (notice,) = notices(db, client_id)
    assert notice["published"] and notice["business_date"] == day
    assert notice["message"].startswith(f"accounts_{yyyymmdd}.csv: not received")
    (alarm,) = inbox.of(alarms.INPUTS_LATE)
    assert client_id in alarm["NewStateReason"]

    # The next window: the checker runs again and sends nothing new.
    clock.advance(timedelta(minutes=15))
    wait_quiet()
    assert len(checker.fired) == fired + 3
    assert len(notices(db, client_id)) == 1
    assert inbox.of(alarms.INPUTS_LATE) == []


def test_a_failing_scheduled_invocation_is_retried_then_sent_to_its_destination(
    local_stack, wait_quiet, caplog, capsys
) -> None:
    mapping = schedule_of(local_stack, FAILING)
    assert mapping.max_retry_attempts == 1 and mapping.on_failure_queue_url
    sqs = boto3.client("sqs")
    sqs.purge_queue(QueueUrl=mapping.on_failure_queue_url)
    log_path = Path(mapping.worker.log_path)
    failures_before = (
        log_path.read_text().count("RuntimeError: scheduled probe failure")
        if log_path.exists()
        else 0
    )
    fired = len(mapping.fired)

    with caplog.at_level(logging.INFO, logger="dataharvest_local.schedule"):
        local_stack.schedule_clock.set(mapping.next_due)
        wait_quiet()
    assert len(mapping.fired) == fired + 1
    due = mapping.fired[-1]

    # Invoked twice (once and one retry), each failure in the function's log.
    failures = log_path.read_text().count("RuntimeError: scheduled probe failure")
    assert failures - failures_before == 2
    # Logged by the scheduler: the retry, then the hand-over to the destination.
    messages = [r.getMessage() for r in caplog.records if r.name == "dataharvest_local.schedule"]
    assert any("attempt 1 of 2, retrying" in m for m in messages)
    assert any("sent to the on-failure destination" in m for m in messages)

    # `dataharvest dlq list` names the run and its error.
    capsys.readouterr()
    assert cli.main(["dlq", "list", "--json", "--queue", "scheduled-probe-failures"]) == 0
    (letter,) = json.loads(capsys.readouterr().out)
    (about,) = letter["keys"]
    assert about.startswith(
        f"scheduled run of {due:%Y-%m-%dT%H:%M:%SZ} RetriesExhausted (RuntimeError: "
        "scheduled probe failure"
    )

    response = sqs.receive_message(
        QueueUrl=mapping.on_failure_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    (message,) = response["Messages"]
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["functionArn"].endswith(f":function:{FAILING}")
    assert record["requestPayload"]["detail-type"] == "Scheduled Event"
    assert record["requestPayload"]["time"] == f"{due:%Y-%m-%dT%H:%M:%SZ}"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"].startswith("scheduled probe failure")
    # Read: gone (`dlq redrive` of every queue would otherwise find it later).
    sqs.delete_message(
        QueueUrl=mapping.on_failure_queue_url, ReceiptHandle=message["ReceiptHandle"]
    )
