"""Helpers of the operations tests (issue 17): an SQS queue subscribed to the alarm topic, the
notifications it received, alarms reset to OK, a client's partner notices."""

from __future__ import annotations

import json
import uuid
from datetime import date, time, timedelta
from typing import Any

import boto3
import psycopg

from dataharvest.ops import alarms


class AlarmInbox:
    """An SQS queue subscribed to the stage's alarm topic, as an operator's pager would be."""

    def __init__(self, topic_arn: str):
        self.sqs = boto3.client("sqs")
        name = f"alarm-inbox-{uuid.uuid4().hex[:8]}"
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.subscription = boto3.client("sns").subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=arn
        )["SubscriptionArn"]
        self.received: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        """The notifications received since the last call (CloudWatch-shaped JSON each)."""
        new: list[dict[str, Any]] = []
        while True:
            response = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = response.get("Messages", [])
            if not messages:
                self.received.extend(new)
                return new
            for message in messages:
                envelope = json.loads(message["Body"])
                new.append(json.loads(envelope["Message"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def of(self, key: str, state: str = "ALARM") -> list[dict[str, Any]]:
        name = alarms.alarm_name(key)
        return [n for n in self.drain() if n["AlarmName"] == name and n["NewStateValue"] == state]

    def close(self) -> None:
        boto3.client("sns").unsubscribe(SubscriptionArn=self.subscription)
        self.sqs.delete_queue(QueueUrl=self.url)


def reset_alarm(key: str) -> None:
    """The alarm back to OK, as `aws cloudwatch set-alarm-state` does in a drill."""
    boto3.client("cloudwatch").set_alarm_state(
        AlarmName=alarms.alarm_name(key), StateValue="OK", StateReason="test reset"
    )


def notices(db: psycopg.Connection, client_id: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT cause, business_date, body, published_at IS NOT NULL "
        "FROM audit.partner_notices WHERE client_id = %s ORDER BY notice_id",
        (client_id,),
    ).fetchall()
    return [
        {"cause": c, "business_date": d, "message": b["message"], "published": p}
        for c, d, b, p in rows
    ]


def next_weekday(start: date) -> date:
    """`start`, or the Monday after it when it falls on a weekend."""
    day = start
    while day.isoweekday() > 5:
        day += timedelta(days=1)
    return day


def expect_accounts_by_six(db: psycopg.Connection, client_id: str, day: date) -> Any:
    """The client expects its accounts file by 06:00 Berlin time on weekdays from `day` on;
    returns the stored expectation (dataharvest.ops.late.Expectation)."""
    from dataharvest.ops import late

    expectation = late.Expectation(
        client_id=client_id,
        entities=("accounts",),
        due_by=time(6, 0),
        timezone="Europe/Berlin",
        weekdays=(1, 2, 3, 4, 5),
        lag_days=0,
        effective_from=day,
    )
    with db.transaction():
        late.set_expectation(db, expectation)
    return expectation
