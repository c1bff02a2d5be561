"""The alarms of a stage, and how the local stack raises them.

In the cloud every alarm is a CloudWatch alarm (services/operations/serverless.yml) on a metric
this code emits (dataharvest.ops.metrics) or on an SQS metric, with the stage's alarm topic as
its action; CloudWatch evaluates them and nothing here runs.

Locally moto stores the same alarms (the local stack provisions AWS::CloudWatch::Alarm) but
evaluates nothing, so the local stack evaluates them itself (docs/DECISIONS.md, "Local alarms"):

- metric alarms: the code path that emits the metric calls `breach(key, reason)`; locally this
  does what CloudWatch would do when the metric crosses the threshold: if the alarm is not in
  ALARM (or its ALARM state is older than its evaluation window, i.e. it would have gone back to
  OK in between) it is set to ALARM and the CloudWatch-shaped notification is published to the
  alarm's actions (the alarm topic). One notification per transition, as in the cloud.
- queue-age alarms: `evaluate_queue_ages(now)` computes each watched queue's oldest message age
  and moves the alarm to ALARM (notifying) or back to OK. `dataharvest alarms evaluate` and every
  `dataharvest late check` run it.

Transitions are serialized by a PostgreSQL advisory lock per alarm, so two workers breaching at
once send one notification.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3

from dataharvest import db
from dataharvest.config import environment, resource_name
from dataharvest.observability import logger

# Alarm keys -> name suffix (the alarm's name is dataharvest-<stage>-<suffix>).
FILES_REJECTED = "files-rejected"
REJECTION_RATIO = "rejection-ratio"
INPUTS_LATE = "inputs-late"
FILES_UNROUTABLE = "files-unroutable"
RESULT_QUEUE_AGE = "result-queue-age"
PERSISTENCE_QUEUE_AGE = "persistence-queue-age"
METRIC_ALARMS = (FILES_REJECTED, REJECTION_RATIO, INPUTS_LATE, FILES_UNROUTABLE)
QUEUE_AGE_ALARMS = (RESULT_QUEUE_AGE, PERSISTENCE_QUEUE_AGE)
LOCAL_FLAG = "DATAHARVEST_LOCAL_ALARMS"


def alarm_name(key: str, stage: str | None = None) -> str:
    return resource_name(stage or environment().stage, f"alarm-{key}")


def local() -> bool:
    """Whether this process evaluates alarms itself: a local stack's worker (the runner sets
    AWS_SAM_LOCAL, as `sam local` does) or a CLI run against the local stack."""
    return os.environ.get("AWS_SAM_LOCAL") == "true" or os.environ.get(LOCAL_FLAG) == "1"


@dataclass(frozen=True)
class Transition:
    alarm: str
    state: str
    notified: bool


def breach(alarm_key: str, reason: str, /, **log_keys: Any) -> Transition | None:
    """The condition of metric alarm `key` holds now. In the cloud CloudWatch sees the metric
    and nothing happens here; locally the alarm is raised as CloudWatch would."""
    logger.warning("alarm condition", extra={**log_keys, "alarm": alarm_key, "reason": reason})
    if not local():
        return None
    return set_state(alarm_name(alarm_key), "ALARM", reason, datetime.now(UTC), windowed=True)


def set_state(
    name: str, state: str, reason: str, now: datetime, *, windowed: bool = False
) -> Transition:
    """Move alarm `name` to `state` the way CloudWatch does: a notification to its actions on a
    transition into ALARM (and to its OK actions on one into OK), none while it stays.

    `windowed`: an alarm on a count of events (missing data is not breaching) goes back to OK
    by itself once an evaluation window passes without one; a breach after that is a new
    transition. Other alarms leave ALARM only when evaluated OK."""
    cloudwatch = boto3.client("cloudwatch")
    with db.connect() as conn, conn.transaction():
        db.advisory_xact_lock(conn, f"alarm/{name}")
        found = cloudwatch.describe_alarms(AlarmNames=[name]).get("MetricAlarms", [])
        if not found:
            raise LookupError(f"no alarm named {name} (is the operations service deployed?)")
        alarm = found[0]
        current = alarm.get("StateValue", "INSUFFICIENT_DATA")
        since = alarm.get("StateUpdatedTimestamp")
        window = timedelta(seconds=_window_seconds(alarm))
        still = (
            current == state
            and since is not None
            and (not windowed or now - _aware(since) < window)
        )
        if still:
            return Transition(name, state, False)
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason[:1023])
        if state == "ALARM":
            actions = alarm.get("AlarmActions", [])
        elif current == "ALARM":
            actions = alarm.get("OKActions", [])
        else:
            actions = []  # INSUFFICIENT_DATA -> OK is not news
        body = json.dumps(
            {
                "AlarmName": name,
                "AlarmDescription": alarm.get("AlarmDescription"),
                "NewStateValue": state,
                "NewStateReason": reason,
                "OldStateValue": current,
                "StateChangeTime": now.isoformat(),
                "Region": os.environ.get("AWS_REGION", ""),
                "Trigger": {
                    "MetricName": alarm.get("MetricName"),
                    "Namespace": alarm.get("Namespace"),
                    "Threshold": alarm.get("Threshold"),
                },
            }
        )
        sns = boto3.client("sns")
        for topic in actions:
            sns.publish(TopicArn=topic, Subject=f'{state}: "{name}"'[:100], Message=body)
    logger.warning("alarm state", extra={"alarm": name, "state": state, "reason": reason})
    return Transition(name, state, bool(actions))


def evaluate_queue_ages(now: datetime | None = None) -> list[Transition]:
    """Locally: each queue-age alarm of the stage against its queue's oldest message."""
    now = now or datetime.now(UTC)
    cloudwatch = boto3.client("cloudwatch")
    names = [alarm_name(key) for key in QUEUE_AGE_ALARMS]
    alarms = cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", [])
    return [evaluate_queue_alarm(alarm, now) for alarm in alarms]


def evaluate_queue_alarm(alarm: dict[str, Any], now: datetime) -> Transition:
    """One alarm on AWS/SQS ApproximateAgeOfOldestMessage (threshold in seconds)."""
    queue = next(d["Value"] for d in alarm.get("Dimensions", []) if d["Name"] == "QueueName")
    age = oldest_message_age(queue, now)
    # Seconds, compared exactly as CloudWatch states them (never through a float).
    threshold = Decimal(str(alarm["Threshold"]))
    if age is not None and age > threshold:
        reason = f"the oldest message of {queue} is {age:.0f} s old, more than {threshold:.0f} s"
        return set_state(alarm["AlarmName"], "ALARM", reason, now)
    reason = f"the oldest message of {queue} is {0 if age is None else age:.0f} s old"
    return set_state(alarm["AlarmName"], "OK", reason, now)


def oldest_message_age(queue_name: str, now: datetime) -> float | None:
    """Seconds since the oldest visible message of the queue was sent (None: empty).

    The local endpoint has no SQS metrics: the visible messages are received with a visibility
    timeout of 0 (they stay visible; it counts as a receive) and their SentTimestamp read."""
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    response = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["SentTimestamp"],
    )
    sent = [int(m["Attributes"]["SentTimestamp"]) for m in response.get("Messages", [])]
    if not sent:
        return None
    return now.timestamp() - min(sent) / 1000


def _window_seconds(alarm: dict[str, Any]) -> int:
    period = alarm.get("Period")
    if period is None:
        periods = [m["MetricStat"]["Period"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
        period = max(periods) if periods else 300
    return int(period) * int(alarm.get("EvaluationPeriods", 1))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
