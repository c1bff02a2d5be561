"""The tightened IAM of issue 18, checked by simulation on the generated templates
(tests/deploy/iam_sim.py): catapult sends only to transformers' work queues, no function writes
the registry, each function connects to the database as its own user and reads no password,
and a partner's upload policy reaches only its own prefix."""

from __future__ import annotations

import pytest
from deploy_stacks import REGION, STAGE, Packaged
from iam_sim import ACCOUNT, Resolver, evaluate, function_roles, role_statements

from dataharvest.security import roles
from dataharvest.security.partner_policy import landing_bucket, upload_policy

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

PREFIX = f"dataharvest-{STAGE}"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{PREFIX}-metastore"
PROXY = "prx-databaseproxy"
TRANSFORMER_STACKS = (
    "relationship_transformer",
    "transaction_transformer",
    "sum_deposit_transformer",
    "tax_transformer",
    "partner_publisher",
    "lake_exporter",
)


def queue(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{PREFIX}-{name}"


@pytest.fixture(scope="module")
def resolver(packaged: dict[str, Packaged]) -> Resolver:
    return Resolver(packaged)


def statements_of(resolver: Resolver, stack: Packaged) -> dict[str, list[dict]]:
    return {
        function: role_statements(resolver, stack, role)
        for function, role in function_roles(stack).items()
    }


def test_catapult_sends_only_to_work_queues(packaged, resolver):
    work = {"aws:ResourceTag/dataharvest-work-queue": "true"}
    functions = statements_of(resolver, packaged["catapult"])
    assert len(functions) == 2  # dispatch and reconcile
    for function, statements in functions.items():
        for name in ("tax-transformer", "partner-publisher", "a-transformer-registered-later"):
            assert evaluate(statements, "sqs:SendMessage", queue(name), work) == "allowed", (
                function,
                name,
            )
        # Untagged queues (the result and persistence queues) and every DLQ, even if tagged.
        for name in ("results.fifo", "persistence", "persistence-chunks"):
            assert evaluate(statements, "sqs:SendMessage", queue(name)) != "allowed", name
            assert evaluate(statements, "sqs:SendMessage", queue(name), work) != "allowed"
        for name in ("tax-transformer-dlq", "persistence-dlq"):
            assert evaluate(statements, "sqs:SendMessage", queue(name), work) == "denied"


def test_work_queues_carry_the_tag_catapult_needs(packaged):
    for name in TRANSFORMER_STACKS:
        tags = packaged[name].resources["WorkQueue"]["Properties"]["Tags"]
        assert {"Key": "dataharvest-work-queue", "Value": "true"} in tags, name


@pytest.mark.parametrize("stack", [*TRANSFORMER_STACKS, "persistence"])
def test_no_function_writes_the_registry(packaged, resolver, stack):
    for function, statements in statements_of(resolver, packaged[stack]).items():
        registry = {"dynamodb:LeadingKeys": ["#transformers"]}
        for action in ("dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"):
            assert evaluate(statements, action, TABLE, registry) != "allowed", (function, action)
        if evaluate(statements, "dynamodb:UpdateItem", TABLE, {"dynamodb:LeadingKeys": ["x"]}) == (
            "allowed"
        ):
            # A function that updates client items still may.
            assert evaluate(statements, "dynamodb:UpdateItem", TABLE, registry) == "denied"


@pytest.mark.parametrize(
    "stack", [*TRANSFORMER_STACKS, "persistence", "api", "operations", "snapshot_applier"]
)
def test_each_function_connects_as_its_own_database_user_without_a_password(
    packaged, resolver, stack
):
    own = roles.login_role(roles.role_for(f"dataharvest-{stack.replace('_', '-')}"))
    others = [
        roles.login_role(r)
        for r in filter(None, roles.SERVICE_ROLES.values())
        if roles.login_role(r) != own
    ]
    for function, statements in statements_of(resolver, packaged[stack]).items():
        user = f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:{PROXY}/"
        assert evaluate(statements, "rds-db:connect", user + own) == "allowed", function
        for other in others:
            assert evaluate(statements, "rds-db:connect", user + other) != "allowed", other
        assert not any(
            "secretsmanager:GetSecretValue" in (s.get("Action") or []) for s in statements
        ), function
        env = packaged[stack].resources[function]["Properties"]["Environment"]["Variables"]
        assert env["DATABASE_USER"] == own and "DATABASE_SECRET_ARN" not in env


def test_partner_upload_policy_reaches_only_its_own_prefix():
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/landing"
    statements = upload_policy("acme", STAGE, ACCOUNT, REGION, key)["Statement"]
    bucket = f"arn:aws:s3:::{landing_bucket(STAGE, ACCOUNT)}"
    assert evaluate(statements, "s3:PutObject", f"{bucket}/acme/clients_20240102.csv") == "allowed"
    assert evaluate(statements, "s3:DeleteObject", f"{bucket}/acme/x.csv") == "allowed"
    for other in ("nordic/clients_20240102.csv", "acme-evil/x.csv", "x.csv"):
        assert evaluate(statements, "s3:PutObject", f"{bucket}/{other}") != "allowed", other
    assert evaluate(statements, "s3:GetObject", f"{bucket}/acme/x.csv") != "allowed"
    assert evaluate(statements, "s3:ListBucket", bucket, {"s3:prefix": "acme/"}) == "allowed"
    assert evaluate(statements, "s3:ListBucket", bucket, {"s3:prefix": "nordic/"}) != "allowed"
    assert evaluate(statements, "s3:ListBucket", bucket) != "allowed"  # no prefix: everything
    via_s3 = {
        "kms:ViaService": f"s3.{REGION}.amazonaws.com",
        "kms:EncryptionContext:aws:s3:arn": bucket,
    }
    assert evaluate(statements, "kms:GenerateDataKey", key, via_s3) == "allowed"
    assert evaluate(statements, "kms:Decrypt", key) != "allowed"  # not outside S3


def test_the_simulator_itself():
    allow = {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/*"}
    deny = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/secret/*"}
    assert evaluate([allow], "s3:GetObject", "arn:aws:s3:::b/x") == "allowed"
    assert evaluate([allow, deny], "s3:GetObject", "arn:aws:s3:::b/secret/x") == "denied"
    assert evaluate([allow], "s3:PutObject", "arn:aws:s3:::b/x") == "implicitly denied"
    keys = {
        "Effect": "Allow",
        "Action": "dynamodb:Query",
        "Resource": TABLE,
        "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["#transformers"]}},
    }
    registry = {"dynamodb:LeadingKeys": ["#transformers"]}
    assert evaluate([keys], "dynamodb:Query", TABLE, registry) == "allowed"
    assert (
        evaluate([keys], "dynamodb:Query", TABLE, {"dynamodb:LeadingKeys": ["acme"]})
        == "implicitly denied"
    )
