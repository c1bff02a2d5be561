"""Raw inputs in partitioned storage: one table per load, swapped in whole, aged out whole.

Until now every entity was one table with a primary key and a secondary index maintained row
by row, five lineage columns on every row, and a version replace was a mass DELETE plus row
inserts. Now (docs/DECISIONS.md, "Raw storage"):

- `raw_store.<entity>` is partitioned by business_date (RANGE, a partition per day), each day
  by client_id (LIST), each client's day by (load_id, line_number) (RANGE). A leaf holds the
  rows of one load (or of one chunk of a large load): written once in bulk into a table of its
  own, analyzed, and attached in the load's final transaction, where the previous version's
  leaves are detached and dropped. Nothing is maintained row by row; there are no indexes (a
  reader of one client and date is pruned to that load's leaves and scans them whole).
- Lineage lives once per load in audit.file_loads; `raw.<entity>` is a view that adds
  source_key and source_version from there (a LEFT JOIN on its primary key, which the planner
  removes when a query does not ask for them).
- config.client_settings.retention_days (default 400): `dataharvest retention apply` retracts
  the inputs of older business dates and drops their partitions.

Existing rows move into the new layout, one leaf per current load; downgrade moves them back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ENTITY_COLUMNS = {
    # 8-byte columns first, then 4-byte, then variable width: no alignment padding.
    "clients": (
        "load_id bigint NOT NULL, record_id bigint NOT NULL, business_date date NOT NULL, "
        "line_number integer NOT NULL, client_id text NOT NULL, first_name text, "
        "last_name text, client_reference text NOT NULL, tax_free_allowance numeric NOT NULL"
    ),
    "portfolios": (
        "load_id bigint NOT NULL, record_id bigint NOT NULL, account_number bigint NOT NULL, "
        "business_date date NOT NULL, line_number integer NOT NULL, client_id text NOT NULL, "
        "portfolio_reference text NOT NULL, client_reference text NOT NULL, agent_code text"
    ),
    "accounts": (
        "load_id bigint NOT NULL, record_id bigint NOT NULL, account_number bigint NOT NULL, "
        "business_date date NOT NULL, line_number integer NOT NULL, client_id text NOT NULL, "
        "cash_balance numeric NOT NULL, currency text NOT NULL, taxes_paid numeric NOT NULL"
    ),
    "transactions": (
        "load_id bigint NOT NULL, record_id bigint NOT NULL, account_number bigint NOT NULL, "
        "business_date date NOT NULL, line_number integer NOT NULL, client_id text NOT NULL, "
        "transaction_reference text NOT NULL, amount numeric NOT NULL, keyword text NOT NULL"
    ),
}

# The view's columns: SPEC §4.1's lineage first, then the file's columns (as 0001 had them).
VIEW_COLUMNS = {
    "clients": "first_name, last_name, client_reference, tax_free_allowance",
    "portfolios": "account_number, portfolio_reference, client_reference, agent_code",
    "accounts": "account_number, cash_balance, currency, taxes_paid",
    "transactions": "account_number, transaction_reference, amount, keyword",
}

OLD_KEYS = {
    "clients": "client_reference",
    "portfolios": "portfolio_reference",
    "accounts": "account_number",
    "transactions": "transaction_reference",
}


def _view(entity: str) -> str:
    data = ", ".join(f"r.{c.strip()}" for c in VIEW_COLUMNS[entity].split(","))
    return f"""
CREATE VIEW raw.{entity} AS
SELECT r.client_id, r.business_date, l.source_key, l.source_version, r.line_number,
       r.record_id, {data}, r.load_id
FROM raw_store.{entity} r
LEFT JOIN audit.file_loads l ON l.load_id = r.load_id;
COMMENT ON VIEW raw.{entity} IS
    'Rows of the current load of each {entity} input, with lineage (storage: raw_store.{entity})';
"""


# Moves the rows of one entity's 0001 table into one leaf per current load (once, at upgrade).
MOVE_ROWS = """
DO $move$
DECLARE
    input record;
    day_part text;
    client_part text;
BEGIN
    FOR input IN
        SELECT DISTINCT r.client_id, r.business_date, f.load_id FROM raw_0001.{entity} r
        JOIN audit.file_loads f ON f.client_id = r.client_id
         AND f.business_date = r.business_date AND f.entity = '{entity}' AND f.is_current
    LOOP
        day_part := format('{entity}_%s', to_char(input.business_date, 'YYYYMMDD'));
        client_part := format('%s_%s', day_part, left(md5(input.client_id), 12));
        IF to_regclass(format('raw_store.%I', day_part)) IS NULL THEN
            EXECUTE format('CREATE TABLE raw_store.%I PARTITION OF raw_store.{entity} '
                'FOR VALUES FROM (%L) TO (%L) PARTITION BY LIST (client_id)',
                day_part, input.business_date, input.business_date + 1);
        END IF;
        EXECUTE format('CREATE TABLE raw_store.%I PARTITION OF raw_store.%I '
            'FOR VALUES IN (%L) PARTITION BY RANGE (load_id, line_number)',
            client_part, day_part, input.client_id);
        EXECUTE format('CREATE TABLE raw_store.%I PARTITION OF raw_store.%I '
            'FOR VALUES FROM (%s, MINVALUE) TO (%s, MINVALUE)',
            '{entity}_load_' || input.load_id, client_part, input.load_id, input.load_id + 1);
        INSERT INTO raw_store.{entity} (load_id, business_date, client_id, line_number,
                                        record_id, {columns})
        SELECT input.load_id, business_date, client_id, line_number, record_id, {columns}
        FROM raw_0001.{entity}
        WHERE client_id = input.client_id AND business_date = input.business_date;
    END LOOP;
