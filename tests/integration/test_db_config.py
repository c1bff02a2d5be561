"""In the cloud the database URL comes from the Secrets Manager secret, with the host replaced by
the RDS Proxy endpoint when DATABASE_HOST is set (checked against the local AWS endpoint)."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from dataharvest import db
from dataharvest import db as db_module
from dataharvest.config import read_environment

pytestmark = pytest.mark.integration


@pytest.fixture
def secret_arn(local_stack) -> str:
    secret = {
        "username": "app",
        "password": "s3cret",
        "host": "db-instance.internal",
        "port": 5432,
        "dbname": "dataharvest",
    }
    response = boto3.client("secretsmanager").create_secret(
        Name=f"dataharvest-test-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret)
    )
    return response["ARN"]


@pytest.fixture
def ca_bundle(tmp_path, monkeypatch) -> str:
    path = tmp_path / "rds-global-bundle.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("DATABASE_CA_BUNDLE", str(path))
    return str(path)


def test_url_from_the_secret_uses_the_proxy_endpoint_when_given(secret_arn, ca_bundle):
    direct = read_environment({"DATABASE_SECRET_ARN": secret_arn})
    proxied = read_environment(
        {"DATABASE_SECRET_ARN": secret_arn, "DATABASE_HOST": "proxy.endpoint.internal"}
    )
    # TLS verified against the RDS CA bundle (issue 18), not merely required.
    tls = f"sslmode=verify-full&sslrootcert={ca_bundle}"
    assert db.database_url(direct) == (
        f"postgresql://app:s3cret@db-instance.internal:5432/dataharvest?{tls}"
    )
    assert db.database_url(proxied) == (
        f"postgresql://app:s3cret@proxy.endpoint.internal:5432/dataharvest?{tls}"
    )


def test_a_generated_password_is_percent_encoded(local_stack, ca_bundle):
    secret = {"username": "app", "password": "a/b@c:d&e=f", "host": "h", "dbname": "d"}
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"dataharvest-test-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret)
    )["ARN"]
    url = db.database_url(read_environment({"DATABASE_SECRET_ARN": arn}))
    assert url.startswith("postgresql://app:a%2Fb%40c%3Ad%26e%3Df@h:5432/d?")


def test_database_url_wins_over_the_secret(secret_arn):
    settings = read_environment(
        {"DATABASE_URL": "postgresql://local/db", "DATABASE_SECRET_ARN": secret_arn}
    )
    assert db.database_url(settings) == "postgresql://local/db"


def test_the_shared_connection_is_replaced_once_the_server_cut_it(local_stack, db):
    first = db_module_connection()
    (pid,) = first.execute("SELECT pg_backend_pid()").fetchone()
    # A restart, a failover or an idle timeout: the server ends the idle session.
    assert db.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    wait_for(
        lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    )

    second = db_module_connection()

    assert second is not first and first.closed
    assert second.execute("SELECT pg_backend_pid()").fetchone() != (pid,)
    # A live idle connection is kept.
    assert db_module_connection() is second


def db_module_connection():
    return db_module.shared_connection()


def wait_for(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
