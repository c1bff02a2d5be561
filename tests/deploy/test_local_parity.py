"""The local stack provisions what the templates declare: for every queue, table, topic and
bucket in the packaged templates (stage `local`), the resource on the local endpoint has the
same name, stream view type and queue attributes (visibility, retention, FIFO, redrive); every
alarm a serverless.yml declares exists locally with the same actions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_stacks import Packaged

from dataharvest_local import slsconfig
from dataharvest_local.provision import ORDER, Provisioner, Stack

pytestmark = [pytest.mark.deploy, pytest.mark.integration, pytest.mark.timeout(1800)]

QUEUE_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)


def _local(provisioner: Provisioner, packaged: Packaged) -> Stack:
    # The packaged copy holds the same serverless.yml, so the same service name.
    return provisioner.stacks[slsconfig.load(packaged.directory / "serverless.yml").service]


def _check_queue(provisioner: Provisioner, local: Stack, logical: str, props: dict) -> list[str]:
    sqs = provisioner.client("sqs")
    url = local.resources[logical].attributes["QueueUrl"]
    actual = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    problems = []
    if not url.endswith("/" + props["QueueName"]):
        problems.append(f"{logical}: local queue {url}, template {props['QueueName']}")
    for key in QUEUE_ATTRIBUTES:
        if key in props:
            want = str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
            if actual.get(key) != want:
                problems.append(f"{logical}.{key}: local {actual.get(key)!r}, template {want!r}")
    if "RedrivePolicy" in props:
        want = provisioner.resolve(props["RedrivePolicy"], local)
        got = json.loads(actual.get("RedrivePolicy", "{}"))
        if (got.get("deadLetterTargetArn"), int(got.get("maxReceiveCount", 0))) != (
            want["deadLetterTargetArn"],
            int(want["maxReceiveCount"]),
        ):
            problems.append(f"{logical}.RedrivePolicy: local {got}, template {want}")
    return problems


def _check(provisioner: Provisioner, local: Stack, logical: str, resource: dict) -> list[str]:
    if logical not in local.resources:
        return [f"{logical}: in the template, not provisioned locally"]
    props: dict[str, Any] = provisioner.resolve(resource.get("Properties", {}), local)
    kind = resource["Type"]
    if kind == "AWS::SQS::Queue":
        return _check_queue(provisioner, local, logical, props)
    if kind == "AWS::DynamoDB::Table":
        table = provisioner.client("dynamodb").describe_table(TableName=props["TableName"])
        table = table["Table"]
        want_view = props.get("StreamSpecification", {}).get("StreamViewType")
        got_view = table.get("StreamSpecification", {}).get("StreamViewType")
        problems = [] if want_view == got_view else [f"{logical}: stream {got_view}/{want_view}"]
        if table["KeySchema"] != props["KeySchema"]:
            problems.append(f"{logical}: key schema {table['KeySchema']}/{props['KeySchema']}")
        return problems
    if kind == "AWS::Kinesis::Stream":  # the snapshot change stream (issue 15)
        summary = provisioner.client("kinesis").describe_stream_summary(StreamName=props["Name"])
        summary = summary["StreamDescriptionSummary"]
        want_mode = props.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
        got_mode = summary.get("StreamModeDetails", {}).get("StreamMode")
        problems = [] if want_mode == got_mode else [f"{logical}: mode {got_mode}/{want_mode}"]
        if props.get("StreamEncryption") and summary.get("EncryptionType") != "KMS":
            problems.append(f"{logical}: not encrypted locally")
        return problems
    if kind == "AWS::SNS::Topic":
        arn = local.resources[logical].attributes["TopicArn"]
        return [] if arn.endswith(":" + props["TopicName"]) else [f"{logical}: topic {arn}"]
    if kind == "AWS::S3::Bucket":
        s3 = provisioner.client("s3")
        name = props["BucketName"]
        problems = [] if local.resources[logical].ref == name else [f"{logical}: bucket {name}"]
        versioning = s3.get_bucket_versioning(Bucket=name).get("Status")
        if props.get("VersioningConfiguration", {}).get("Status") != versioning:
            problems.append(f"{logical}: versioning {versioning}")
        config = s3.get_bucket_notification_configuration(Bucket=name)
        got = sorted(
            (q["QueueArn"], e) for q in config.get("QueueConfigurations", []) for e in q["Events"]
        )
        want = sorted(
            (q["Queue"], q["Event"])
            for q in props.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        )
        if got != want:
            problems.append(f"{logical}: notifications {got} / template {want}")
        return problems
    if kind == "AWS::CloudWatch::Alarm":
        # Raised locally by dataharvest.ops.alarms: same name, same actions (the alarm topic).
        found = provisioner.client("cloudwatch").describe_alarms(AlarmNames=[props["AlarmName"]])
        alarms = found.get("MetricAlarms", [])
        if not alarms:
            return [f"{logical}: no local alarm {props['AlarmName']}"]
        if alarms[0].get("AlarmActions") != props.get("AlarmActions"):
            return [f"{logical}: actions {alarms[0].get('AlarmActions')}/{props['AlarmActions']}"]
    return []


def test_local_stack_provisions_what_the_templates_declare(
    packaged: dict[str, Packaged], local_stack: Any
) -> None:
    provisioner = local_stack.provisioner
    problems: list[str] = []
    compared = 0
    for stack in packaged.values():
        local = _local(provisioner, stack)
        for logical, resource in stack.resources.items():
            if resource["Type"] == "AWS::CloudWatch::Alarm" and logical not in local.file.resources:
                # The alerts plugin's per-function alarms (Lambda errors, throttles, queue
                # depths): their metrics exist only in the cloud; not provisioned locally.
                continue
            if resource["Type"] in ORDER and logical != "ServerlessDeploymentBucket":
                problems += [
                    f"{stack.name}/{p}" for p in _check(provisioner, local, logical, resource)
                ]
                compared += 1
    assert not problems, "\n".join(problems)
    assert compared >= 6  # root: topic, 3 queues, table, bucket; plus the services' queues
