"""Deploy checks (marker `deploy`): every stack is packaged once per session and shared."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_stacks import SIZES, Packaged, package_all


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Packaged]:
    return package_all(tmp_path_factory.mktemp("deploy-workspace"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SIZES:
        return
    terminalreporter.section("Lambda package sizes")
    for stack, function, zipped, unzipped in SIZES:
        terminalreporter.line(
            f"{stack:28} {function:32} {zipped / 2**20:6.1f} MB zipped "
            f"{unzipped / 2**20:6.1f} MB unzipped"
        )
