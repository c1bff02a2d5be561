"""Database roles per service (migration 0010_service_roles): every forbidden write is refused,
and the partner API's role under row-level security sees only its own client's rows.

The local stack connects each function with its own role (security/local_roles.py), so every
other integration test proves the grants suffice; this one proves they are no wider."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from drops import upload_examples
from psycopg import errors

from dataharvest.security import roles

# Relations the partner role may read: every table, view and partition with a client_id that
# the role has SELECT on, from the catalog, so a relation a migration adds is checked too.
PARTNER_READABLE = """
SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'client_id' AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND has_table_privilege(%s, c.oid, 'SELECT')
ORDER BY 1
"""

# role -> statements it must not be allowed to run (each expects a permission error).
INSERT_RUN = (
    "INSERT INTO audit.transformer_runs (client_id, business_date, transformer, action, "
    "idempotency_key, outcome, started_at) VALUES ('x', '2024-01-02', 'x', 'APPLY', %s, "
    "'succeeded', now())"
)
INSERT_TAX = "INSERT INTO etl.client_tax_summary VALUES ('x', '2024-01-02', 'C1', 1, 1)"
INSERT_LINK = "INSERT INTO etl.portfolio_links VALUES ('x', '2024-01-02', 'P1', 'C1', 1, 1)"
INSERT_LOAD = "INSERT INTO audit.file_loads (source_key, status) VALUES ('x', 'unroutable')"
INSERT_RAW = (
    "INSERT INTO raw_store.clients (load_id, record_id, business_date, line_number, client_id, "
    "client_reference, tax_free_allowance) VALUES (1, 1, '2024-01-02', 1, 'x', 'C1', 1)"
)
# Only persistence (which encrypts) and the owner (exports, forget) may read the data keys.
READ_KEYS = "SELECT * FROM vault.client_keys"
FORBIDDEN = {
    "dataharvest_persistence": [
        INSERT_TAX,
        INSERT_RUN,
        "DELETE FROM audit.data_quality_issues",
        "UPDATE config.client_settings SET max_reject_ratio = 1",
        "CREATE TABLE etl.sneaky (x int)",
        "DELETE FROM vault.client_keys",  # forgetting is the owner's (CLI) alone
    ],
    "dataharvest_relationship_transformer": [
        READ_KEYS,
        INSERT_TAX,
        INSERT_LOAD,
        INSERT_RAW,
        "DELETE FROM audit.rejections",
        "DELETE FROM etl.portfolio_deposits",
    ],
    "dataharvest_transaction_transformer": [READ_KEYS, INSERT_LINK, INSERT_RAW, INSERT_LOAD],
    "dataharvest_sum_deposit_transformer": [
        READ_KEYS,
        INSERT_LINK,
        INSERT_RAW,
        "DELETE FROM audit.data_quality_issues",
    ],
    "dataharvest_tax_transformer": [
        READ_KEYS,
        INSERT_LINK,
        INSERT_RAW,
        "UPDATE audit.file_loads SET is_current = false",
    ],
    "dataharvest_partner_publisher": [
        READ_KEYS,
        INSERT_TAX,
        INSERT_RAW,
        "DELETE FROM audit.rejections",
    ],
    "dataharvest_lake_exporter": [
        READ_KEYS,
        INSERT_TAX,
        INSERT_LINK,
        INSERT_RAW,
        INSERT_LOAD,
        "DELETE FROM etl.partner_messages",
        "UPDATE audit.transformer_runs SET error = 'x'",
    ],
    "dataharvest_snapshot_applier": [
        READ_KEYS,
        INSERT_TAX,
        INSERT_RAW,
        INSERT_LOAD,
        "DELETE FROM snapshots.changes",
        "UPDATE config.snapshot_tables SET key_columns = '{}'",
    ],
    "dataharvest_operations": [
        READ_KEYS,
        INSERT_TAX,
        INSERT_RAW,
        INSERT_LOAD,
        "DELETE FROM audit.partner_notices",
        "UPDATE config.client_expectations SET lag_days = 0",
    ],
    # The API acts for operators: settings and its audit rows, never data.
    "dataharvest_api": [
        READ_KEYS,
        INSERT_TAX,
        INSERT_RUN,
        INSERT_RAW,
        INSERT_LOAD,
        "DELETE FROM etl.partner_messages",
        "DELETE FROM audit.api_calls",
        "UPDATE audit.api_calls SET result = 'x'",
    ],
}
# A partner's request (SET ROLE to the partner role inside the API's session): reads only.
PARTNER_FORBIDDEN = [
    READ_KEYS,
    INSERT_TAX,
    "UPDATE config.client_settings SET max_reject_ratio = 1",
    "SELECT * FROM config.client_settings",
    "SELECT * FROM audit.api_calls",
]
API = roles.role_for("dataharvest-api")


@pytest.fixture(scope="module")
def role_urls(local_stack) -> dict[str, str]:
    return local_stack.runner.service_environment.urls


def test_every_service_has_a_login_role_and_no_group_role_can_log_in(db, role_urls):
    groups = [r for r in roles.SERVICE_ROLES.values() if r]
    assert set(role_urls) == set(groups)
    rows = dict(
        db.execute(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
            ([*groups, *(roles.login_role(g) for g in groups)],),
        ).fetchall()
    )
    for group in groups:
        assert rows[group] is False
        assert rows[roles.login_role(group)] is True
        with psycopg.connect(role_urls[group]) as conn:
            # The login role acts as its group (objects it creates belong to the group).
            assert conn.execute("SELECT current_user").fetchone() == (group,)
            assert not conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = session_user"
            ).fetchone()[0]


@pytest.mark.parametrize("role", sorted(FORBIDDEN))
def test_each_forbidden_write_is_refused(role_urls, role):
    with psycopg.connect(role_urls[role], autocommit=True) as conn:
        for statement in FORBIDDEN[role]:
            with pytest.raises(errors.InsufficientPrivilege):
                params = (uuid.uuid4().hex,) if "%s" in statement else None
                conn.execute(statement, params)


def test_a_partner_request_may_only_read(role_urls):
    with psycopg.connect(role_urls[API], autocommit=True) as conn:
        for statement in PARTNER_FORBIDDEN:
            with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"SET LOCAL ROLE {roles.PARTNER_ROLE}")
                conn.execute(statement)


def test_the_api_role_reads_only_the_client_of_its_session_setting(
    stack_info, db, role_urls, wait_quiet
):
    client_a, client_b = (f"t-{uuid.uuid4().hex[:10]}" for _ in range(2))
    upload_examples(stack_info, client_a)
    upload_examples(stack_info, client_b)
    wait_quiet()
    tables = [name for (name,) in db.execute(PARTNER_READABLE, (roles.PARTNER_ROLE,))]
    # The relations the choreography writes are among them, and both clients went all the way
    # through, under the services' own roles.
    written = [
        *(f"raw.{e}" for e in ("clients", "portfolios", "accounts", "transactions")),
        "etl.portfolio_summary",
        "etl.client_tax_summary",
        "etl.partner_messages",
        "audit.file_loads",
        "audit.data_quality_issues",
    ]
    assert set(written) <= set(tables)
    for table in written:
        for client in (client_a, client_b):
            (count,) = db.execute(
                f"SELECT count(*) FROM {table} WHERE client_id = %s", (client,)
            ).fetchone()
            assert count > 0, (table, client)
    with psycopg.connect(role_urls[API]) as conn:
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {roles.PARTNER_ROLE}")
            for table in tables:
                # No setting: nothing at all.
                assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {roles.PARTNER_ROLE}")
            conn.execute(f"SELECT set_config('{roles.CLIENT_SETTING}', %s, true)", (client_a,))
            for table in tables:
                (other,) = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE client_id = %s", (client_b,)
                ).fetchone()
                assert other == 0, table
                (own,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                (expected,) = db.execute(
                    f"SELECT count(*) FROM {table} WHERE client_id = %s", (client_a,)
                ).fetchone()
                assert own == expected, table


def test_migrating_another_database_down_keeps_the_roles_this_one_uses(stack_info, role_urls):
    """Roles are cluster-wide: stepping a second database down to base must not drop the roles
    (group or login) that this database's grants and services still use."""
    from urllib.parse import urlsplit, urlunsplit

    from dataharvest_local import migrate

    name = f"roles_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(urlsplit(stack_info.database_url)._replace(path=f"/{name}"))
    with psycopg.connect(stack_info.database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        migrate.upgrade(url)
        migrate.downgrade(url, "base")
    finally:
        with psycopg.connect(stack_info.database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    for group, role_url in role_urls.items():
        with psycopg.connect(role_url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (group,)
