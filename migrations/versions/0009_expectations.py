"""Operations (issue 17): per-client late-file expectations and alarm thresholds, the late
inputs found by the checker, and the partner notices (error messages sent outside the
publisher: whole-file rejections, late inputs, unroutable uploads), each once per cause.

Revision ID: 0009_expectations
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0009_expectations"
down_revision = "0008_api_calls"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE config.client_expectations (
    client_id text PRIMARY KEY,
    entities text[] NOT NULL CHECK (cardinality(entities) > 0),
    due_by time NOT NULL,
    timezone text NOT NULL,
    -- ISO weekdays of the business dates that are expected (1 = Monday ... 7 = Sunday).
    weekdays smallint[] NOT NULL CHECK (cardinality(weekdays) > 0),
    -- The input of business date D is due at due_by on D + lag_days, local time.
    lag_days integer NOT NULL DEFAULT 0 CHECK (lag_days BETWEEN 0 AND 31),
    -- Business dates before this one are never reported late (no history before the setting).
    effective_from date NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE config.client_alarms (
    client_id text PRIMARY KEY,
    -- A file whose share of rejected rows is above this raises the rejection-ratio alarm.
    reject_ratio_threshold numeric NOT NULL
        CHECK (reject_ratio_threshold >= 0 AND reject_ratio_threshold <= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit.late_inputs (
    client_id text NOT NULL,
    entity text NOT NULL,
    business_date date NOT NULL,
    due_at timestamptz NOT NULL,
    detected_at timestamptz NOT NULL,
    cleared_at timestamptz,
    PRIMARY KEY (client_id, entity, business_date)
);

CREATE TABLE audit.partner_notices (
    notice_id bigserial PRIMARY KEY,
    client_id text NOT NULL,
    business_date date NOT NULL,
    -- What the notice is about, e.g. 'file_rejected/accounts/<version>', 'late/accounts/<date>':
    -- one notice per client and cause, whatever the number of deliveries or runs.
    cause text NOT NULL,
    message_type text NOT NULL DEFAULT 'error_message',
    deduplication_id text NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    UNIQUE (client_id, cause)
);
CREATE INDEX partner_notices_unpublished ON audit.partner_notices (client_id)
    WHERE published_at IS NULL;
CREATE INDEX partner_notices_by_date ON audit.partner_notices (client_id, business_date);
"""

DOWNGRADE = """
DROP TABLE audit.partner_notices;
DROP TABLE audit.late_inputs;
DROP TABLE config.client_alarms;
DROP TABLE config.client_expectations;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
