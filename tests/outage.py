"""A real database outage for tests: PostgreSQL refuses connections and the open ones are cut."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


@contextmanager
def database_outage(database_url: str) -> Iterator[None]:
    """The database refuses every connection, and the open ones are cut, until the block
    ends: what the services see while PostgreSQL (or the proxy in front of it) is down."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    admin_url = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
