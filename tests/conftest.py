"""Shared fixtures. Integration tests run against one real local stack per test session:
PostgreSQL (embedded, or DATABASE_URL) and a local AWS endpoint (moto's server, or
AWS_ENDPOINT_URL), with the runner delivering events to the real handlers. Tests isolate
themselves by client id (tenant isolation is a product rule), so nothing is reset between them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataharvest_local import slsconfig
from dataharvest_local.schedule import ScheduleClock
from dataharvest_local.stack import LocalStack, StackInfo

FIXTURE_SERVICES = Path(__file__).parent / "fixtures" / "services"
ECHO = FIXTURE_SERVICES / "echo_transformer"
CHUNK_BYTES = 64 << 10


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the local stack is an integration test, marked or not, so
    `pytest -m "not integration"` never starts one (the stack fixture starts on first use)."""
    for item in items:
        if "local_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    home = Path(os.environ.get("DATAHARVEST_TEST_HOME") or tmp_path_factory.mktemp("dh-home"))
    # Failed SQS messages come back after 1 s instead of the queue's visibility timeout, so
    # retry and dead-letter paths finish within a test (see docs/DECISIONS.md).
    services = slsconfig.service_files() + sorted(FIXTURE_SERVICES.glob("*/serverless.yml"))
    # Files over 64 KiB load in chunks (persistence/chunks.py), so tests reach that path with
    # small files; the workers inherit it. Every other test file is smaller.
    os.environ.setdefault("DATAHARVEST_CHUNK_BYTES", str(CHUNK_BYTES))
    # Scheduled functions fire only when a test moves the schedule clock
    # (tests/integration/test_local_schedule.py).
    stack = LocalStack(
        home,
        retry_delay_cap=1,
        service_files=services,
        schedule_clock=ScheduleClock(paused=True),
    )
    info = stack.start()
    saved = dict(os.environ)
    os.environ.update(info.client_environment())
    os.environ["DATAHARVEST_HOME"] = str(home)
    _clear_cached_clients()
    # The lake exporter follows every change of every item (seconds per export, eight Iceberg
    # commits): only the lake tests turn it on (tests/integration/test_lake.py), so the rest
    # of the suite does not wait for exports it does not look at.
    from dataharvest import registry

    registry.set_enabled("lake_exporter", False)
    try:
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        _clear_cached_clients()


def _clear_cached_clients() -> None:
    from dataharvest import config, metastore

    config.environment.cache_clear()
    metastore.table.cache_clear()


@pytest.fixture(scope="session")
def stack_info(local_stack: LocalStack) -> StackInfo:
    assert local_stack.info is not None
    return local_stack.info


@pytest.fixture
def client_id() -> str:
    """A fresh tenant per test: tests never see each other's data."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db(local_stack: LocalStack):
    import psycopg

    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def wait_quiet(local_stack: LocalStack):
    def wait(timeout: float = 120.0) -> None:
        assert local_stack.runner.wait_quiet(timeout), local_stack.runner.status()

    return wait


@pytest.fixture(scope="session")
def quiet_bucket(local_stack: LocalStack) -> str:
    """A versioned bucket nobody listens to: only the test itself loads from it."""
    import boto3

    name = f"persistence-direct-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": os.environ["AWS_REGION"]}
    )
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture(scope="module")
def echo_registered(local_stack: LocalStack):
    """The test-only echo transformer, its output table created and its entry registered."""
    import psycopg

    from dataharvest import registry

    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS tests")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tests.echo_outputs "
            "(client_id text, business_date date, value text)"
        )
    return registry.register(ECHO, "local")


@pytest.fixture
def inbox(stack_info):
    """An SQS queue subscribed to the stage's alarm topic (operations_support.AlarmInbox)."""
    from operations_support import AlarmInbox

    box = AlarmInbox(stack_info.export("AlarmTopicArn"))
    yield box
    box.close()
