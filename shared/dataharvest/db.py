"""PostgreSQL access: one connection per process, reused across warm invocations.

Connections are in autocommit mode and every unit of work runs in one explicit
`conn.transaction()` block: it commits as a whole or not at all.
"""

from __future__ import annotations

import json
import select
from functools import lru_cache

import psycopg

from dataharvest.config import Environment, environment

_connection: psycopg.Connection | None = None


@lru_cache(maxsize=4)
def _secret_database_url(secret_arn: str, host: str | None = None) -> str:
    # In the cloud the URL lives in Secrets Manager (rotated there); read once per cold start.
    import boto3

    from dataharvest.security.connection import build_url

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    value = json.loads(secret["SecretString"])
    return build_url(
        value["username"],
        value["password"],
        host or value["host"],
        value.get("port", 5432),
        value.get("dbname", "dataharvest"),
    )


def database_url(config: Environment | None = None) -> str:
    config = config or environment()
    if config.database_url:
        return config.database_url
    # A function in the cloud: its own database user, an IAM token, verified TLS.
    from dataharvest.security.connection import iam_database_url

    if config.database_user and config.database_host:
        url = iam_database_url(
            {"DATABASE_USER": config.database_user, "DATABASE_HOST": config.database_host}
        )
        assert url is not None  # DATABASE_USER is set
        return url
    if config.database_secret_arn:
        return _secret_database_url(config.database_secret_arn, config.database_host)
    raise RuntimeError(
        "no database configured: set DATABASE_URL, DATABASE_USER + DATABASE_HOST or "
        "DATABASE_SECRET_ARN"
    )


def connect(url: str | None = None) -> psycopg.Connection:
    """A new connection; callers own it and wrap their work in `conn.transaction()`."""
    return psycopg.connect(url or database_url(), autocommit=True)


def advisory_xact_lock(conn: psycopg.Connection, name: str) -> None:
    """Hold the lock called `name` until the current transaction ends, so work on one name runs
    one transaction at a time across processes; a dead session's locks go with it. The name is
    hashed to PostgreSQL's 64-bit advisory lock key."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))


def try_advisory_xact_lock(conn: psycopg.Connection, name: str) -> bool:
    """`advisory_xact_lock` without waiting: whether this transaction now holds it."""
    row = conn.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (name,)
    ).fetchone()
    return row is not None and bool(row[0])


def advisory_lock(conn: psycopg.Connection, name: str) -> None:
    """Take the lock called `name` for the session (across transactions) until
    `advisory_unlock`; a dead session's locks go with it. Same key as `advisory_xact_lock`."""
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (name,))


def advisory_unlock(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))


def shared_connection() -> psycopg.Connection:
    """The process-wide connection, reopened when the server closed it."""
    global _connection
    if _connection is None or _stale(_connection):
        if _connection is not None:
            _connection.close()
        _connection = connect()
    return _connection


def _stale(conn: psycopg.Connection) -> bool:
    """Whether the connection is known dead, or the server has closed it since its last use.

    An idle connection has nothing to read: when its socket is readable, the server (or the
    proxy) has sent its goodbye (a restart, a failover, an idle timeout, pg_terminate_backend).
    Checking costs no round trip, and the first request after such a cut then runs on a new
    connection instead of failing on the old one."""
    if conn.closed or conn.broken:
        return True
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def shared_connection_lost() -> bool:
    """Whether the process-wide connection died under its last use (the server or the proxy
    cut it: restart, failover, idle timeout); the next `shared_connection()` opens a new one."""
    return _connection is not None and (_connection.closed or _connection.broken)
