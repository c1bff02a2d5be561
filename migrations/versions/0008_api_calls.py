"""The Data API's audit trail (audit.api_calls) and a page key for data-quality issues.

`audit.api_calls`: every mutating API call (POST, PUT, DELETE), refused ones included: who
(token subject, role, a partner's client), what (method, path, action), the target, when, and
the result (HTTP status and a short text).

`audit.data_quality_issues.issue_id`: the table had no unique column, and the API pages every
output by a unique key (keyset pagination returns each row exactly once).

Revision ID: 0008_api_calls
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0008_api_calls"
down_revision = "0007_snapshots"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE audit.api_calls (
    call_id       bigserial PRIMARY KEY,
    called_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id    text,
    subject       text,
    role          text,
    caller_client text,
    method        text NOT NULL,
    path          text NOT NULL,
    action        text NOT NULL,
    target        text,
    request       jsonb,
    status        integer NOT NULL,
    result        text
);
CREATE INDEX api_calls_called_at_idx ON audit.api_calls (called_at);
CREATE INDEX api_calls_target_idx ON audit.api_calls (target, called_at);

ALTER TABLE audit.data_quality_issues ADD COLUMN issue_id bigserial;
CREATE INDEX data_quality_issues_page_idx
    ON audit.data_quality_issues (client_id, business_date, issue_id);
"""

DOWNGRADE = """
DROP INDEX audit.data_quality_issues_page_idx;
ALTER TABLE audit.data_quality_issues DROP COLUMN issue_id;
DROP TABLE audit.api_calls;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
