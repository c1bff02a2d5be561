"""What the generated CloudFormation templates must say (issue 7), cfn-lint, package sizes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_stacks import (
    REPO,
    SIZES,
    STAGE,
    UNZIPPED_LIMIT,
    ZIPPED_LIMIT,
    Packaged,
    declares_functions,
    network_isolation,
    package_sizes,
    stack_directories,
    stack_name,
)

# Packaging every stack (the session fixture) may take minutes on a busy machine.
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

SERVICES = [stack_name(d) for d in stack_directories() if d != REPO]
# Services with functions (the console edge, S3 + CloudFront + WAF only, has none).
FUNCTION_SERVICES = [
    stack_name(d) for d in stack_directories() if d != REPO and declares_functions(d)
]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _function_of(mapping: dict[str, Any]) -> str:
    return mapping["Properties"]["FunctionName"]["Fn::GetAtt"][0]


def _export(packaged: dict[str, Packaged], name: str) -> tuple[Packaged, Any]:
    for stack in packaged.values():
        for output in stack.template.get("Outputs", {}).values():
            if output.get("Export", {}).get("Name") == name:
                return stack, output["Value"]
    raise AssertionError(f"no stack exports {name}")


def _queue(packaged: dict[str, Packaged], stack: Packaged, arn: Any) -> tuple[Packaged, str]:
    """The stack and logical id of the queue an ARN expression (GetAtt or ImportValue) names."""
    if "Fn::ImportValue" in arn:
        stack, arn = _export(packaged, arn["Fn::ImportValue"])
    logical, attribute = arn["Fn::GetAtt"]
    assert attribute == "Arn" and stack.resources[logical]["Type"] == "AWS::SQS::Queue", arn
    return stack, logical


def _queue_alarms(stack: Packaged, logical: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in stack.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "AWS/SQS"
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": [logical, "QueueName"]}}
        in a["Properties"].get("Dimensions", [])
        and a["Properties"].get("AlarmActions")
    ]


def _function_alarms(stack: Packaged, function: str, metric: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in stack.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == metric
        and {"Name": "FunctionName", "Value": {"Ref": function}}
        in a["Properties"].get("Dimensions", [])
        and a["Properties"].get("AlarmActions")
    ]


def test_every_stack_is_discovered_and_packaged(packaged: dict[str, Packaged]) -> None:
    assert set(packaged) == {stack_name(d) for d in stack_directories()}
    assert "root" in packaged and "persistence" in packaged


def test_packaging_ran_without_network(packaged: dict[str, Packaged]) -> None:
    if not shutil.which("unshare") or not network_isolation():
        pytest.skip("unshare --net is not permitted here (not root): offline not enforced")
    assert all(p.without_network for p in packaged.values() if p.log != "(reused)")


def test_root_stack_shared_infrastructure(packaged: dict[str, Packaged]) -> None:
    root = packaged["root"]
    bucket = root.resources["LandingBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    events = {q["Event"] for q in bucket["NotificationConfiguration"]["QueueConfigurations"]}
    assert events == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
    policy = root.resources["LandingBucketPolicy"]
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }

    table = root.resources["MetastoreTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}

    assert root.resources["ResultQueue"]["Properties"]["FifoQueue"] is True
    assert root.resources["PersistenceQueue"]["Properties"]["RedrivePolicy"]
    assert _queue_alarms(root, "PersistenceDeadLetterQueue")
    topic = root.resources["AlarmTopic"]["Properties"]
    key = root.resources[topic["KmsMasterKeyId"]["Ref"]]["Properties"]
    assert any(  # CloudWatch alarms can publish to the encrypted topic
        s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
        and {"kms:Decrypt", "kms:GenerateDataKey"} <= set(s["Action"])
        for s in key["KeyPolicy"]["Statement"]
    )

    proxy = root.resources["DatabaseProxy"]["Properties"]
    assert proxy["RequireTLS"] is True and proxy["EngineFamily"] == "POSTGRESQL"
    assert proxy["Auth"][0]["SecretArn"] == {"Ref": "DatabaseSecret"}
    assert root.of_type("AWS::RDS::DBProxyTargetGroup")

    exported = {o["Export"]["Name"] for o in root.template["Outputs"].values() if "Export" in o}
    for name in (
        "LandingBucketArn",
        "PersistenceQueueArn",
        "MetastoreTableArn",
        "MetastoreStreamArn",
        "ResultQueueArn",
        "AlarmTopicArn",
        "DatabaseSecretArn",
        "DatabaseProxyEndpoint",
        "LambdaSecurityGroupId",
        "PrivateSubnetIds",
    ):
        assert f"dataharvest-{STAGE}-{name}" in exported


def test_only_the_stacks_without_functions_package_none(packaged: dict[str, Packaged]) -> None:
    without = {name for name in SERVICES if name not in FUNCTION_SERVICES}
    assert without == {"console_edge"}
    for name in without:
        assert not packaged[name].of_type("AWS::Lambda::Function"), name


@pytest.mark.parametrize("service", FUNCTION_SERVICES)
def test_service_functions(packaged: dict[str, Packaged], service: str) -> None:
    stack = packaged[service]
    functions = stack.of_type("AWS::Lambda::Function")
    assert functions, f"{service} packages no function"
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions.values()]
    assert len(set(roles)) == len(roles), "functions share an IAM role"
    retention = {
        g["Properties"]["LogGroupName"]: g["Properties"].get("RetentionInDays")
        for g in stack.of_type("AWS::Logs::LogGroup").values()
    }
    for logical, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12", logical
        assert stack.resources[roles[list(functions).index(logical)]]["Type"] == "AWS::IAM::Role"
        if "DATABASE_SECRET_ARN" in props.get("Environment", {}).get("Variables", {}):
            vpc = props.get("VpcConfig", {})
            assert vpc.get("SecurityGroupIds") and vpc.get("SubnetIds"), f"{logical}: no VPC"
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert retention.get(f"/aws/lambda/{props['FunctionName']}"), f"{logical}: no retention"
        assert _function_alarms(stack, logical, "Errors"), f"{logical}: no error alarm"


@pytest.mark.parametrize("service", SERVICES)
def test_service_event_sources(packaged: dict[str, Packaged], service: str) -> None:
    stack = packaged[service]
    functions = stack.of_type("AWS::Lambda::Function")
    for logical, mapping in stack.of_type("AWS::Lambda::EventSourceMapping").items():
        props = mapping["Properties"]
        function = _function_of(mapping)
        assert props.get("BatchSize"), logical
        assert "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []), logical
        source = props["EventSourceArn"]
        if "StartingPosition" in props:  # a stream
            assert props["BisectBatchOnFunctionError"] is True, logical
            assert 0 <= props["MaximumRetryAttempts"] < 10000, logical
            assert 0 < props["MaximumRecordAgeInSeconds"] <= 604800, logical
            destination = props["DestinationConfig"]["OnFailure"]["Destination"]
            where, queue = _queue(packaged, stack, destination)
            assert _queue_alarms(where, queue), f"{logical}: on-failure queue has no alarm"
            assert _function_alarms(stack, function, "IteratorAge"), f"{function}: iterator age"
        else:  # an SQS queue: a DLQ with redrive and an alarm on its depth
            where, queue = _queue(packaged, stack, source)
            redrive = where.resources[queue]["Properties"].get("RedrivePolicy")
            assert redrive and redrive["maxReceiveCount"] >= 1, f"{queue}: no redrive policy"
            dlq = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert _queue_alarms(where, dlq), f"{dlq}: no depth alarm"
            reserved = functions[function]["Properties"].get("ReservedConcurrentExecutions")
            maximum = props.get("ScalingConfig", {}).get("MaximumConcurrency")
            assert reserved or maximum, f"{function}: unbounded concurrency on PostgreSQL"


@pytest.mark.parametrize("service", SERVICES)
def test_scheduled_functions_record_failed_runs(
    packaged: dict[str, Packaged], service: str
) -> None:
    """A scheduled function is invoked asynchronously: a run that failed its retries must land
    in an on-failure queue with a depth alarm, which the function's own role may write to."""
    stack = packaged[service]
    functions = stack.of_type("AWS::Lambda::Function")
    configs = {
        c["Properties"]["FunctionName"]["Ref"]: c["Properties"]
        for c in stack.of_type("AWS::Lambda::EventInvokeConfig").values()
    }
    for logical, rule in stack.of_type("AWS::Events::Rule").items():
        for target in rule["Properties"]["Targets"]:
            function = target["Arn"]["Fn::GetAtt"][0]
            config = configs.get(function)
            assert config, f"{function}: no asynchronous invocation config"
            assert 0 <= config["MaximumRetryAttempts"] <= 2, function
            destination = config["DestinationConfig"]["OnFailure"]["Destination"]
            where, queue = _queue(packaged, stack, destination)
            assert _queue_alarms(where, queue), f"{function}: on-failure queue has no alarm"
            role = stack.resources[functions[function]["Properties"]["Role"]["Fn::GetAtt"][0]]
            statements = [
                s
                for policy in role["Properties"].get("Policies", [])
                for s in policy["PolicyDocument"]["Statement"]
            ]
            assert any(
                "sqs:SendMessage" in _as_list(s["Action"])
                and destination in _as_list(s["Resource"])
                for s in statements
            ), f"{function}: its role cannot write to its on-failure queue ({logical})"


