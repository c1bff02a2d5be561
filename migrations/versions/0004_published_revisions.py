"""Partner message revisions remember whether they were sent.

Until now every publisher run sent its complete message set and relied on the FIFO queue's
5-minute deduplication window to swallow the unchanged messages: a change arriving later than
that (a transactions file an hour after the other files, a corrected accounts file the next
morning) re-delivered every unchanged message to the partner. With `published_at` on the
revision, a run sends only the revisions not yet sent; unchanged messages are recorded as
published when they were first sent.

Existing revisions are marked from the messages already sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE etl.partner_message_revisions ADD COLUMN published_at timestamptz;
CREATE INDEX partner_message_revisions_deduplication_idx
    ON etl.partner_message_revisions (client_id, business_date, deduplication_id);
UPDATE etl.partner_message_revisions r
   SET published_at = m.published_at
  FROM etl.partner_messages m
 WHERE m.client_id = r.client_id AND m.business_date = r.business_date
   AND m.deduplication_id = r.deduplication_id AND m.published_at IS NOT NULL;
"""

DOWNGRADE = """
DROP INDEX etl.partner_message_revisions_deduplication_idx;
ALTER TABLE etl.partner_message_revisions DROP COLUMN published_at;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
