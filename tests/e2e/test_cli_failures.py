"""`dataharvest run` with deliveries that fail, on a detached stack with the user's defaults
(no retry cap: persistence's queue keeps its 5400 s visibility timeout), in its own
DATAHARVEST_HOME: a delivery failing on every attempt (the database refuses connections) is
reported and the command stops waiting; a persistence worker killed mid-invocation is retried
after a few seconds and the run completes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psycopg
import pytest
from outage import database_outage
from test_cli import EXAMPLES, cli

# The CLI starts its own local stack: these need one as much as integration tests do.
pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CLIENT = "acme-bank"
ACCOUNTS = EXAMPLES / CLIENT / "accounts_20240102.csv"
PERSIST = "dataharvest-persistence-local-persist"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-failures-home")
    up = cli(home, "up", "--detach")
    assert up.returncode == 0, up.stderr
    yield home
    down = cli(home, "down")
    assert down.returncode == 0, down.stderr


def stack_state(home: Path) -> dict:
    return json.loads((home / "stack.json").read_text())


def test_a_delivery_failing_on_every_attempt_is_reported_and_run_stops_waiting(home):
    started = time.monotonic()
    with database_outage(stack_state(home)["database_url"]):
        result = cli(home, "run", str(ACCOUNTS), "--client", CLIENT, timeout=300)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 120  # not 5 x 5400 s
    assert (
        f"delivery failing: {PERSIST}: {CLIENT}/accounts_20240102.csv failed (attempt 1 of 5): "
        "OperationalError: " in result.stderr
    )
    # The persistence queue's visibility timeout, 5400 s, less the seconds since the failure.
    assert re.search(r"retrying in 5[34]\d\d s", result.stderr), result.stderr
    assert "stopped waiting after" in result.stderr
    assert "the only work left is 1 failing delivery(ies) waiting for a retry" in result.stderr
    # What a user does next once the database is back: here, drop the delivery instead of
    # waiting 5400 s for its retry, so the next test starts from a quiet stack.
    state = stack_state(home)
    sqs = boto3.client(
        "sqs",
        endpoint_url=state["endpoint_url"],
        region_name=state["region"],
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    sqs.purge_queue(
        QueueUrl=sqs.get_queue_url(QueueName="dataharvest-local-persistence")["QueueUrl"]
    )


def _worker_pids(stack_pid: int, service: str, handler: str) -> list[int]:
    """The worker processes of one function (a service may have several: persistence has the
    upload, chunk and retention functions), named by its service folder and handler."""
    listing = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(stack_pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    pids = []
    for line in listing.splitlines():
        pid, *args = line.split()
        if (
            "dataharvest_local.worker" in args
            and args[-2].endswith(f"/services/{service}")
            and args[-1] == handler
        ):
            pids.append(int(pid))
    return pids


def test_a_worker_killed_mid_invocation_is_retried_after_a_few_seconds(home):
    # Another client: the first test left its delivery hidden for 5400 s.
    client = "crash-bank"
    state = stack_state(home)
    with psycopg.connect(state["database_url"]) as blocker:
        # Persistence waits on this lock mid-invocation until the worker is killed.
        blocker.execute("LOCK TABLE audit.file_loads IN ACCESS EXCLUSIVE MODE")
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
        env["DATAHARVEST_HOME"] = str(home)
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataharvest_local.cli",
                "run",
                str(ACCOUNTS),
                "--client",
                client,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not blocker.execute(
            "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'audit.file_loads'::regclass"
        ).fetchone():
            assert time.monotonic() < deadline, "persistence never reached the lock"
            assert run.poll() is None, run.communicate()
            time.sleep(0.1)
        [pid] = _worker_pids(state["pid"], "persistence", "handler.handler")
        os.kill(pid, signal.SIGKILL)
        blocker.rollback()
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert (
        f"delivery failing: {PERSIST}: {client}/accounts_20240102.csv crashed (attempt 1 of 5): "
        f"{PERSIST}: worker process died mid-invocation (exit status -9)" in stderr
    )
    assert re.search(r"exit status -9\), see \S+; retrying in [0-5] s", stderr), stderr
    assert "quiet after" in stderr
