"""Initial schema: raw inputs with lineage, etl outputs, audit trail, per-client config.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Lineage columns every raw row carries (docs/SPEC.md §4.1).
LINEAGE = """
    client_id      text    NOT NULL,
    business_date  date    NOT NULL,
    source_key     text    NOT NULL,
    source_version text    NOT NULL,
    line_number    integer NOT NULL,
    record_id      bigint  NOT NULL,
"""

UPGRADE = f"""
CREATE SCHEMA raw;
CREATE SCHEMA etl;
CREATE SCHEMA audit;
CREATE SCHEMA config;

CREATE TABLE config.client_settings (
    client_id        text PRIMARY KEY,
    max_reject_ratio numeric NOT NULL DEFAULT 0.10
                     CHECK (max_reject_ratio >= 0 AND max_reject_ratio <= 1),
    header_aliases   jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE raw.clients ({LINEAGE}
    first_name         text,
    last_name          text,
    client_reference   text    NOT NULL,
    tax_free_allowance numeric NOT NULL,
    PRIMARY KEY (client_id, business_date, client_reference)
);

CREATE TABLE raw.portfolios ({LINEAGE}
    account_number      bigint NOT NULL,
    portfolio_reference text   NOT NULL,
    client_reference    text   NOT NULL,
    agent_code          text,
    PRIMARY KEY (client_id, business_date, portfolio_reference)
);

CREATE TABLE raw.accounts ({LINEAGE}
    account_number bigint  NOT NULL,
    cash_balance   numeric NOT NULL,
    currency       text    NOT NULL,
    taxes_paid     numeric NOT NULL,
    PRIMARY KEY (client_id, business_date, account_number)
);

CREATE TABLE raw.transactions ({LINEAGE}
    account_number        bigint  NOT NULL,
    transaction_reference text    NOT NULL,
    amount                numeric NOT NULL,
    keyword               text    NOT NULL,
    PRIMARY KEY (client_id, business_date, transaction_reference)
);
CREATE INDEX transactions_account_idx
    ON raw.transactions (client_id, business_date, account_number);

-- One row per processed S3 object version (or unroutable key): the load history.
CREATE TABLE audit.file_loads (
    load_id        bigserial PRIMARY KEY,
    client_id      text,
    business_date  date,
    entity         text,
    source_key     text NOT NULL,
    source_version text,
    content_sha256 text,
    status         text NOT NULL
                   CHECK (status IN ('loaded', 'rejected', 'retracted', 'unchanged', 'unroutable')),
    rows_total     integer NOT NULL DEFAULT 0,
    rows_loaded    integer NOT NULL DEFAULT 0,
    rows_rejected  integer NOT NULL DEFAULT 0,
    reason         text,
    ignored_columns text[] NOT NULL DEFAULT '{{}}',
    is_current     boolean NOT NULL DEFAULT false,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- At most one current version per input (client, entity, date).
CREATE UNIQUE INDEX file_loads_current_idx
    ON audit.file_loads (client_id, entity, business_date) WHERE is_current;
CREATE INDEX file_loads_key_idx ON audit.file_loads (source_key, source_version);

-- Rejections of the current version of each input (replaced with it).
CREATE TABLE audit.rejections (
    rejection_id   bigserial PRIMARY KEY,
    client_id      text NOT NULL,
    business_date  date NOT NULL,
    entity         text NOT NULL,
    source_key     text NOT NULL,
    source_version text NOT NULL,
    line_number    integer,
    column_name    text,
    value          text,
    reason         text NOT NULL
);
CREATE INDEX rejections_input_idx ON audit.rejections (client_id, business_date, entity);

CREATE TABLE audit.data_quality_issues (
    client_id     text NOT NULL,
    business_date date NOT NULL,
    transformer   text NOT NULL,
    issue         text NOT NULL,
    entity        text NOT NULL,
    reference     text NOT NULL,
    detail        text NOT NULL
);
CREATE INDEX data_quality_issues_idx
    ON audit.data_quality_issues (client_id, business_date, transformer);

CREATE TABLE audit.transformer_runs (
    run_id          bigserial PRIMARY KEY,
    client_id       text NOT NULL,
    business_date   date NOT NULL,
    transformer     text NOT NULL,
    action          text NOT NULL CHECK (action IN ('APPLY', 'RETRACT')),
    idempotency_key text NOT NULL,
    input_versions  jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    outcome         text NOT NULL CHECK (outcome IN ('succeeded', 'stale', 'failed')),
    rows_written    integer NOT NULL DEFAULT 0,
    duration_ms     integer NOT NULL DEFAULT 0,
    error           text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A work message is applied at most once: its idempotency key succeeds once.
CREATE UNIQUE INDEX transformer_runs_once_idx
    ON audit.transformer_runs (idempotency_key) WHERE outcome = 'succeeded';

-- Transformer outputs: each transformer owns one table and replaces its rows per client/date.
CREATE TABLE etl.portfolio_links (
    client_id           text    NOT NULL,
    business_date       date    NOT NULL,
    portfolio_reference text    NOT NULL,
    client_reference    text    NOT NULL,
    account_number      bigint  NOT NULL,
    cash_balance        numeric NOT NULL,
    PRIMARY KEY (client_id, business_date, portfolio_reference)
);

CREATE TABLE etl.portfolio_deposits (
    client_id           text    NOT NULL,
    business_date       date    NOT NULL,
    portfolio_reference text    NOT NULL,
    sum_of_deposits     numeric NOT NULL,
    PRIMARY KEY (client_id, business_date, portfolio_reference)
);

CREATE TABLE etl.portfolio_transaction_counts (
    client_id              text    NOT NULL,
    business_date          date    NOT NULL,
    portfolio_reference    text    NOT NULL,
    number_of_transactions integer NOT NULL,
    PRIMARY KEY (client_id, business_date, portfolio_reference)
);

CREATE TABLE etl.client_tax_summary (
    client_id          text    NOT NULL,
    business_date      date    NOT NULL,
    client_reference   text    NOT NULL,
    tax_free_allowance numeric NOT NULL,
    taxes_paid         numeric NOT NULL,
    PRIMARY KEY (client_id, business_date, client_reference)
);

-- The portfolio summary exists only where every transformer that feeds it has output:
-- inner joins make a row disappear as soon as one part is retracted.
CREATE VIEW etl.portfolio_summary AS
SELECT l.client_id, l.business_date, l.portfolio_reference, l.client_reference,
       l.account_number, l.cash_balance, c.number_of_transactions, d.sum_of_deposits
FROM etl.portfolio_links l
JOIN etl.portfolio_transaction_counts c USING (client_id, business_date, portfolio_reference)
JOIN etl.portfolio_deposits d USING (client_id, business_date, portfolio_reference);

-- Messages the partner publisher sent (the FIFO queue is write-only for us).
CREATE TABLE etl.partner_messages (
    client_id        text  NOT NULL,
    business_date    date  NOT NULL,
    message_type     text  NOT NULL,
    message_group_id text  NOT NULL,
    deduplication_id text  NOT NULL,
    body             jsonb NOT NULL,
    published_at     timestamptz,
    PRIMARY KEY (client_id, business_date, deduplication_id)
);
"""

DOWNGRADE = """
DROP SCHEMA etl CASCADE;
DROP SCHEMA audit CASCADE;
DROP SCHEMA raw CASCADE;
DROP SCHEMA config CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
