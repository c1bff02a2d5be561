"""Database roles per service, and row-level security for the partner API.

Until now every function connected as the owner of every table. Now (docs/DECISIONS.md,
"Database roles per service"):

- One NOLOGIN group role per service holds that service's grants, and one LOGIN role per
  service (`<group>_fn`, no password: IAM authentication in the cloud, a password set by the
  local stack locally) is a member of it. Objects a login role creates belong to its group
  (`ALTER ROLE ... SET role`).
- persistence owns raw storage (it creates, attaches, detaches and drops the partitions of
  raw_store) and writes the load rows of audit; it reads the per-client settings.
- each transformer reads raw, writes its own etl tables and its audit rows (transformer_runs,
  and data_quality_issues for the two that report issues); the partner publisher reads the
  outputs it sends; the lake exporter reads everything and records its runs; the API reads.
- Row-level security on every client-keyed table the API reads: the services (members of
  `dataharvest_service`) see every row, `dataharvest_api` only the rows whose client_id equals
  the session setting `dataharvest.client_id` (none when unset). The views become
  security_invoker views, so the policies of their tables apply to the querying role.
- Migrations, the CLI and admin paths stay on the owner role.

Roles are cluster-wide: upgrade creates them only when missing, downgrade drops them only when
no other database still holds their privileges.

Revision ID: 0010_service_roles
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0010_service_roles"
down_revision = "0006"
branch_labels = None
depends_on = None

SERVICE = "dataharvest_service"  # every internal service: sees every row under RLS
API = "dataharvest_api"

RAW = ("clients", "portfolios", "accounts", "transactions")
RAW_VIEWS = tuple(f"raw.{e}" for e in RAW)
RAW_STORE = tuple(f"raw_store.{e}" for e in RAW)
LOAD_AUDIT = ("audit.file_loads", "audit.rejections", "audit.load_chunks", "audit.chunk_rejections")
ETL_TABLES = (
    "etl.portfolio_links",
    "etl.portfolio_deposits",
    "etl.portfolio_transaction_counts",
    "etl.client_tax_summary",
    "etl.partner_messages",
    "etl.partner_message_revisions",
)
# Reading raw: the views and, as they are security_invoker views, what they read.
READ_RAW = (*RAW_VIEWS, *RAW_STORE, "audit.file_loads")

# transformer role -> (its own etl table, writes data quality issues, etl tables it reads)
TRANSFORMERS = {
    "dataharvest_relationship_transformer": ("etl.portfolio_links", True, ()),
    # These three start from the linked portfolios (the relationship transformer's output).
    "dataharvest_transaction_transformer": (
        "etl.portfolio_transaction_counts",
        True,
        ("etl.portfolio_links",),
    ),
    "dataharvest_sum_deposit_transformer": (
        "etl.portfolio_deposits",
        False,
        ("etl.portfolio_links",),
    ),
    "dataharvest_tax_transformer": ("etl.client_tax_summary", False, ("etl.portfolio_links",)),
}


def _grants() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    grants: dict[str, list[tuple[str, tuple[str, ...]]]] = {
        "dataharvest_persistence": [
            ("SELECT", (*RAW_VIEWS, "config.client_settings")),
            ("SELECT, INSERT, UPDATE, DELETE", LOAD_AUDIT),
        ],
        "dataharvest_partner_publisher": [
            ("SELECT", (*READ_RAW, *ETL_TABLES, "etl.portfolio_summary", "audit.rejections")),
            ("SELECT", ("audit.data_quality_issues",)),
            ("SELECT, INSERT, UPDATE, DELETE", ("etl.partner_messages",)),
            ("SELECT, INSERT, UPDATE, DELETE", ("etl.partner_message_revisions",)),
            ("SELECT, INSERT", ("audit.transformer_runs",)),
        ],
        "dataharvest_lake_exporter": [
            ("SELECT", (*READ_RAW, *ETL_TABLES, "etl.portfolio_summary")),
            ("SELECT", ("audit.rejections", "audit.data_quality_issues")),
            ("SELECT, INSERT", ("audit.transformer_runs",)),
        ],
        API: [
            ("SELECT", (*READ_RAW, *ETL_TABLES, "etl.portfolio_summary")),
            ("SELECT", ("audit.rejections", "audit.data_quality_issues")),
            ("SELECT", ("audit.transformer_runs",)),
        ],
    }
    for role, (table, issues, reads) in TRANSFORMERS.items():
        grants[role] = [
            ("SELECT", (*READ_RAW, *reads)),
            ("SELECT, INSERT, UPDATE, DELETE", (table,)),
            ("SELECT, INSERT", ("audit.transformer_runs",)),
        ]
        if issues:
            grants[role].append(("SELECT, INSERT, DELETE", ("audit.data_quality_issues",)))
    return grants


SERVICES = (
    "dataharvest_persistence",
    *TRANSFORMERS,
    "dataharvest_partner_publisher",
    "dataharvest_lake_exporter",
)
GROUPS = (*SERVICES, API)

# Client-keyed tables under row-level security.
RLS_TABLES = (
    *RAW_STORE,
    *ETL_TABLES,
    "audit.file_loads",
    "audit.rejections",
    "audit.data_quality_issues",
    "audit.transformer_runs",
)
INVOKER_VIEWS = (*RAW_VIEWS, "etl.portfolio_summary")

CREATE_ROLE = """
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {role} NOLOGIN;
    END IF;
