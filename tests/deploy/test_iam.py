"""Least privilege: every Allow statement in every generated policy names its actions and the
narrowest resources AWS accepts for them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from deploy_stacks import Packaged

pytestmark = pytest.mark.deploy

# Actions AWS authorizes only on Resource "*" (the service authorization reference lists no
# resource type for them). Anything else on "*" fails the test.
RESOURCE_STAR_ONLY = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "cloudwatch:PutMetricData",  # powertools Metrics uses EMF (logs), listed for completeness
}
POLICY_TYPES = {
    "AWS::IAM::Role": lambda p: [x["PolicyDocument"] for x in p.get("Policies", [])],
    "AWS::IAM::Policy": lambda p: [p["PolicyDocument"]],
    "AWS::IAM::ManagedPolicy": lambda p: [p["PolicyDocument"]],
    "AWS::SQS::QueuePolicy": lambda p: [p["PolicyDocument"]],
    "AWS::S3::BucketPolicy": lambda p: [p["PolicyDocument"]],
    "AWS::SNS::TopicPolicy": lambda p: [p["PolicyDocument"]],
}


def _statements(packaged: dict[str, Packaged]) -> Iterator[tuple[str, dict[str, Any]]]:
    for stack in packaged.values():
        for logical, resource in stack.resources.items():
            documents = POLICY_TYPES.get(resource["Type"])
            for document in documents(resource["Properties"]) if documents else []:
                statements = document["Statement"]
                for i, statement in enumerate(
                    statements if isinstance(statements, list) else [statements]
                ):
                    yield f"{stack.name}/{logical}/Statement[{i}]", statement


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def violations(where: str, statement: dict[str, Any]) -> list[str]:
    """What is too broad in one statement (Deny statements may be as broad as they like)."""
    if statement.get("Effect") != "Allow":
        return []
    found = []
    if "NotAction" in statement or "NotResource" in statement:
        found.append(f"{where}: Allow with NotAction/NotResource")
    actions = [a for a in _as_list(statement.get("Action", [])) if isinstance(a, str)]
    found += [f"{where}: wildcard action {a!r}" for a in actions if "*" in a]
    if statement.get("Principal") in ("*", {"AWS": "*"}):
        found.append(f"{where}: Allow to any principal")
    resources = _as_list(statement.get("Resource", []))
    if "*" in resources:
        broad = sorted(set(actions) - RESOURCE_STAR_ONLY)
        if broad:
            found.append(f"{where}: Resource '*' for {broad}, which accept narrower resources")
    return found


def test_no_wildcard_actions_or_resources(packaged: dict[str, Packaged]) -> None:
    found = [v for where, statement in _statements(packaged) for v in violations(where, statement)]
    assert not found, "\n".join(found)


def test_every_function_role_is_checked(packaged: dict[str, Packaged]) -> None:
    """The walk above sees the role of every function (inline statements, not only ARNs)."""
    walked = {where.split("/Statement")[0] for where, _ in _statements(packaged)}
    for stack in packaged.values():
        for logical, function in stack.of_type("AWS::Lambda::Function").items():
            role = function["Properties"]["Role"]["Fn::GetAtt"][0]
            assert f"{stack.name}/{role}" in walked, f"{stack.name}/{logical}: role not walked"


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}, 1),
        ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}, 1),
        ({"Effect": "Allow", "Action": "xray:PutTraceSegments", "Resource": "*"}, 0),
        ({"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": ["arn:x"]}, 0),
        ({"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Principal": "*"}, 0),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:x"}, 1),
    ],
)
def test_the_walker_itself(statement: dict[str, Any], expected: int) -> None:
    assert len(violations("t", statement)) == expected
