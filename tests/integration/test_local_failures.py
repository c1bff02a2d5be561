"""The local runner with failing deliveries (issue 12, parts 3 and 4): a poisoned message is
reported (key, attempt, error) and the wait stops once it is the only work left; a crashed
worker's messages come back after a short delay instead of the queue's visibility timeout.

The faulty service (tests/fixtures/isolated/faulty) runs on its own runner against the
session's AWS endpoint, without the session's 1 s retry cap: its queues keep their visibility
timeouts (360 s and 5400 s), as a user's stack does."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3
import pytest

from dataharvest_local import slsconfig
from dataharvest_local.mappings import CRASH_RETRY_S
from dataharvest_local.runner import Runner

pytestmark = pytest.mark.integration

FAULTY = Path(__file__).parents[1] / "fixtures" / "isolated" / "faulty" / "serverless.yml"


@pytest.fixture(scope="module")
def faulty(local_stack, tmp_path_factory):
    stack = local_stack.provisioner.provision(
        slsconfig.load(FAULTY, local_stack.stage, local_stack.region)
    )
    base_env = {**local_stack.info.client_environment(), "DATAHARVEST_HOME": str(local_stack.home)}
    runner = Runner(local_stack.provisioner, tmp_path_factory.mktemp("faulty-logs"), base_env)
    runner.add_stack(stack)
    runner.start()
    yield runner
    runner.stop()


def send(queue: str, body: str) -> None:
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=f"dataharvest-local-faulty-{queue}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body)


def failures_of(runner: Runner, text: str) -> list[dict]:
    return [f for f in runner.status()["retrying"] if text in f["key"]]


def wait_for_failure(runner: Runner, text: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := failures_of(runner, text):
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no failure of {text} reported: {runner.status()}")


def test_a_poisoned_message_is_reported_and_waiting_stops_when_only_its_retry_is_left(faulty):
    body = f"poison-{uuid.uuid4().hex[:8]}"
    send("poison", body)
    started = time.monotonic()
    assert faulty.wait_settled(120, stall_after=10) == "retrying"
    assert time.monotonic() - started < 30  # not the 360 s visibility timeout
    [failure] = failures_of(faulty, body)
    retry_in = failure.pop("retry_in")
    del failure["message_id"]
    assert failure == {
        "function": "dataharvest-faulty-local-poisoned",
        "source": "sqs:dataharvest-local-faulty-poison",
        "key": body,
        "attempt": 1,
        "max_attempts": 5,
        "error": f"ValueError: {body} fails on every delivery",
        "crashed": False,
    }
    assert 300 < retry_in <= 360
    # Strictly speaking the stack is not quiet: the retry is still to come.
    assert faulty.wait_settled(3) == "busy"
    # Purged (as a user would after reading the report), nothing is left to wait for.
    sqs = boto3.client("sqs")
    sqs.purge_queue(
        QueueUrl=sqs.get_queue_url(QueueName="dataharvest-local-faulty-poison")["QueueUrl"]
    )
    assert faulty.wait_settled(30) == "quiet"


def test_a_crashed_invocation_comes_back_after_a_short_delay(faulty, tmp_path):
    marker = tmp_path / "crashed"
    send("crash", str(marker))
    started = time.monotonic()
    failure = wait_for_failure(faulty, str(marker))
    assert marker.exists()  # the first delivery ran and killed its worker
    assert failure["crashed"] is True
    assert failure["attempt"] == 1
    assert failure["error"].startswith(
        "dataharvest-faulty-local-crashing: worker process died mid-invocation (exit status 137)"
    )
    assert failure["retry_in"] <= CRASH_RETRY_S
    # The retry succeeds on a fresh worker, long before the queue's 5400 s visibility timeout.
    assert faulty.wait_settled(60, stall_after=10) == "quiet", (
        faulty.status(),
        [m.pending() for m in faulty.mappings],
    )
    assert marker.with_suffix(".done").exists()
    assert time.monotonic() - started < 30
    assert failures_of(faulty, str(marker)) == []
