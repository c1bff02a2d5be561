"""Per-client inflation limits: how far an upload may inflate before it is rejected whole.

A small gzip can inflate to gigabytes (a gzip bomb); without a bound the persistence function
streams it until it times out, and the retries do the same. `max_inflated_bytes` bounds the
file's size after inflation (20 GiB by default), `max_inflation_ratio` the inflated bytes per
compressed byte (100:1 by default; real CSV rarely passes 20:1).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE config.client_settings
    ADD COLUMN max_inflated_bytes bigint NOT NULL DEFAULT 21474836480
        CHECK (max_inflated_bytes > 0),
    ADD COLUMN max_inflation_ratio numeric NOT NULL DEFAULT 100
        CHECK (max_inflation_ratio >= 1);
"""

DOWNGRADE = """
ALTER TABLE config.client_settings
    DROP COLUMN max_inflated_bytes,
    DROP COLUMN max_inflation_ratio;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
