"""Read serverless.yml files the way the Serverless Framework resolves them, for local use.

Only what our files use is resolved: `${sls:stage}`, `${self:...}`, `${aws:region}`,
`${aws:accountId}`, `${env:NAME, default}`, `${file(path):key}` (path relative to the
serverless.yml, for the deploy settings services share in serverless.common.yml). CloudFormation
intrinsics (Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::ImportValue) are resolved later, against
the provisioned local resources (see provision.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_ACCOUNT_ID = "123456789012"

_VARIABLE = re.compile(r"\$\{([^{}]+)\}")
_FILE = re.compile(r"file\((?P<path>[^()]+)\)(?::(?P<address>.+))?")


class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present
    """YAML loader that turns CloudFormation short tags (!Ref, !GetAtt ...) into long form."""


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@dataclass
class ServerlessFile:
    path: Path
    data: dict[str, Any]
    stage: str
    region: str

    @property
    def service(self) -> str:
        return self.data["service"]

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def resources(self) -> dict[str, Any]:
        return (self.data.get("resources") or {}).get("Resources") or {}

    @property
    def outputs(self) -> dict[str, Any]:
        return (self.data.get("resources") or {}).get("Outputs") or {}

    @property
    def functions(self) -> dict[str, Any]:
        return self.data.get("functions") or {}

    def function_name(self, key: str) -> str:
        # Serverless' default naming rule: <service>-<stage>-<function key>.
        fn = self.functions[key]
        return fn.get("name") or f"{self.service}-{self.stage}-{key}"


@dataclass
class Variables:
    stage: str
    region: str
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    directory: Path = field(default_factory=Path.cwd)


@lru_cache(maxsize=32)
def _parse(path: Path, mtime_ns: int) -> Any:
    # Included files are referenced dozens of times per serverless.yml: parse each once.
    # Callers never mutate the result (_resolve builds new containers).
    del mtime_ns  # part of the cache key only
    return yaml.load(path.read_text(), Loader=_CfnLoader)


def load(
    path: Path,
    stage: str = "local",
    region: str = "eu-west-1",
    environ: dict[str, str] | None = None,
) -> ServerlessFile:
    """`environ` (default: this process's environment) is what `${env:...}` reads."""
    raw = yaml.load(path.read_text(), Loader=_CfnLoader)
    variables = Variables(stage=stage, region=region, directory=path.parent)
    if environ is not None:
        variables.environ = dict(environ)
    resolved = _resolve(raw, raw, variables, depth=0)
    return ServerlessFile(path=path, data=resolved, stage=stage, region=region)


def _resolve(node: Any, root: dict[str, Any], variables: Variables, depth: int) -> Any:
    if depth > 20:
        raise ValueError("serverless.yml variables nest too deep (a reference cycle?)")
    if isinstance(node, dict):
        return {k: _resolve(v, root, variables, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, variables, depth) for v in node]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = _VARIABLE.fullmatch(node)
    if whole:
        # A value that is exactly one variable keeps the referenced value's type.
        return _resolve(_lookup(whole.group(1), root, variables), root, variables, depth + 1)
    return _VARIABLE.sub(
        lambda m: str(_resolve(_lookup(m.group(1), root, variables), root, variables, depth + 1)),
        node,
    )


def _lookup(expression: str, root: dict[str, Any], variables: Variables) -> Any:
    source, _, fallback = expression.partition(",")
    source = source.strip()
    fallback = fallback.strip().strip("'\"") if fallback else None
    if source == "sls:stage" or source.startswith("opt:stage"):
        return variables.stage
    if source == "aws:region" or source.startswith("opt:region"):
        return variables.region
    if source == "aws:accountId":
        return LOCAL_ACCOUNT_ID
    included = _FILE.fullmatch(source)
    if included:
        # As in the Serverless Framework, ${self:...} inside the included value still means
        # the including file: the value is returned unresolved and resolved by the caller.
        target = (variables.directory / included["path"].strip()).resolve()
        value = _parse(target, target.stat().st_mtime_ns)
        for part in filter(None, (included["address"] or "").split(".")):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(f"serverless.yml: ${{{expression}}} does not resolve")
            value = value[part]
        return value
    if source.startswith("self:"):
        value = root
        for part in source[len("self:") :].split("."):
            if not isinstance(value, dict) or part not in value:
                if fallback is not None:
                    return fallback
                raise KeyError(f"serverless.yml: ${{{expression}}} does not resolve")
            value = value[part]
        return value
    if source.startswith("env:"):
        name = source[len("env:") :]
        if name in variables.environ:
            return variables.environ[name]
        if fallback is not None:
            return fallback
        raise KeyError(f"serverless.yml: environment variable {name} is not set")
    raise KeyError(f"serverless.yml: unsupported variable source ${{{expression}}}")


def root_file() -> Path:
    return REPO_ROOT / "serverless.yml"


def service_files() -> list[Path]:
    return sorted((REPO_ROOT / "services").glob("*/serverless.yml"))
