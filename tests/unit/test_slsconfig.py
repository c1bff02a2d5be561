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
