"""Find or start the local stack from a CLI process, and talk to its control API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from dataharvest_local.stack_info import StackInfo

READY_TIMEOUT_S = 120


def state_file(home: Path) -> Path:
    return home / "stack.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def control(info: StackInfo, path: str, timeout: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(info.control_url + path, timeout=timeout) as response:
        return json.loads(response.read())


def running_stack(home: Path) -> StackInfo | None:
    path = state_file(home)
    if not path.exists():
        return None
    info = StackInfo(**json.loads(path.read_text()))
    if not _pid_alive(info.pid):
        return None
    try:
        control(info, "/health", timeout=2)
    except OSError:
        return None
    return info


def start_detached(home: Path) -> StackInfo:
    """Start `dataharvest up` in the background and wait until it answers."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    state_file(home).unlink(missing_ok=True)
    log = open(home / "logs" / "stack.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [sys.executable, "-m", "dataharvest_local.cli", "up"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        env={**os.environ, "DATAHARVEST_HOME": str(home)},
    )
    log.close()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local stack exited; see {home / 'logs' / 'stack.log'}")
        info = running_stack(home)
        if info is not None:
            return info
        time.sleep(0.1)
    raise RuntimeError(f"the local stack did not start in {READY_TIMEOUT_S} s")


def ensure_stack(home: Path) -> StackInfo:
    info = running_stack(home) or start_detached(home)
    os.environ.update(info.client_environment())
    return info


def stop_stack(home: Path, timeout: float = 90.0) -> bool:
    path = state_file(home)
    if not path.exists():
        return False
    info = StackInfo(**json.loads(path.read_text()))
    if _pid_alive(info.pid):
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    path.unlink(missing_ok=True)
    return True
