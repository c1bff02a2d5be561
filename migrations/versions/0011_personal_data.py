"""Personal data encrypted at the field level, with crypto-shredding.

- vault.client_keys: each client's data key, wrapped by KMS (never in clear), and its key id.
- raw_store.clients / raw_store.portfolios get `personal_key_id`: the key that encrypted the
  row's personal columns (first_name, last_name; agent_code when the client's settings mark
  it); NULL when the row had none.
- config.client_settings.personal_columns: further columns ("entity.column") a client marks
  personal.
- audit.erasures: every `dataharvest client forget`.

Only persistence (which encrypts) reads and adds keys; the owner role (CLI exports, forget)
does the rest. See docs/DECISIONS.md, "Personal data".

Revision ID: 0011_personal_data
Revises: 0010_service_roles
Create Date: 2026-12-01
"""

from alembic import op

revision = "0011_personal_data"
down_revision = "0010_service_roles"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA vault;
CREATE TABLE vault.client_keys (
    client_id   text PRIMARY KEY,
    key_id      text  NOT NULL UNIQUE,
    wrapped_key bytea NOT NULL,
    kms_key_id  text  NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE audit.erasures (
    erasure_id   bigserial PRIMARY KEY,
    client_id    text NOT NULL,
    key_id       text,
    requested_by text NOT NULL,
    erased_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE raw_store.clients ADD COLUMN personal_key_id text;
ALTER TABLE raw_store.portfolios ADD COLUMN personal_key_id text;
ALTER TABLE config.client_settings
    ADD COLUMN personal_columns text[] NOT NULL DEFAULT '{}';
GRANT USAGE ON SCHEMA vault TO dataharvest_persistence;
GRANT SELECT, INSERT ON vault.client_keys TO dataharvest_persistence;
"""

DOWNGRADE = """
DROP SCHEMA vault CASCADE;
DROP TABLE audit.erasures;
ALTER TABLE raw_store.clients DROP COLUMN personal_key_id;
ALTER TABLE raw_store.portfolios DROP COLUMN personal_key_id;
ALTER TABLE config.client_settings DROP COLUMN personal_columns;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