def test_cfn_lint_finds_no_errors(packaged: dict[str, Packaged]) -> None:
    """Each template linted for the region it deploys to (the console edge: us-east-1)."""
    by_region: dict[str, list[str]] = {}
    for p in packaged.values():
        template = p.directory / ".serverless" / "cloudformation-template-update-stack.json"
        by_region.setdefault(p.region, []).append(str(template))
    assert set(by_region) == {"eu-west-1", "us-east-1"}
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    errors = []
    for region, templates in sorted(by_region.items()):
        result = subprocess.run(
            [str(cfn_lint), "--format", "json", "--regions", region, "--", *templates],
            capture_output=True,
            text=True,
        )
        findings = json.loads(result.stdout or "[]")
        errors += [
            f"{f['Filename']}:{f['Location']['Start']['LineNumber']} {f['Rule']['Id']} "
            f"{f['Message']}"
            for f in findings
            if f["Level"] == "Error"
        ]
        assert result.returncode in (0, 2, 4, 6, 8, 10, 12, 14), result.stderr
    assert not errors, "\n".join(errors)


def test_package_sizes_within_lambda_limits(packaged: dict[str, Packaged]) -> None:
    rows = package_sizes(packaged)
    SIZES[:] = rows
    assert {stack for stack, *_ in rows} == set(FUNCTION_SERVICES)
    for stack, function, zipped, unzipped in rows:
        code = packaged[stack].resources[function]["Properties"]["Code"]
        # Lambda's 50 MB zip limit is for packages uploaded through its API; osls uploads every
        # artifact to the deployment bucket and the function takes it from S3, where the limit
        # is 250 MB unzipped (docs/DECISIONS.md, "Lake tier").
        if "S3Bucket" not in code:
            assert zipped < ZIPPED_LIMIT, f"{stack}/{function}: {zipped} bytes zipped"
        assert unzipped < UNZIPPED_LIMIT, f"{stack}/{function}: {unzipped} bytes unzipped"