END
$roles$;
"""

CREATE_LOGIN = """
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') THEN
        CREATE ROLE {login} LOGIN IN ROLE {role};
    END IF;
    -- RDS: IAM authentication instead of a password.
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO {login};
    END IF;
END
$roles$;
ALTER ROLE {login} SET role = '{role}';
"""

# Drops `role` (and its login role, if any) unless another database of the cluster still
# holds privileges or objects of the group: roles are shared by every database of the cluster
# (the migration tests run in a second database beside the stack's).
DROP_ROLE = """
DO $roles$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') AND NOT EXISTS (
        SELECT FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
        WHERE r.rolname IN ('{role}', '{login}') AND d.dbid <> (
            SELECT oid FROM pg_database WHERE datname = current_database())
    ) THEN
        DROP ROLE IF EXISTS {login};
        DROP ROLE {role};
    END IF;
END
$roles$;
"""


def upgrade() -> None:
    op.execute(CREATE_ROLE.format(role=SERVICE))
    for role in GROUPS:
        op.execute(CREATE_ROLE.format(role=role))
        op.execute(CREATE_LOGIN.format(role=role, login=f"{role}_fn"))
        # The owner manages what the group owns (RDS: the master user is no superuser).
        op.execute(f"GRANT {role} TO CURRENT_USER")
    for role in SERVICES:
        op.execute(f"GRANT {SERVICE} TO {role}")
    op.execute(f"GRANT USAGE ON SCHEMA raw, raw_store, etl, audit, config TO {', '.join(GROUPS)}")
    for role, grants in _grants().items():
        for privileges, tables in grants:
            op.execute(f"GRANT {privileges} ON {', '.join(tables)} TO {role}")
    writers = ", ".join(r for r in SERVICES if r != "dataharvest_lake_exporter")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit, etl TO {writers}")
    op.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit TO dataharvest_lake_exporter")
    # persistence creates and drops the partitions of raw storage: it owns raw_store.
    op.execute("GRANT CREATE ON SCHEMA raw_store TO dataharvest_persistence")
    op.execute("""
DO $owner$
DECLARE t record;
BEGIN
    FOR t IN SELECT c.oid::regclass AS name FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'raw_store' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO dataharvest_persistence', t.name);
    END LOOP;
END
$owner$;
""")
    for view in INVOKER_VIEWS:
        op.execute(f"ALTER VIEW {view} SET (security_invoker = true)")
    for table in RLS_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY services ON {table} TO {SERVICE} USING (true) WITH CHECK (true)")
        op.execute(
            f"CREATE POLICY partner ON {table} FOR SELECT TO {API} "
            "USING (client_id = current_setting('dataharvest.client_id', true))"
        )


def downgrade() -> None:
    for table in RLS_TABLES:
        op.execute(f"DROP POLICY partner ON {table}")
        op.execute(f"DROP POLICY services ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for view in INVOKER_VIEWS:
        op.execute(f"ALTER VIEW {view} RESET (security_invoker)")
    for role in (*GROUPS, *(f"{r}_fn" for r in GROUPS), SERVICE):
        op.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        op.execute(f"DROP OWNED BY {role}")
    for role in GROUPS:
        op.execute(DROP_ROLE.format(role=role, login=f"{role}_fn"))
    op.execute(DROP_ROLE.format(role=SERVICE, login=f"{SERVICE}_fn"))
