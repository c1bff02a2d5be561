"""Packaging of the root stack and every service with osls, offline, for the deploy checks.

Packaging needs Node.js (osls and its plugins from `scripts/install-node-deps.sh`, which this
fixture runs when node_modules is stale) and wheels for Lambda's platform (downloaded once into
build/lambda-wheels; later runs use only that folder). No AWS endpoint is contacted: the
credentials are placeholders and nothing in `osls package` needs them.

Packaging runs in a copy of what it reads (a workspace per test session), never in the work
tree: concurrent runs cannot clobber each other's .serverless/, and no local leftovers
(__pycache__, egg-info, build/) reach the zips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dataharvest_local import slsconfig

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "build" / "lambda-wheels"
# The local stack's stage, so that the parity test compares resource names as they are.
STAGE = "local"
# The stage's region: what every stack whose provider.region is `${opt:region, ...}` is
# packaged for. A stack that fixes its region (the console edge: us-east-1) gets its own.
REGION = "eu-west-1"
# The console's origin the root and api stacks are packaged with (DATAHARVEST_CONSOLE_ORIGIN,
# as an operator sets it from the console edge stack's output ConsoleOrigin; docs/DEPLOY.md).
CONSOLE_ORIGIN = "https://d111111abcdef8.cloudfront.net"
PACKAGE_TIMEOUT_S = 600
# Lambda's limits for a function package (zip) and for the unzipped code with its layers.
ZIPPED_LIMIT = 50 * 1024 * 1024
UNZIPPED_LIMIT = 250 * 1024 * 1024


def _lock_script() -> Any:
    """scripts/lock-lambda-requirements.py: the locked lists and Lambda's pip target."""
    spec = importlib.util.spec_from_file_location(
        "lock_lambda_requirements", REPO / "scripts" / "lock-lambda-requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = _lock_script()
# Lambda's python3.12 target: what pip downloads and what the artifact check runs.
PIP_TARGET: list[str] = LOCK.TARGET


@dataclass
class Packaged:
    """One packaged stack: its folder, CloudFormation template and function zips."""

    name: str
    directory: Path
    template: dict[str, Any]
    log: str
    zips: dict[str, Path] = field(default_factory=dict)  # function logical id -> artifact
    # The region osls packaged the stack for (.serverless/serverless-state.json).
    region: str = REGION
    without_network: bool = False  # packaged in a network namespace with no interface up

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}


def stack_directories() -> list[Path]:
    """The root stack and every service that has a serverless.yml (new services included)."""
    return [REPO, *sorted(p.parent for p in (REPO / "services").glob("*/serverless.yml"))]


def stack_name(directory: Path) -> str:
    return "root" if directory == REPO else directory.name


def _declared(directory: Path) -> slsconfig.ServerlessFile:
    return slsconfig.load(directory / "serverless.yml", STAGE, REGION, environ=_environment())


def stack_region(directory: Path) -> str:
    """The region the stack deploys to: its provider.region, with `${opt:region}` = REGION
    (osls lets `--region` override even a fixed region, so packaging passes this one)."""
    return str(_declared(directory).data["provider"]["region"])


def declares_functions(directory: Path) -> bool:
    """Whether the stack's serverless.yml has functions (the console edge has none)."""
    return bool(_declared(directory).functions)


def _osls() -> Path:
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("Node.js/npm not installed: the deploy checks need them (docs/DEPLOY.md)")
    subprocess.run([str(REPO / "scripts" / "install-node-deps.sh")], check=True, cwd=REPO)
    return REPO / "node_modules" / ".bin" / "osls"


def _ensure_wheelhouse() -> None:
    """Every wheel the locked Lambda requirements need, for Lambda's platform, in
    build/lambda-wheels: requirements-lambda.txt and each service's own
    services/<name>/requirements.txt (scripts/lock-lambda-requirements.py writes them all)."""
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE)]
    # boto3 for the artifact check's stand-in of the Lambda runtime.
    commands = [[*download, *PIP_TARGET, "boto3"]]
    # Locked lists are hash-checked, each on its own (a command with one hashed requirement
    # wants hashes for all, and two lists may pin the same wheel), for the platforms each is
    # locked for.
    for _source, locked, target in LOCK.sources():
        commands.append([*download, *target, "--require-hashes", "-r", str(locked)])
    for command in commands:
        offline = subprocess.run(
            [*command, "--no-index", "--find-links", str(WHEELHOUSE)],
            capture_output=True,
            text=True,
        )
        if offline.returncode != 0:
            subprocess.run(command, check=True, capture_output=True, text=True)


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIP_"))}
    env.update(
        {
            # Placeholders: packaging must not need (or find) real credentials.
            "AWS_ACCESS_KEY_ID": "placeholder",
            "AWS_SECRET_ACCESS_KEY": "placeholder",
            "AWS_EC2_METADATA_DISABLED": "true",
            "SLS_TELEMETRY_DISABLED": "1",
            "SLS_NOTIFICATIONS_MODE": "off",
            "SLS_INTERACTIVE_SETUP_DISABLE": "1",
            # serverless-python-requirements' pip: only the wheelhouse, never the index.
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(WHEELHOUSE),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "DATAHARVEST_PACKAGING_PYTHON": sys.executable,
            "DATAHARVEST_CONSOLE_ORIGIN": CONSOLE_ORIGIN,
        }
    )
    return env


