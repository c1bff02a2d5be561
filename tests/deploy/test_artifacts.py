"""Artifact check: each packaged zip, unpacked alone, imports its handler in a fresh CPython 3.12
(Lambda's python3.12, x86_64, as packaged), with nothing else on sys.path but a stand-in for
what the Lambda runtime itself provides (boto3 and its dependencies)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from deploy_stacks import PIP_TARGET, REGION, REPO, WHEELHOUSE, Packaged, declares_functions

# Packaging every stack (the session fixture) may take minutes on a busy machine.
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

# -I: no environment variables, no user site; -S: no site-packages either. The check puts the
# unpacked zip and the runtime stand-in on sys.path itself.
CHECK = """
import importlib, sys
task, runtime = {task!r}, {runtime!r}
sys.path[:0] = [task, runtime]
module = importlib.import_module({module!r})
assert callable(getattr(module, {attribute!r})), "handler is not callable"
import dataharvest, psycopg
assert dataharvest.__file__.startswith(task), dataharvest.__file__
# The compiled libpq wrapper, not a pure-Python fallback: the wheel matches the platform.
assert psycopg.pq.__impl__ == "binary", psycopg.pq.__impl__
print("ok", module.__file__)
"""


def _python312() -> str:
    """A real CPython 3.12 binary (pyenv's shims only work where a .python-version allows)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    candidates.append(shutil.which("python3.12") or "")
    for candidate in candidates:
        if candidate and "/shims/" not in candidate:
            return candidate
    pytest.fail(
        "CPython 3.12 (Lambda's python3.12) not found: the artifact check imports each package "
        "with it (install python3.12, e.g. `pyenv install 3.12`)"
    )


@pytest.fixture(scope="module")
def runtime_stand_in(tmp_path_factory: pytest.TempPathFactory, packaged: Any) -> Path:
    """boto3 and botocore as the python3.12 Lambda runtime has them (not in our zips)."""
    target = tmp_path_factory.mktemp("lambda-runtime")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(WHEELHOUSE),
            "--target",
            str(target),
            *PIP_TARGET,
            "boto3",
        ],
        check=True,
    )
    return target


TOOLING = ("dataharvest_local/", "dataharvest/local/", "dataharvest/cli.py", "alembic/", "duckdb")


def _names(artifact: Path) -> list[str]:
    with zipfile.ZipFile(artifact) as archive:
        return archive.namelist()


def _functions(packaged: dict[str, Packaged]) -> list[tuple[Packaged, str, Path]]:
    return [(s, f, z) for s in packaged.values() for f, z in sorted(s.zips.items())]


def _environment(function: dict[str, Any], task: Path) -> dict[str, str]:
    """The function's own variables (imported values as placeholders) and Lambda's."""
    props = function["Properties"]
    variables = props.get("Environment", {}).get("Variables", {})
    env = {k: v if isinstance(v, str) else f"placeholder-{k.lower()}" for k, v in variables.items()}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": props["FunctionName"],
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "LAMBDA_TASK_ROOT": str(task),
            "_HANDLER": props["Handler"],
            "PATH": os.environ.get("PATH", ""),
        }
    )
    return env


def test_every_package_imports_its_handler_alone(
    packaged: dict[str, Packaged], runtime_stand_in: Path, tmp_path: Path
) -> None:
    python = _python312()
    checked = []
    for stack, logical, artifact in _functions(packaged):
        task = tmp_path / stack.name / logical
        task.mkdir(parents=True)
        with zipfile.ZipFile(artifact) as archive:
            archive.extractall(task)
        function = stack.resources[logical]
        module, attribute = function["Properties"]["Handler"].rsplit(".", 1)
        code = CHECK.format(
            task=str(task), runtime=str(runtime_stand_in), module=module, attribute=attribute
        )
        result = subprocess.run(
            [python, "-I", "-S", "-c", code],
            cwd=tmp_path,  # not the repository: nothing of it may leak in
            env=_environment(function, task),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{stack.name}/{logical} ({artifact}):\n{result.stderr}"
        # The developer tooling (tools/: local stack, CLI, migrations) never reaches a zip.
        tooling = [n for n in _names(artifact) if n.startswith(TOOLING)]
        assert not tooling, f"{stack.name}/{logical} packages developer tooling: {tooling[:5]}"
        # The roots the database connection verifies RDS Proxy against (security/connection.py).
        assert "dataharvest/security/certs/amazon-trust-roots.pem" in _names(artifact), (
            f"{stack.name}/{logical} lacks the CA bundle"
        )
        checked.append(f"{stack.name}/{logical}")
    expected = {
        p.parent.name
        for p in (REPO / "services").glob("*/serverless.yml")
        if declares_functions(p.parent)
    }
    assert {c.split("/")[0] for c in checked} == expected
