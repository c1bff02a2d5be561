"""A Lambda execution environment per function: the worker process that serves its
invocations one at a time (see worker.py for the process side)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class FunctionSpec:
    name: str
    service: str
    directory: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]


class InvokeError(RuntimeError):
    """The function failed (raised, crashed or timed out): the whole batch failed."""

    # The execution environment died with the invocation (crash, kill, timeout): Lambda would
    # return the batch only after the queue's visibility timeout; locally it returns sooner.
    crashed = False

    def __init__(self, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        # Item identifier -> "Type: message", when every record of the batch failed.
        self.errors = errors or {}


class InstanceDied(InvokeError):
    crashed = True


@dataclass(frozen=True)
class Invocation:
    result: Any
    # Item identifier -> "Type: message" for each record of a partial batch response.
    errors: dict[str, str]


class Worker:
    """One Lambda instance of a function: a long-lived process serving one invoke at a time."""

    def __init__(self, spec: FunctionSpec, log_dir: Path, instance: int = 0):
        self.spec = spec
        suffix = f".{instance}" if instance else ""
        self.log_path = log_dir / f"{spec.name}{suffix}.log"
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHARVEST_LOCAL",))}
        env.update(self.spec.environment)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.spec.directory), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataharvest_local.worker",
                str(self.spec.directory),
                self.spec.handler,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=str(self.spec.directory),
            text=True,
            bufsize=1,
        )
        log.close()
        ready = process.stdout.readline() if process.stdout else ""
        if not ready:
            raise InvokeError(f"{self.spec.name}: init failed, see {self.log_path}")
        return process

    def invoke(self, event: dict[str, Any]) -> Invocation:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            assert process.stdin and process.stdout
            process.stdin.write(json.dumps(event, default=str) + "\n")
            process.stdin.flush()
            reply_line = _readline_with_timeout(process, self.spec.timeout)
            if reply_line is None:
                # Lambda ends a timed-out invocation and starts a fresh environment.
                process.kill()
                self._process = None
                raise InstanceDied(f"{self.spec.name}: timed out after {self.spec.timeout} s")
            if not reply_line:
                self._process = None
                try:
                    status = process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    status = None
                raise InstanceDied(
                    f"{self.spec.name}: worker process died mid-invocation (exit status "
                    f"{status}), see {self.log_path}"
                )
            reply = json.loads(reply_line)
            if not reply["ok"]:
                raise InvokeError(
                    f"{self.spec.name}: {reply['errorType']}: {reply['errorMessage']}",
                    reply.get("errors"),
                )
            return Invocation(reply["result"], reply.get("errors") or {})

    def warm(self) -> None:
        """Start the instance ahead of its first event (like provisioned concurrency)."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()

    def stop(self) -> None:
        with self._lock:
            if self._process and self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._process = None


def _readline_with_timeout(process: subprocess.Popen[str], timeout: float) -> str | None:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else None
