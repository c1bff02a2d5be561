"""Create the resources a serverless.yml declares on the local AWS endpoint, and resolve the
CloudFormation intrinsics that refer to them.

One source of truth: the queues, bucket, table and topic the local stack uses are the ones the
templates declare, with their names and attributes. Types that only matter in the cloud (IAM,
alarms, log groups, RDS proxy, VPC, policies) are skipped; `CLOUD_ONLY` lists them.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import boto3

from dataharvest_local.slsconfig import LOCAL_ACCOUNT_ID, ServerlessFile

CLOUD_ONLY = {
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::CloudWatch::Dashboard",
    "AWS::Logs::LogGroup",
    "AWS::SecretsManager::Secret",
    "AWS::SecretsManager::SecretTargetAttachment",
    "AWS::RDS::DBProxy",
    "AWS::RDS::DBProxyTargetGroup",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::EC2::SecurityGroupIngress",
    "AWS::KMS::Key",
    "AWS::KMS::Alias",
    "AWS::SecretsManager::RotationSchedule",
    "AWS::Lambda::EventSourceMapping",
    # The lake's catalog is pyiceberg's SQL catalog locally; Athena has no local counterpart
    # (`dataharvest query` reads the same tables in-process).
    "AWS::Glue::Database",
    "AWS::Athena::WorkGroup",
    # The Data API's edge: sign-in, the console's CDN and its firewall. Locally the API is
    # served by dataharvest_local.api_server and tokens are signed with a local key.
    "AWS::Cognito::UserPool",
    "AWS::Cognito::UserPoolClient",
    "AWS::Cognito::UserPoolGroup",
    "AWS::Cognito::UserPoolDomain",
    "AWS::CloudFront::Distribution",
    "AWS::CloudFront::OriginAccessControl",
    "AWS::WAFv2::WebACL",
}
# Creation order: what others point at comes first (DLQs before queues, queues before bucket).
ORDER = [
    "AWS::SNS::Topic",
    "AWS::SQS::Queue",
    "AWS::DynamoDB::Table",
    "AWS::Kinesis::Stream",
    "AWS::S3::Bucket",
    # Stored so the local stack can raise them itself (dataharvest.ops.alarms).
    "AWS::CloudWatch::Alarm",
]
# The properties of AWS::CloudWatch::Alarm that PutMetricAlarm takes under the same names.
ALARM_PROPERTIES = (
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Dimensions",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "Metrics",
)


@dataclass
class LocalResource:
    logical_id: str
    type: str
    attributes: dict[str, str]
    ref: str


@dataclass
class Stack:
    file: ServerlessFile
    resources: dict[str, LocalResource] = field(default_factory=dict)


@dataclass
class Provisioner:
    endpoint_url: str
    region: str
    exports: dict[str, str] = field(default_factory=dict)
    stacks: dict[str, Stack] = field(default_factory=dict)

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region)

    # -- intrinsics -------------------------------------------------------------------------

    def resolve(self, node: Any, stack: Stack) -> Any:
        if isinstance(node, list):
            return [self.resolve(v, stack) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return self._ref(value, stack)
            if key == "Fn::GetAtt":
                logical, attribute = value if isinstance(value, list) else value.split(".", 1)
                return self._resource(logical, stack).attributes[attribute]
            if key == "Fn::ImportValue":
                name = self.resolve(value, stack)
                if name not in self.exports:
                    raise KeyError(f"Fn::ImportValue: no stack exports {name!r}")
                return self.exports[name]
            if key == "Fn::Join":
                separator, parts = value
                return separator.join(str(self.resolve(p, stack)) for p in parts)
            if key == "Fn::Sub":
                return self._sub(value, stack)
        return {k: self.resolve(v, stack) for k, v in node.items()}

    def _resource(self, logical: str, stack: Stack) -> LocalResource:
        if logical not in stack.resources:
            raise KeyError(f"{stack.file.path}: no local resource {logical!r}")
        return stack.resources[logical]

    def _ref(self, name: str, stack: Stack) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": LOCAL_ACCOUNT_ID,
            "AWS::StackName": f"{stack.file.service}-{stack.file.stage}",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        return self._resource(name, stack).ref

    def _sub(self, value: Any, stack: Stack) -> str:
        template, names = (value, {}) if isinstance(value, str) else value
        out = template
        for key, sub_value in names.items():
            out = out.replace("${" + key + "}", str(self.resolve(sub_value, stack)))
        while "${" in out:
            start = out.index("${")
            end = out.index("}", start)
            expression = out[start + 2 : end]
            if "." in expression and not expression.startswith("AWS::"):
                logical, attribute = expression.split(".", 1)
                replacement = self._resource(logical, stack).attributes[attribute]
            else:
                replacement = self._ref(expression, stack)
            out = out[:start] + str(replacement) + out[end + 1 :]
        return out

    # -- provisioning -----------------------------------------------------------------------

    def provision(self, file: ServerlessFile) -> Stack:
        stack = Stack(file=file)
        self.stacks[file.service] = stack
        pending = {k: v for k, v in file.resources.items() if v["Type"] not in CLOUD_ONLY}
        for logical, definition in file.resources.items():
            if definition["Type"] in CLOUD_ONLY:
                # Cloud-only resources still resolve (to inert placeholders) so that
                # environment variables and outputs referring to them resolve locally.
                placeholder = f"arn:aws:local:{self.region}:{LOCAL_ACCOUNT_ID}:{logical}"
                stack.resources[logical] = LocalResource(
                    logical, definition["Type"], _Placeholder(placeholder), placeholder
                )
        for resource_type in ORDER:
            for logical, definition in sorted(pending.items()):
                if definition["Type"] == resource_type:
                    stack.resources[logical] = self._create(logical, definition, stack)
        unknown = {v["Type"] for v in pending.values()} - set(ORDER)
        if unknown:
            raise ValueError(f"{file.path}: the local stack cannot provision {sorted(unknown)}")
        for name, output in file.outputs.items():
            export = output.get("Export", {}).get("Name")
            if export:
                self.exports[self.resolve(export, stack)] = str(
                    self.resolve(output["Value"], stack)
                )
            del name
        return stack

    def _create(self, logical: str, definition: dict[str, Any], stack: Stack) -> LocalResource:
        props = self.resolve(definition.get("Properties") or {}, stack)
        kind = definition["Type"]
        if kind == "AWS::SQS::Queue":
            return self._queue(logical, props)
        if kind == "AWS::SNS::Topic":
            arn = self.client("sns").create_topic(Name=props["TopicName"])["TopicArn"]
            return LocalResource(
                logical, kind, {"TopicArn": arn, "TopicName": props["TopicName"]}, arn
            )
        if kind == "AWS::DynamoDB::Table":
            return self._table(logical, props)
        if kind == "AWS::S3::Bucket":
            return self._bucket(logical, props)
        if kind == "AWS::Kinesis::Stream":
            return self._stream(logical, props)
        if kind == "AWS::CloudWatch::Alarm":
            return self._alarm(logical, props)
        raise ValueError(f"unsupported resource type {kind}")

    def _queue(self, logical: str, props: dict[str, Any]) -> LocalResource:
        sqs = self.client("sqs")
        attributes = {}
        for key in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "FifoQueue",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
        ):
            if key in props:
                value = props[key]
                attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
        if "RedrivePolicy" in props:
            policy = props["RedrivePolicy"]
            attributes["RedrivePolicy"] = policy if isinstance(policy, str) else json.dumps(policy)
        url = sqs.create_queue(QueueName=props["QueueName"], Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attrs = {"Arn": arn, "QueueName": props["QueueName"], "QueueUrl": url}
        return LocalResource(logical, "AWS::SQS::Queue", attrs, url)

    def _table(self, logical: str, props: dict[str, Any]) -> LocalResource:
        ddb = self.client("dynamodb")
        args: dict[str, Any] = {
            "TableName": props["TableName"],
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "StreamSpecification" in props:
            args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        for key in ("GlobalSecondaryIndexes", "ProvisionedThroughput"):
            if key in props:
                args[key] = props[key]
        try:
            table = ddb.create_table(**args)["TableDescription"]
        except ddb.exceptions.ResourceInUseException:
            table = ddb.describe_table(TableName=props["TableName"])["Table"]
        attrs = {"Arn": table["TableArn"], "StreamArn": table.get("LatestStreamArn", "")}
        return LocalResource(logical, "AWS::DynamoDB::Table", attrs, props["TableName"])

    def _stream(self, logical: str, props: dict[str, Any]) -> LocalResource:
        """A Kinesis data stream (the snapshot change stream): on-demand or with its shards,
        encrypted as declared."""
        kinesis = self.client("kinesis")
        name = props["Name"]
        mode = (props.get("StreamModeDetails") or {}).get("StreamMode", "PROVISIONED")
        args: dict[str, Any] = {"StreamName": name, "StreamModeDetails": {"StreamMode": mode}}
        if mode != "ON_DEMAND":
            args["ShardCount"] = int(props.get("ShardCount", 1))
        with contextlib.suppress(kinesis.exceptions.ResourceInUseException):
            kinesis.create_stream(**args)  # an existing stream (AWS_ENDPOINT_URL) is kept
        kinesis.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        encryption = props.get("StreamEncryption")
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if encryption and summary.get("EncryptionType", "NONE") == "NONE":
            kinesis.start_stream_encryption(
                StreamName=name,
                EncryptionType=encryption["EncryptionType"],
                KeyId=encryption["KeyId"],
            )
        attrs = {"Arn": summary["StreamARN"]}
        return LocalResource(logical, "AWS::Kinesis::Stream", attrs, name)

    def _bucket(self, logical: str, props: dict[str, Any]) -> LocalResource:
        s3 = self.client("s3")
        name = props["BucketName"]
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        notification = props.get("NotificationConfiguration") or {}
        queues = [
            {
                "QueueArn": q["Queue"],
                "Events": [q["Event"]],
                **({"Filter": _s3_filter(q["Filter"])} if "Filter" in q else {}),
            }
            for q in notification.get("QueueConfigurations", [])
        ]
        if queues:
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"QueueConfigurations": queues}
            )
        cors = props.get("CorsConfiguration")
        if cors:
            s3.put_bucket_cors(Bucket=name, CORSConfiguration=s3_cors_configuration(cors))
        attrs = {"Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com"}
        return LocalResource(logical, "AWS::S3::Bucket", attrs, name)

    def _alarm(self, logical: str, props: dict[str, Any]) -> LocalResource:
        args = {k: v for k, v in props.items() if k in ALARM_PROPERTIES}
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in args:
                args[key] = int(args[key])
        if "Threshold" in args:
            args["Threshold"] = float(args["Threshold"])
        for query in args.get("Metrics", []):
            if "MetricStat" in query:
                query["MetricStat"]["Period"] = int(query["MetricStat"]["Period"])
        self.client("cloudwatch").put_metric_alarm(**args)
        name = args["AlarmName"]
        arn = f"arn:aws:cloudwatch:{self.region}:{LOCAL_ACCOUNT_ID}:alarm:{name}"
        return LocalResource(logical, "AWS::CloudWatch::Alarm", {"Arn": arn}, name)


class _Placeholder(dict):
    def __init__(self, base: str):
        super().__init__()
        self.base = base

    def __missing__(self, attribute: str) -> str:
        return f"{self.base}/{attribute}"


# CloudFormation's CorsRule property -> S3 PutBucketCors's CORSRule member.
_CORS_RULE_NAMES = {
    "Id": "ID",
    "AllowedOrigins": "AllowedOrigins",
    "AllowedMethods": "AllowedMethods",
    "AllowedHeaders": "AllowedHeaders",
    "ExposedHeaders": "ExposeHeaders",
    "MaxAge": "MaxAgeSeconds",
}


def s3_cors_configuration(cfn_cors: dict[str, Any]) -> dict[str, Any]:
    """An AWS::S3::Bucket CorsConfiguration as PutBucketCors takes it (same rules)."""
    rules = []
    for rule in cfn_cors["CorsRules"]:
        unknown = set(rule) - set(_CORS_RULE_NAMES)
        if unknown:
            raise ValueError(f"CorsRule: the local stack does not know {sorted(unknown)}")
        converted = {_CORS_RULE_NAMES[k]: v for k, v in rule.items()}
        if "MaxAgeSeconds" in converted:
            converted["MaxAgeSeconds"] = int(converted["MaxAgeSeconds"])
        rules.append(converted)
    return {"CORSRules": rules}


def _s3_filter(cfn_filter: dict[str, Any]) -> dict[str, Any]:
    # CloudFormation spells it S3Key/Rules; the S3 API spells it Key/FilterRules.
    rules = cfn_filter.get("S3Key", {}).get("Rules", [])
    return {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}
