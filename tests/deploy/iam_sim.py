"""A small IAM policy simulator for the generated templates: CloudFormation intrinsics are
resolved to the ARNs a deployed stage would have, then a request (action, resource, context
keys) is evaluated the way IAM does for identity policies: an explicit Deny wins, else any
Allow, else implicitly denied. Covers what our policies use: wildcards in actions and
resources; StringEquals, StringLike, ArnLike, ArnEquals, Bool and the ForAnyValue: /
ForAllValues: set operators."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from deploy_stacks import Packaged

ACCOUNT = "123456789012"


class Resolver:
    """Resolves intrinsics across every packaged stack (Fn::ImportValue follows exports)."""

    def __init__(self, packaged: dict[str, Packaged]):
        self.packaged = packaged
        self.exports: dict[str, tuple[Packaged, Any]] = {}
        for stack in packaged.values():
            for output in stack.template.get("Outputs", {}).values():
                name = output.get("Export", {}).get("Name")
                if isinstance(name, str):
                    self.exports[name] = (stack, output["Value"])

    def resolve(self, node: Any, stack: Packaged) -> Any:
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
                return self._attribute(logical, attribute, stack)
            if key == "Fn::ImportValue":
                name = self.resolve(value, stack)
                owner, exported = self.exports[name]
                return self.resolve(exported, owner)
            if key == "Fn::Join":
                separator, parts = value
                return separator.join(str(self.resolve(p, stack)) for p in parts)
            if key == "Fn::Split":
                separator, text = value
                return str(self.resolve(text, stack)).split(separator)
            if key == "Fn::Select":
                index, items = value
                return self.resolve(items, stack)[int(index)]
        return {k: self.resolve(v, stack) for k, v in node.items()}

    def _ref(self, name: str, stack: Packaged) -> str:
        pseudo = {"AWS::Region": stack.region, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
        if name in pseudo:
            return pseudo[name]
        resource = stack.resources[name]
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::SQS::Queue":
            queue = self.resolve(props["QueueName"], stack)
            return f"https://sqs.{stack.region}.amazonaws.com/{ACCOUNT}/{queue}"
        if resource["Type"] == "AWS::S3::Bucket":
            return self.resolve(props["BucketName"], stack)
        if resource["Type"] == "AWS::DynamoDB::Table":
            return self.resolve(props["TableName"], stack)
        return f"{stack.name}-{name}"

    def _attribute(self, logical: str, attribute: str, stack: Packaged) -> str:
        resource = stack.resources[logical]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::SQS::Queue":
            name = self.resolve(props["QueueName"], stack)
            return {"Arn": f"arn:aws:sqs:{stack.region}:{ACCOUNT}:{name}", "QueueName": name}[
                attribute
            ]
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{self.resolve(props['BucketName'], stack)}"
        if kind == "AWS::DynamoDB::Table":
            table = f"arn:aws:dynamodb:{stack.region}:{ACCOUNT}:table/{props['TableName']}"
            return {"Arn": table, "StreamArn": f"{table}/stream/2026-12-01T00:00:00.000"}[attribute]
        if kind == "AWS::KMS::Key":
            return f"arn:aws:kms:{stack.region}:{ACCOUNT}:key/{stack.name}-{logical}"
        if kind == "AWS::RDS::DBProxy" and attribute == "DBProxyArn":
            return f"arn:aws:rds:{stack.region}:{ACCOUNT}:db-proxy:prx-{logical.lower()}"
        return f"{stack.name}-{logical}-{attribute}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(operator: str, wanted: dict[str, Any], context: dict[str, Any]) -> bool:
    quantifier, _, test = operator.rpartition(":")
    like = test in ("StringLike", "ArnLike", "ArnEquals")
    if test not in ("StringEquals", "StringLike", "ArnLike", "ArnEquals", "Bool"):
        raise NotImplementedError(f"condition operator {operator}")

    def match(value: str, patterns: list[Any]) -> bool:
        return any(
            fnmatchcase(str(value), str(p)) if like else str(value) == str(p) for p in patterns
        )

    for key, patterns in wanted.items():
        patterns = _list(patterns)
        present = key in context
        values = _list(context.get(key, []))
        if quantifier == "ForAllValues":
            if not all(match(v, patterns) for v in values):
                return False
        elif quantifier == "ForAnyValue":
            if not any(match(v, patterns) for v in values):
                return False
        elif not present or not any(match(v, patterns) for v in values):
            return False
    return True


def _applies(statement: dict[str, Any], action: str, resource: str, context: dict) -> bool:
    actions = _list(statement.get("Action", []))
    if not any(fnmatchcase(action.lower(), a.lower()) for a in actions):
        return False
    if not any(fnmatchcase(resource, r) for r in _list(statement.get("Resource", []))):
        return False
    return all(
        _condition_holds(operator, wanted, context)
        for operator, wanted in statement.get("Condition", {}).items()
    )


def evaluate(
    statements: list[dict[str, Any]], action: str, resource: str, context: dict | None = None
) -> str:
    """ "allowed", "denied" (an explicit Deny) or "implicitly denied"."""
    context = context or {}
    applying = [s for s in statements if _applies(s, action, resource, context)]
    if any(s["Effect"] == "Deny" for s in applying):
        return "denied"
    if any(s["Effect"] == "Allow" for s in applying):
        return "allowed"
    return "implicitly denied"


def role_statements(resolver: Resolver, stack: Packaged, role_logical: str) -> list[dict]:
    role = stack.resources[role_logical]
    return [
        resolver.resolve(s, stack)
        for policy in role["Properties"].get("Policies", [])
        for s in _list(policy["PolicyDocument"]["Statement"])
    ]


def function_roles(stack: Packaged) -> dict[str, str]:
    """Function logical id -> its role's logical id."""
    return {
        k: f["Properties"]["Role"]["Fn::GetAtt"][0]
        for k, f in stack.of_type("AWS::Lambda::Function").items()
    }
