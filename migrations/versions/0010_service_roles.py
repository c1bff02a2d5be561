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
- persistence also ingests snapshot exports (the snapshots and snapshot_state schemas; it
  creates no snapshot table: registering one is the owner's, and `snapshots/tables.py` grants
  each new table to the services that use it) and records partner notices and late arrivals;
  the snapshot applier writes the replicas; the operations service runs the late checker.
- The Data API's function (`dataharvest_api`) acts for operators: it reads every client,
  edits client settings and records `audit.api_calls`. For a partner's request it switches, in
  that request's transaction, to `dataharvest_api_partner` (`SET LOCAL ROLE`, NOLOGIN, reads
  only) with `dataharvest.client_id` bound from the verified token.
- Row-level security on every client-keyed table the API reads: the services (members of
  `dataharvest_service`, the API's operator role among them) see every row,
  `dataharvest_api_partner` only the rows whose client_id equals the session setting
  `dataharvest.client_id` (none when unset). The views become security_invoker views, so the
  policies of their tables apply to the querying role.
- Migrations, the CLI and admin paths stay on the owner role.

Roles are cluster-wide: upgrade creates them only when missing, downgrade drops them only when
no other database still holds their privileges.

Revision ID: 0010_service_roles
Revises: 0009_expectations
Create Date: 2026-12-01
"""

from alembic import op

revision = "0010_service_roles"
down_revision = "0009_expectations"
branch_labels = None
depends_on = None

SERVICE = "dataharvest_service"  # every internal service: sees every row under RLS
API = "dataharvest_api"  # the API function: operator rights
PARTNER = "dataharvest_api_partner"  # a partner's request: reads only, its own client

RAW = ("clients", "portfolios", "accounts", "transactions")
RAW_VIEWS = tuple(f"raw.{e}" for e in RAW)
RAW_STORE = tuple(f"raw_store.{e}" for e in RAW)
LOAD_AUDIT = ("audit.file_loads", "audit.rejections", "audit.load_chunks", "audit.chunk_rejections")
SNAPSHOT_LOG = ("snapshots.table_state", "snapshots.exports", "snapshots.changes")
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
            ("SELECT", (*RAW_VIEWS, "config.client_settings", "config.snapshot_tables")),
            ("SELECT", ("config.client_alarms", "config.client_expectations")),
            ("SELECT, INSERT, UPDATE, DELETE", LOAD_AUDIT),
            ("SELECT, INSERT, UPDATE, DELETE", SNAPSHOT_LOG),
            ("SELECT, INSERT, UPDATE", ("audit.partner_notices",)),
            ("SELECT, UPDATE", ("audit.late_inputs",)),
        ],
        "dataharvest_snapshot_applier": [
            # resync re-applies the change log; the replica tables are granted per table.
            ("SELECT", ("config.snapshot_tables", "snapshots.changes")),
        ],
        "dataharvest_operations": [
            ("SELECT", ("audit.file_loads", "config.client_settings")),
            ("SELECT", ("config.client_expectations", "config.client_alarms")),
            ("SELECT, INSERT, UPDATE", ("audit.late_inputs", "audit.partner_notices")),
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
        PARTNER: [
            ("SELECT", (*READ_RAW, *ETL_TABLES, "etl.portfolio_summary")),
            ("SELECT", ("audit.rejections", "audit.data_quality_issues")),
            ("SELECT", ("audit.transformer_runs", "audit.partner_notices")),
        ],
        # Besides what a partner may read (it is a member of PARTNER).
        API: [
            ("SELECT, INSERT, UPDATE, DELETE", ("config.client_settings",)),
            ("SELECT", ("config.snapshot_tables", "config.client_alarms")),
            ("SELECT", ("config.client_expectations", "audit.late_inputs")),
            ("INSERT", ("audit.api_calls",)),
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
    "dataharvest_snapshot_applier",
    "dataharvest_operations",
    API,
)
GROUPS = SERVICES

# Client-keyed tables under row-level security.
RLS_TABLES = (
    *RAW_STORE,
    *ETL_TABLES,
    "audit.file_loads",
    "audit.rejections",
    "audit.data_quality_issues",
    "audit.transformer_runs",
    "audit.partner_notices",
    "audit.late_inputs",
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
    op.execute(CREATE_ROLE.format(role=PARTNER))
    op.execute(f"GRANT {PARTNER} TO CURRENT_USER, {API}")
    for role in SERVICES:
        op.execute(f"GRANT {SERVICE} TO {role}")
    everyone = ", ".join((*GROUPS, PARTNER))
    op.execute(f"GRANT USAGE ON SCHEMA raw, raw_store, etl, audit, config TO {everyone}")
    op.execute("GRANT USAGE ON SCHEMA snapshots, snapshot_state TO dataharvest_persistence")
    op.execute(
        "GRANT USAGE ON SCHEMA snapshots, replica_store, replica TO dataharvest_snapshot_applier"
    )
    # An operator's redrive of the applier's failures re-applies the change logs (resync).
    op.execute(f"GRANT dataharvest_snapshot_applier TO {API}")
    for role, grants in _grants().items():
        for privileges, tables in grants:
            op.execute(f"GRANT {privileges} ON {', '.join(tables)} TO {role}")
    writers = ", ".join(r for r in SERVICES if r != "dataharvest_lake_exporter")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit, etl TO {writers}")
    op.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit TO dataharvest_lake_exporter")
    op.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA snapshots TO dataharvest_persistence")
    # Snapshot tables registered before this revision (later ones: snapshots/tables.py).
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA snapshot_state "
        "TO dataharvest_persistence"
    )
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA replica_store "
        "TO dataharvest_snapshot_applier"
    )
    op.execute("GRANT SELECT ON ALL TABLES IN SCHEMA replica TO dataharvest_snapshot_applier")
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
            f"CREATE POLICY partner ON {table} FOR SELECT TO {PARTNER} "
            "USING (client_id = current_setting('dataharvest.client_id', true))"
        )


def downgrade() -> None:
    for table in RLS_TABLES:
        op.execute(f"DROP POLICY partner ON {table}")
        op.execute(f"DROP POLICY services ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for view in INVOKER_VIEWS:
        op.execute(f"ALTER VIEW {view} RESET (security_invoker)")
    for role in (*GROUPS, *(f"{r}_fn" for r in GROUPS), PARTNER, SERVICE):
        op.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        op.execute(f"DROP OWNED BY {role}")
    for role in GROUPS:
        op.execute(DROP_ROLE.format(role=role, login=f"{role}_fn"))
    op.execute(DROP_ROLE.format(role=PARTNER, login=f"{PARTNER}_fn"))
    op.execute(DROP_ROLE.format(role=SERVICE, login=f"{SERVICE}_fn"))
