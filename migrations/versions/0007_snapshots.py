"""Snapshot deltas (issue 15): registered snapshot tables, their exports, change log, publish
cursor, and the schemas that hold each table's current state and its applied replica.

- `config.snapshot_tables`: one row per (client, table): key columns, columns with types,
  delimiter, header.
- `snapshots.table_state`: per (client, table) the last applied export version, the last
  change sequence handed out, and the publish cursor (the last sequence sent to the stream).
- `snapshots.exports`: one row per received export object version: applied, skipped or
  rejected, with the reason and the counts.
- `snapshots.changes`: the change log (op, key, old, new, export version, sequence).
- Schemas `snapshot_state` (the current state of each table, text as exported plus a row
  hash), `replica_store` (the applied state with tombstones) and `replica` (a view per table
  over replica_store without the tombstones); their per-table tables are created when a
  table is registered (dataharvest/snapshots/tables.py).

Revision ID: 0007_snapshots
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0007_snapshots"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA IF NOT EXISTS snapshots;
CREATE SCHEMA IF NOT EXISTS snapshot_state;
CREATE SCHEMA IF NOT EXISTS replica_store;
CREATE SCHEMA IF NOT EXISTS replica;

CREATE TABLE config.snapshot_tables (
    client_id text NOT NULL,
    table_name text NOT NULL,
    key_columns text[] NOT NULL CHECK (cardinality(key_columns) >= 1),
    columns jsonb NOT NULL,
    delimiter text NOT NULL DEFAULT ',' CHECK (length(delimiter) = 1),
    header boolean NOT NULL DEFAULT true,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, table_name)
);

CREATE TABLE snapshots.table_state (
    client_id text NOT NULL,
    table_name text NOT NULL,
    last_version text COLLATE "C",
    last_sequence bigint NOT NULL DEFAULT 0,
    published_sequence bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, table_name),
    CHECK (published_sequence <= last_sequence)
);

CREATE TABLE snapshots.exports (
    export_id bigserial PRIMARY KEY,
    client_id text NOT NULL,
    table_name text NOT NULL,
    export_version text COLLATE "C" NOT NULL,
    source_key text NOT NULL,
    source_version text NOT NULL,
    business_date date,
    status text NOT NULL CHECK (status IN ('applied', 'skipped', 'rejected')),
    reason text,
    rows_in_export bigint,
    inserts bigint,
    updates bigint,
    deletes bigint,
    unchanged bigint,
    first_sequence bigint,
    last_sequence bigint,
    received_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    UNIQUE (client_id, table_name, source_key, source_version)
);
CREATE INDEX exports_by_version ON snapshots.exports (client_id, table_name, export_version);

CREATE TABLE snapshots.changes (
    client_id text NOT NULL,
    table_name text NOT NULL,
    sequence bigint NOT NULL,
    export_version text COLLATE "C" NOT NULL,
    op text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    key jsonb NOT NULL,
    old_values jsonb,
    new_values jsonb,
    PRIMARY KEY (client_id, table_name, sequence)
);
CREATE INDEX changes_by_version ON snapshots.changes (client_id, table_name, export_version);
"""

DOWNGRADE = """
DROP SCHEMA replica CASCADE;
DROP SCHEMA replica_store CASCADE;
DROP SCHEMA snapshot_state CASCADE;
DROP SCHEMA snapshots CASCADE;
DROP TABLE config.snapshot_tables;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