_NOT_COPIED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".serverless", "*.egg-info", "build", "node_modules", ".*cache"
)
_COPIED_FILES = (
    "serverless.yml",
    "serverless.common.yml",
    "serverless.transformer.yml",
    "requirements.txt",
    "requirements-lambda.txt",
    "package.json",
    "package-lock.json",
)


def _workspace(target: Path) -> None:
    """The files `osls package` reads, laid out as in the repository, with node_modules linked."""
    for name in _COPIED_FILES:
        shutil.copy2(REPO / name, target / name)
    for folder in ("shared", "services"):
        shutil.copytree(REPO / folder, target / folder, ignore=_NOT_COPIED)
    (target / "node_modules").symlink_to(REPO / "node_modules", target_is_directory=True)


def network_isolation() -> list[str]:
    """`unshare --net` where it works (root, as in CI): packaging that tried to reach any
    network would then fail instead of passing on a machine that happens to be online."""
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    return ["unshare", "--net"] if probe.returncode == 0 else []


def _package(osls: Path, directory: Path, name: str, env: dict[str, str]) -> Packaged:
    started = time.monotonic()
    isolation = network_isolation() if shutil.which("unshare") else []
    result = subprocess.run(
        [*isolation, str(osls), "package", "--stage", STAGE, "--region", stack_region(directory)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=PACKAGE_TIMEOUT_S,
    )
    log = result.stdout + result.stderr + f"\n[packaged in {time.monotonic() - started:.1f} s]"
    if result.returncode != 0:
        raise RuntimeError(f"osls package failed in {directory}:\n{log}")
    packaged = _load(directory, name)
    packaged.log = log
    packaged.without_network = bool(isolation)
    return packaged


# Filled by test_package_sizes, printed at the end of the run (the sizes the issue asks for).
SIZES: list[tuple[str, str, int, int]] = []


def _load(directory: Path, name: str) -> Packaged:
    out = directory / ".serverless"
    template = json.loads((out / "cloudformation-template-update-stack.json").read_text())
    state = json.loads((out / "serverless-state.json").read_text())
    region = state["service"]["provider"]["region"]
    packaged = Packaged(name, directory, template, log="(reused)", region=region)
    for logical, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            key = resource["Properties"]["Code"]["S3Key"]
            packaged.zips[logical] = out / key.rsplit("/", 1)[-1]
    return packaged


def package_all(workspace: Path) -> dict[str, Packaged]:
    """Every stack, packaged in `workspace` (two at a time: the machine has two cores).

    DATAHARVEST_DEPLOY_DIR=<folder> packages there instead, and reuses what it finds there on
    the next run (a developer's loop on the checks themselves; CI never sets it).
    """
    stacks = {stack_name(d): d.relative_to(REPO) for d in stack_directories()}
    reuse = os.environ.get("DATAHARVEST_DEPLOY_DIR")
    if reuse:
        workspace = Path(reuse).resolve()
        if (workspace / ".serverless").is_dir():
            return {name: _load(workspace / rel, name) for name, rel in stacks.items()}
        workspace.mkdir(parents=True, exist_ok=True)
    osls = _osls()
    _ensure_wheelhouse()
    _workspace(workspace)
    env = _environment()
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [
            pool.submit(_package, osls, workspace / rel, name, env) for name, rel in stacks.items()
        ]
        results = [job.result() for job in jobs]
    return {p.name: p for p in results}


def package_sizes(packaged: dict[str, Packaged]) -> list[tuple[str, str, int, int]]:
    """(stack, function, zipped bytes, unzipped bytes) for every function package."""
    rows = []
    for stack in packaged.values():
        for function, path in sorted(stack.zips.items()):
            with zipfile.ZipFile(path) as archive:
                unzipped = sum(i.file_size for i in archive.infolist())
            rows.append((stack.name, function, path.stat().st_size, unzipped))
    return rows
