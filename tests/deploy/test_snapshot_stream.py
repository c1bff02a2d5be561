"""The snapshot change stream (issue 15) as packaged: on-demand and encrypted in the root
stack, exported; persistence may put records on it and nothing else; the applier reads it with
bisect, partial batch responses, an on-failure queue with a depth alarm and an iterator-age
alarm (the generic checks in test_templates.py / test_iam.py cover those for every stream)."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_stacks import STAGE, Packaged

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

STREAM_ARN = {"Fn::ImportValue": f"dataharvest-{STAGE}-SnapshotStreamArn"}


def _statements(stack: Packaged, function: str) -> list[dict[str, Any]]:
    role = stack.resources[stack.resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]]
    return [
        s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_the_stream_is_on_demand_encrypted_and_exported(packaged: dict[str, Packaged]) -> None:
    root = packaged["root"]
    (stream,) = root.of_type("AWS::Kinesis::Stream").values()
    props = stream["Properties"]
    assert props["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert "ShardCount" not in props
    assert props["StreamEncryption"]["EncryptionType"] == "KMS"
    exported = {o["Export"]["Name"] for o in root.template["Outputs"].values() if "Export" in o}
    assert {
        f"dataharvest-{STAGE}-SnapshotStreamName",
        f"dataharvest-{STAGE}-SnapshotStreamArn",
    } <= exported


def test_persistence_only_puts_records_on_the_stream(packaged: dict[str, Packaged]) -> None:
    stack = packaged["persistence"]
    kinesis = [
        s
        for function in stack.of_type("AWS::Lambda::Function")
        for s in _statements(stack, function)
        if any(a.startswith("kinesis:") for a in _actions(s))
    ]
    assert kinesis == [
        {"Effect": "Allow", "Action": ["kinesis:PutRecords"], "Resource": STREAM_ARN}
    ]


def test_the_applier_consumes_the_stream(packaged: dict[str, Packaged]) -> None:
    stack = packaged["snapshot_applier"]
    (mapping,) = stack.of_type("AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == STREAM_ARN
    assert props["BisectBatchOnFunctionError"] is True
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["DestinationConfig"]["OnFailure"]["Destination"]
    alarms = {
        a["Properties"]["MetricName"] for a in stack.of_type("AWS::CloudWatch::Alarm").values()
    }
    assert {"IteratorAge", "Errors", "ApproximateNumberOfMessagesVisible"} <= alarms