END
$move$;
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA raw_store")
    op.execute("ALTER SCHEMA raw RENAME TO raw_0001")
    op.execute("CREATE SCHEMA raw")
    for entity, columns in ENTITY_COLUMNS.items():
        op.execute(
            f"CREATE TABLE raw_store.{entity} ({columns}) PARTITION BY RANGE (business_date)"
        )
        op.execute(_view(entity))
    for entity, columns in VIEW_COLUMNS.items():
        op.execute(MOVE_ROWS.format(entity=entity, columns=columns))
    op.execute("DROP SCHEMA raw_0001 CASCADE")
    op.execute(
        "ALTER TABLE config.client_settings ADD COLUMN retention_days integer NOT NULL "
        "DEFAULT 400 CHECK (retention_days > 0)"
    )
    # A load can be several chunks staged in parallel before one final commit: their progress.
    op.execute("""
CREATE TABLE audit.load_chunks (
    load_id       bigint  NOT NULL,
    chunk         integer NOT NULL,
    chunks        integer NOT NULL,
    client_id     text    NOT NULL,
    business_date date    NOT NULL,
    entity        text    NOT NULL,
    source_key    text    NOT NULL,
    source_version text   NOT NULL,
    byte_start    bigint  NOT NULL,
    byte_end      bigint  NOT NULL,
    first_line    integer NOT NULL,
    header        jsonb   NOT NULL,  -- the object version and the matched header
    rows_staged   integer,
    rows_rejected integer,
    staged_at     timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (load_id, chunk)
);
CREATE TABLE audit.chunk_rejections (
    load_id     bigint  NOT NULL,
    chunk       integer NOT NULL,
    line_number integer,
    position    integer NOT NULL,
    column_name text,
    value       text,
    reason      text    NOT NULL
);
CREATE INDEX chunk_rejections_load_idx ON audit.chunk_rejections (load_id, chunk);
ALTER TABLE audit.file_loads DROP CONSTRAINT file_loads_status_check;
ALTER TABLE audit.file_loads ADD CONSTRAINT file_loads_status_check CHECK (status IN
    ('loaded', 'rejected', 'retracted', 'unchanged', 'unroutable', 'staging', 'abandoned'));
""")


def downgrade() -> None:
    op.execute("""
DELETE FROM audit.file_loads WHERE status IN ('staging', 'abandoned');
ALTER TABLE audit.file_loads DROP CONSTRAINT file_loads_status_check;
ALTER TABLE audit.file_loads ADD CONSTRAINT file_loads_status_check CHECK (status IN
    ('loaded', 'rejected', 'retracted', 'unchanged', 'unroutable'));
DROP TABLE audit.chunk_rejections, audit.load_chunks;
ALTER TABLE config.client_settings DROP COLUMN retention_days;
""")
    op.execute("ALTER SCHEMA raw RENAME TO raw_0005")
    op.execute("CREATE SCHEMA raw")
    lineage = (
        "client_id text NOT NULL, business_date date NOT NULL, source_key text NOT NULL, "
        "source_version text NOT NULL, line_number integer NOT NULL, record_id bigint NOT NULL"
    )
    types = {
        "clients": "first_name text, last_name text, client_reference text NOT NULL, "
        "tax_free_allowance numeric NOT NULL",
        "portfolios": "account_number bigint NOT NULL, portfolio_reference text NOT NULL, "
        "client_reference text NOT NULL, agent_code text",
        "accounts": "account_number bigint NOT NULL, cash_balance numeric NOT NULL, "
        "currency text NOT NULL, taxes_paid numeric NOT NULL",
        "transactions": "account_number bigint NOT NULL, transaction_reference text NOT NULL, "
        "amount numeric NOT NULL, keyword text NOT NULL",
    }
    for entity, columns in types.items():
        op.execute(
            f"CREATE TABLE raw.{entity} ({lineage}, {columns}, "
            f"PRIMARY KEY (client_id, business_date, {OLD_KEYS[entity]}))"
        )
        names = (
            "client_id, business_date, source_key, source_version, line_number, record_id, "
            + VIEW_COLUMNS[entity]
        )
        op.execute(
            f"INSERT INTO raw.{entity} ({names}) SELECT {names} FROM raw_0005.{entity} "
            "WHERE source_key IS NOT NULL"
        )
    op.execute(
        "CREATE INDEX transactions_account_idx "
        "ON raw.transactions (client_id, business_date, account_number)"
    )
    op.execute("DROP SCHEMA raw_0005 CASCADE")
    op.execute("DROP SCHEMA raw_store CASCADE")
