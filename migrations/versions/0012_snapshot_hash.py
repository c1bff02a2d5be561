"""Snapshot state without a row hash (issue 15, the delta's cost).

The delta now compares a staged export with `snapshot_state.<table>` column by column
(`ROW(...) IS DISTINCT FROM ROW(...)` in the FULL JOIN on the key) instead of computing an md5
of every staged row and comparing it with the stored `_row_hash`; nothing reads the hash any
more, so every registered state table loses the column (tables registered from now on are
created without it, snapshots/tables.py). See docs/DECISIONS.md, "Snapshot deltas".

Downgrade adds `_row_hash uuid NOT NULL` back, filled with what the previous delta wrote:
`md5(ROW(<the table's columns in order, client_id excluded>)::text)::uuid`.

Grants: unchanged (they are per table, not per column: persistence keeps its SELECT, INSERT,
UPDATE, DELETE on each state table).

Revision ID: 0012_snapshot_hash
Revises: 0011_personal_data
Create Date: 2026-12-02
"""

from alembic import op

revision = "0012_snapshot_hash"
down_revision = "0011_personal_data"
branch_labels = None
depends_on = None

STATE_TABLES = """
    SELECT c.oid, c.oid::regclass AS name FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'snapshot_state' AND c.relkind = 'r'
"""

UPGRADE = f"""
DO $hash$
DECLARE t record;
BEGIN
    FOR t IN {STATE_TABLES}
    LOOP
        EXECUTE format('ALTER TABLE %s DROP COLUMN IF EXISTS _row_hash', t.name);
    END LOOP;
END
$hash$;
"""

DOWNGRADE = f"""
DO $hash$
DECLARE
    t record;
    cols text;
BEGIN
    FOR t IN {STATE_TABLES}
    LOOP
        SELECT string_agg(format('%I', attname), ', ' ORDER BY attnum) INTO cols
        FROM pg_attribute
        WHERE attrelid = t.oid AND attnum > 0 AND NOT attisdropped AND attname <> 'client_id';
        EXECUTE format('ALTER TABLE %s ADD COLUMN _row_hash uuid', t.name);
        EXECUTE format('UPDATE %s SET _row_hash = md5(ROW(%s)::text)::uuid', t.name, cols);
        EXECUTE format('ALTER TABLE %s ALTER COLUMN _row_hash SET NOT NULL', t.name);
    END LOOP;
END
$hash$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
