"""Partner message revisions: what the partner publisher last published per message key.

etl.partner_messages holds the current message set of a client and date and is replaced (or
retracted) with every run; this table outlives those replacements and numbers each change of
a message key's content. The revision is part of the FIFO deduplication id, so an identical
re-send keeps its id (and is swallowed by the queue's deduplication window) while a
correction, even one back to an earlier content (A -> B -> A), gets a new one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE etl.partner_message_revisions (
    client_id        text    NOT NULL,
    business_date    date    NOT NULL,
    message_type     text    NOT NULL,
    message_key      text    NOT NULL,
    revision         integer NOT NULL,
    body_sha256      text    NOT NULL,
    deduplication_id text    NOT NULL,
    PRIMARY KEY (client_id, business_date, message_type, message_key)
);
CREATE INDEX partner_messages_unpublished_idx
    ON etl.partner_messages (client_id, business_date) WHERE published_at IS NULL;
"""

DOWNGRADE = """
DROP INDEX etl.partner_messages_unpublished_idx;
DROP TABLE etl.partner_message_revisions;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
