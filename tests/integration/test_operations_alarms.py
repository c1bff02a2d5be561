"""Alarms on the local stack (issue 17): each condition raises exactly one notification on the
stage's alarm topic, received by an SQS queue subscribed to it; whole-file rejections reach
the partner as one error_message each."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from operations_support import notices, reset_alarm
from persistence_support import BUSINESS_DATE, accounts_file, key, put

from dataharvest import exports
from dataharvest.ops import alarms

pytestmark = pytest.mark.integration


@pytest.fixture
def local_alarms(monkeypatch):
    """This test process evaluates alarms as the local stack's workers do."""
    monkeypatch.setenv(alarms.LOCAL_FLAG, "1")


def test_whole_file_rejection_of_accounts_one_error_message_one_alarm(
    client_id, db, inbox, wait_quiet
) -> None:
    reset_alarm(alarms.FILES_REJECTED)
    bad = "record_id,account_number,currency\n1,101,EUR\n"  # lacks cash_balance, taxes_paid
    put(key(client_id, "accounts"), bad)
    wait_quiet()

    messages = exports.rows(db, "messages", client_id, BUSINESS_DATE)
    assert [m["message_type"] for m in messages] == ["error_message"]
    found = notices(db, client_id)
    assert len(found) == 1 and found[0]["published"]
    assert found[0]["message"].startswith("accounts_20240102.csv: rejected whole: ")
    assert "cash_balance" in found[0]["message"]
    assert messages[0]["message_group_id"] == client_id
    (alarm,) = inbox.of(alarms.FILES_REJECTED)
    assert client_id in alarm["NewStateReason"]

    # The same bytes again, and a redelivery: no second message, no second notification.
    put(key(client_id, "accounts"), bad)
    wait_quiet()
    assert len(notices(db, client_id)) == 1
    assert inbox.of(alarms.FILES_REJECTED) == []


def test_rejection_ratio_above_the_clients_threshold_one_alarm(
    client_id, db, inbox, wait_quiet
) -> None:
    from dataharvest.ops import outcomes

    reset_alarm(alarms.REJECTION_RATIO)
    with db.transaction():
        outcomes.set_alarm_reject_ratio(db, client_id, "0.05")
    # 1 of 12 rows rejected (8.3 %): loaded (under max_reject_ratio 0.10), above 0.05.
    put(key(client_id, "accounts"), accounts_file(12, bad=1))
    wait_quiet()
    (alarm,) = inbox.of(alarms.REJECTION_RATIO)
    assert client_id in alarm["NewStateReason"] and "1 of 12" in alarm["NewStateReason"]

    # Under the threshold: nothing (and the alarm stays where it is).
    other = f"t-{uuid.uuid4().hex[:10]}"
    put(key(other, "accounts"), accounts_file(30, bad=1))
    wait_quiet()
    assert inbox.of(alarms.REJECTION_RATIO) == []


def test_result_queue_age_one_alarm(stack_info, inbox, local_alarms) -> None:
    reset_alarm(alarms.RESULT_QUEUE_AGE)
    sqs = boto3.client("sqs")
    sqs.send_message(
        QueueUrl=stack_info.export("ResultQueueUrl"),
        MessageBody='{"test": "an unread partner message"}',
        MessageGroupId=f"t-{uuid.uuid4().hex[:10]}",
        MessageDeduplicationId=uuid.uuid4().hex,
    )
    now = datetime.now(UTC)
    # Now: younger than the threshold (an hour): OK, nothing sent.
    alarms.evaluate_queue_ages(now)
    assert inbox.of(alarms.RESULT_QUEUE_AGE) == []
    # Two hours on, nobody read it: one notification, however often it is evaluated.
    later = now + timedelta(hours=2)
    alarms.evaluate_queue_ages(later)
    alarms.evaluate_queue_ages(later + timedelta(minutes=1))
    (alarm,) = inbox.of(alarms.RESULT_QUEUE_AGE)
    assert "results.fifo" in alarm["NewStateReason"]


def test_persistence_queue_age_one_alarm(stack_info, inbox, local_alarms) -> None:
    """The persistence queue's alarm as the stage defines it, evaluated against a queue whose
    messages stay unread (the local runner empties the real one within a second)."""
    sqs = boto3.client("sqs")
    cloudwatch = boto3.client("cloudwatch")
    defined = cloudwatch.describe_alarms(
        AlarmNames=[alarms.alarm_name(alarms.PERSISTENCE_QUEUE_AGE)]
    )["MetricAlarms"][0]
    (dimension,) = defined["Dimensions"]
    assert dimension["Value"] == stack_info.export("PersistenceQueueName")
    backlog = f"persistence-backlog-{uuid.uuid4().hex[:8]}"
    sqs.send_message(QueueUrl=sqs.create_queue(QueueName=backlog)["QueueUrl"], MessageBody="{}")
    name = f"{alarms.alarm_name(alarms.PERSISTENCE_QUEUE_AGE)}-{backlog}"
    copy = {
        k: defined[k]
        for k in (
            "AlarmDescription",
            "Namespace",
            "MetricName",
            "Statistic",
            "Period",
            "EvaluationPeriods",
            "Threshold",
            "ComparisonOperator",
            "AlarmActions",
        )
    }
    cloudwatch.put_metric_alarm(
        AlarmName=name, Dimensions=[{"Name": "QueueName", "Value": backlog}], **copy
    )
    alarm = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    now = datetime.now(UTC)
    assert alarms.evaluate_queue_alarm(alarm, now).state == "OK"
    later = now + timedelta(seconds=defined["Threshold"] + 60)
    assert alarms.evaluate_queue_alarm(alarm, later).notified
    assert not alarms.evaluate_queue_alarm(alarm, later).notified
    notifications = [n for n in inbox.drain() if n["AlarmName"] == name]
    assert len(notifications) == 1 and backlog in notifications[0]["NewStateReason"]
    cloudwatch.delete_alarms(AlarmNames=[name])


def test_unroutable_upload_of_a_client_one_notice_one_alarm(
    client_id, db, inbox, wait_quiet
) -> None:
    reset_alarm(alarms.FILES_UNROUTABLE)
    put(f"{client_id}/acounts_20240102.csv", accounts_file(2))
    wait_quiet()
    (found,) = notices(db, client_id)
    assert found["message"].startswith("acounts_20240102.csv: not processed: ")
    assert found["published"]
    (alarm,) = inbox.of(alarms.FILES_UNROUTABLE)
    assert "acounts_20240102.csv" in alarm["NewStateReason"]
