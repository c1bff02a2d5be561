"""Unpublished partner messages indexed in the order the publisher sends them.

The publisher takes its next chunk with `ORDER BY message_type, deduplication_id LIMIT 1000
FOR UPDATE` over the client's and date's unpublished messages. The index of 0002 found those
rows but left the order to a sort of all of them for every chunk: 0.6 s per chunk at 130,000
messages, ~40 s of sorting to publish one large drop. With the order columns in the index the
chunk is the index's first 1,000 entries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
DROP INDEX etl.partner_messages_unpublished_idx;
CREATE INDEX partner_messages_unpublished_idx
    ON etl.partner_messages (client_id, business_date, message_type, deduplication_id)
    WHERE published_at IS NULL;
"""

DOWNGRADE = """
DROP INDEX etl.partner_messages_unpublished_idx;
CREATE INDEX partner_messages_unpublished_idx
    ON etl.partner_messages (client_id, business_date) WHERE published_at IS NULL;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
