"""Least privilege: every Allow statement in every generated policy names its actions and the
narrowest resources AWS accepts for them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from deploy_stacks import Packaged

# Packaging every stack (the session fixture) may take minutes on a busy machine.
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

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
    "sqs:ListQueues",  # the Data API's DLQ routes find the stage's queues by name prefix
}
POLICY_TYPES = {
    "AWS::IAM::Role": lambda p: [x["PolicyDocument"] for x in p.get("Policies", [])],
    "AWS::IAM::Policy": lambda p: [p["PolicyDocument"]],
    "AWS::IAM::ManagedPolicy": lambda p: [p["PolicyDocument"]],
    "AWS::SQS::QueuePolicy": lambda p: [p["PolicyDocument"]],
    "AWS::S3::BucketPolicy": lambda p: [p["PolicyDocument"]],
    "AWS::SNS::TopicPolicy": lambda p: [p["PolicyDocument"]],
    "AWS::KMS::Key": lambda p: [p["KeyPolicy"]],
}


def _statements(
    packaged: dict[str, Packaged],
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(where, statement, is a KMS key policy) for every statement of every policy."""
    for stack in packaged.values():
        for logical, resource in stack.resources.items():
            documents = POLICY_TYPES.get(resource["Type"])
            key_policy = resource["Type"] == "AWS::KMS::Key"
            for document in documents(resource["Properties"]) if documents else []:
                statements = document["Statement"]
                for i, statement in enumerate(
                    statements if isinstance(statements, list) else [statements]
                ):
                    yield f"{stack.name}/{logical}/Statement[{i}]", statement, key_policy


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_account_root(principal: Any) -> bool:
    arn = principal.get("AWS") if isinstance(principal, dict) else None
    parts = arn.get("Fn::Join", [None, []])[1] if isinstance(arn, dict) else []
    return parts[:1] == ["arn:aws:iam::"] and parts[-1:] == [":root"]


def violations(where: str, statement: dict[str, Any], key_policy: bool = False) -> list[str]:
    """What is too broad in one statement (Deny statements may be as broad as they like).

    In a KMS key policy, Resource "*" means the key itself, and `kms:*` for the account root is
    AWS's default statement that hands the key's administration to IAM policies.
    """
    if statement.get("Effect") != "Allow":
        return []
    if key_policy:
        statement = {**statement, "Resource": "arn:this-key"}
        if statement.get("Action") == "kms:*" and _is_account_root(statement.get("Principal")):
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
    found = [v for where, st, key in _statements(packaged) for v in violations(where, st, key)]
    assert not found, "\n".join(found)


def test_every_function_role_is_checked(packaged: dict[str, Packaged]) -> None:
    """The walk above sees the role of every function (inline statements, not only ARNs)."""
    walked = {where.split("/Statement")[0] for where, _, _ in _statements(packaged)}
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


ROOT = {"AWS": {"Fn::Join": ["", ["arn:aws:iam::", {"Ref": "AWS::AccountId"}, ":root"]]}}


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Principal": ROOT, "Action": "kms:*", "Resource": "*"}, 0),
        ({"Effect": "Allow", "Principal": {"Service": "x"}, "Action": "kms:*", "Resource": "*"}, 1),
        (
            {
                "Effect": "Allow",
                "Principal": {"Service": "x"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            },
            0,
        ),
    ],
)
def test_the_walker_on_key_policies(statement: dict[str, Any], expected: int) -> None:
    assert len(violations("t", statement, key_policy=True)) == expected


def _allowed(role: dict[str, Any]) -> list[tuple[set[str], list[Any]]]:
    return [
        (set(_as_list(s.get("Action", []))), _as_list(s.get("Resource", [])))
        for policy in role["Properties"].get("Policies", [])
        for s in _as_list(policy["PolicyDocument"]["Statement"])
        if s.get("Effect") == "Allow"
    ]


def _grants(role: dict[str, Any], action: str, resource: Any) -> bool:
    return any(action in actions and resource in resources for actions, resources in _allowed(role))


def _is_kinesis(packaged: dict[str, Packaged], stack: Packaged, source: Any) -> bool:
    """Whether an event source ARN (GetAtt, or ImportValue of another stack's output) is a
    Kinesis data stream (the snapshot change stream) rather than a DynamoDB stream."""
    if isinstance(source, dict) and "Fn::ImportValue" in source:
        name = source["Fn::ImportValue"]
        for other in packaged.values():
            for output in other.template.get("Outputs", {}).values():
                if output.get("Export", {}).get("Name") == name:
                    stack, source = other, output["Value"]
    logical = source.get("Fn::GetAtt", [None])[0] if isinstance(source, dict) else None
    return stack.resources.get(logical, {}).get("Type") == "AWS::Kinesis::Stream"


def test_function_roles_grant_what_their_event_sources_and_tracing_need(
    packaged: dict[str, Packaged],
) -> None:
    """Per-function roles are built by a plugin that copies only some of the framework's
    statements: check the rest (on-failure destination, X-Ray) was stated by hand."""
    missing = []
    for stack in packaged.values():
        functions = stack.of_type("AWS::Lambda::Function")
        role_of = {k: f["Properties"]["Role"]["Fn::GetAtt"][0] for k, f in functions.items()}
        for logical, mapping in stack.of_type("AWS::Lambda::EventSourceMapping").items():
            props = mapping["Properties"]
            role = stack.resources[role_of[props["FunctionName"]["Fn::GetAtt"][0]]]
            source = props["EventSourceArn"]
            if "StartingPosition" in props:
                reads = "kinesis" if _is_kinesis(packaged, stack, source) else "dynamodb"
                needs = [(f"{reads}:GetRecords", source)]
                destination = props.get("DestinationConfig", {}).get("OnFailure", {})
                if destination:
                    needs.append(("sqs:SendMessage", destination["Destination"]))
            else:
                needs = [("sqs:ReceiveMessage", source), ("sqs:DeleteMessage", source)]
            missing += [
                f"{stack.name}/{logical}: {a} on {r}" for a, r in needs if not _grants(role, a, r)
            ]
        for logical, function in functions.items():
            if function["Properties"].get("TracingConfig", {}).get("Mode") == "Active":
                role = stack.resources[role_of[logical]]
                if not _grants(role, "xray:PutTraceSegments", "*"):
                    missing.append(f"{stack.name}/{logical}: xray:PutTraceSegments")
    assert not missing, "\n".join(missing)
