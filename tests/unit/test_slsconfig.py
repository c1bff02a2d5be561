"""The local stack's serverless.yml reader: `${file(path):key}` (the shared deploy settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataharvest_local import slsconfig


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_file_variable_is_relative_to_the_including_file_and_keeps_self(tmp_path: Path) -> None:
    _write(
        tmp_path / "serverless.common.yml",
        "plugins: [a-plugin]\n"
        "layer:\n  name: ${self:service}-${sls:stage}-python\n"
        "vpc:\n  subnetIds:\n    Fn::ImportValue: x-${sls:stage}-Subnets\n",
    )
    path = _write(
        tmp_path / "services" / "svc" / "serverless.yml",
        "service: svc\n"
        "plugins: ${file(../../serverless.common.yml):plugins}\n"
        "custom:\n  layer: ${file(../../serverless.common.yml):layer}\n"
        "  whole: ${file(../../serverless.common.yml)}\n"
        "provider:\n  vpc: ${file(../../serverless.common.yml):vpc}\n",
    )

    data = slsconfig.load(path, stage="local").data

    assert data["plugins"] == ["a-plugin"]
    assert data["custom"]["layer"] == {"name": "svc-local-python"}
    assert data["provider"]["vpc"] == {"subnetIds": {"Fn::ImportValue": "x-local-Subnets"}}
    assert data["custom"]["whole"]["plugins"] == ["a-plugin"]


def test_file_variable_with_a_missing_key_names_the_variable(tmp_path: Path) -> None:
    _write(tmp_path / "common.yml", "plugins: []\n")
    path = _write(tmp_path / "serverless.yml", "service: svc\nx: ${file(./common.yml):nope}\n")

    with pytest.raises(KeyError, match=r"file\(\./common\.yml\):nope"):
        slsconfig.load(path)


@pytest.mark.parametrize(
    ("folder", "queue", "user"),
    [
        ("sum_deposit_transformer", "sum-deposit-transformer", "sum_deposit_transformer"),
        ("tax_transformer", "tax-transformer", "tax_transformer"),
        ("transaction_transformer", "transaction-transformer", "transaction_transformer"),
        ("relationship_transformer", "relationship-transformer", "relationship_transformer"),
    ],
)
def test_summary_transformers_share_one_file_with_their_own_names(
    folder: str, queue: str, user: str
) -> None:
    path = slsconfig.REPO_ROOT / "services" / folder / "serverless.yml"

    data = slsconfig.load(path, stage="local").data

    environment = data["provider"]["environment"]
    assert environment["DATABASE_USER"] == f"dataharvest_{user}_fn"
    assert environment["POWERTOOLS_SERVICE_NAME"] == queue
    queues = data["resources"]["Resources"]
    assert queues["WorkQueue"]["Properties"]["QueueName"] == f"dataharvest-local-{queue}"
    assert queues["WorkDeadLetterQueue"]["Properties"]["QueueName"] == (
        f"dataharvest-local-{queue}-dlq"
    )
    statements = data["functions"]["transform"]["iamRoleStatements"]
    connect = next(s for s in statements if s["Action"] == ["rds-db:connect"])
    assert connect["Resource"]["Fn::Join"][1][-1] == f"/dataharvest_{user}_fn"
