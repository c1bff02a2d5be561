"""Stateful resources are protected (issue 18): deletion protection and Retain, lifecycle of
replaced versions, customer managed keys for the data buckets, access logs, RedriveAllowPolicy
on every dead-letter queue, the master secret on a rotation schedule, IAM auth to the proxy."""

from __future__ import annotations

import pytest
from deploy_stacks import Packaged
from iam_sim import Resolver

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]


def retained(resource: dict) -> bool:
    return resource.get("DeletionPolicy") == "Retain" and (
        resource.get("UpdateReplacePolicy") == "Retain"
    )


def test_metastore_secret_and_keys_are_retained_and_protected(packaged):
    root = packaged["root"]
    table = root.resources["MetastoreTable"]
    assert retained(table) and table["Properties"]["DeletionProtectionEnabled"] is True
    assert retained(root.resources["DatabaseSecret"])
    for name in ("LandingBucketKey", "PersonalDataKey"):
        key = root.resources[name]
        assert retained(key) and key["Properties"]["EnableKeyRotation"] is True, name
    assert retained(packaged["lake_exporter"].resources["LakeBucketKey"])


@pytest.mark.parametrize(
    ("stack", "bucket"), [("root", "LandingBucket"), ("lake_exporter", "LakeBucket")]
)
def test_data_buckets_use_their_own_key_expire_replaced_versions_and_log_access(
    packaged, stack, bucket
):
    template = packaged[stack]
    resource = template.resources[bucket]
    props = resource["Properties"]
    assert retained(resource)
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    default = rule["ServerSideEncryptionByDefault"]
    assert default["SSEAlgorithm"] == "aws:kms"
    key = default["KMSMasterKeyID"]["Fn::GetAtt"][0]
    assert template.resources[key]["Type"] == "AWS::KMS::Key"  # customer managed, this stack
    expiring = [
        r["NoncurrentVersionExpiration"]["NoncurrentDays"]
        for r in props["LifecycleConfiguration"]["Rules"]
        if "NoncurrentVersionExpiration" in r and r["Status"] == "Enabled"
    ]
    assert expiring and all(int(days) > 0 for days in expiring)
    assert props["LoggingConfiguration"]["DestinationBucketName"]
    assert props["LoggingConfiguration"]["LogFilePrefix"]


def test_access_log_bucket_is_retained_private_and_only_s3_logging_writes(packaged):
    root = packaged["root"]
    logs = root.resources["AccessLogBucket"]
    assert retained(logs) and all(logs["Properties"]["PublicAccessBlockConfiguration"].values())
    (allow, deny) = root.resources["AccessLogBucketPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allow["Condition"]["StringEquals"]["aws:SourceAccount"]
    assert deny["Effect"] == "Deny"


def test_every_dead_letter_queue_admits_only_its_source(packaged: dict[str, Packaged]):
    resolver = Resolver(packaged)
    checked = 0
    for stack in packaged.values():
        queues = stack.of_type("AWS::SQS::Queue")
        for logical, queue in queues.items():
            policy = queue["Properties"].get("RedrivePolicy")
            if not policy:
                continue
            dlq = policy["deadLetterTargetArn"]["Fn::GetAtt"][0]
            allow = queues[dlq]["Properties"].get("RedriveAllowPolicy")
            assert allow, f"{stack.name}/{dlq} has no RedriveAllowPolicy"
            assert allow["redrivePermission"] == "byQueue"
            sources = resolver.resolve(allow["sourceQueueArns"], stack)
            assert sources == [resolver.resolve({"Fn::GetAtt": [logical, "Arn"]}, stack)]
            checked += 1
        for queue in queues.values():  # on-failure destinations: no one redrives here
            name = str(queue["Properties"]["QueueName"])
            if name.endswith("-failures"):
                assert queue["Properties"]["RedriveAllowPolicy"] == {"redrivePermission": "denyAll"}
    assert checked >= 8  # persistence, chunks and every transformer's work queue


def test_master_secret_rotates_and_the_proxy_takes_iam_tokens_only(packaged):
    root = packaged["root"]
    assert "AWS::SecretsManager-2020-07-23" in str(root.template.get("Transform"))
    (rotation,) = root.of_type("AWS::SecretsManager::RotationSchedule").values()
    props = rotation["Properties"]
    assert props["SecretId"] == {"Ref": "DatabaseSecret"}
    assert props["HostedRotationLambda"]["RotationType"] == "PostgreSQLSingleUser"
    assert props["RotationRules"]["ScheduleExpression"].startswith("rate(")
    proxy = root.resources["DatabaseProxy"]["Properties"]
    assert proxy["DefaultAuthScheme"] == "IAM_AUTH"
    assert all(auth["IAMAuth"] == "REQUIRED" for auth in proxy["Auth"])
