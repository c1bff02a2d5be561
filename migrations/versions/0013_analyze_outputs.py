"""Transformers ANALYZE their own output tables after a large run (MAINTAIN).

A transformer run that wrote many rows analyzes its output tables after its commit
(transformers/runtime.py, `analyze_outputs`) so that the readers it triggers plan on real
statistics. The function's role is not the tables' owner: PostgreSQL 17+ grants ANALYZE (and
VACUUM, REINDEX, ...) through the MAINTAIN privilege, given here to each transformer's group
role on its own output table(s) only, the partner publisher's included. See docs/DECISIONS.md,
"Transformer runtime".

Downgrade revokes it.

Revision ID: 0013_analyze_outputs
Revises: 0012_snapshot_hash
Create Date: 2026-12-02
"""

from alembic import op

revision = "0013_analyze_outputs"
down_revision = "0012_snapshot_hash"
branch_labels = None
depends_on = None

# transformer group role -> the output tables its runtime analyzes (`Transformer.output_tables`;
# the same tables 0010_service_roles lets it write).
OUTPUTS = {
    "dataharvest_relationship_transformer": ("etl.portfolio_links",),
    "dataharvest_transaction_transformer": ("etl.portfolio_transaction_counts",),
    "dataharvest_sum_deposit_transformer": ("etl.portfolio_deposits",),
    "dataharvest_tax_transformer": ("etl.client_tax_summary",),
    "dataharvest_partner_publisher": ("etl.partner_messages",),
}


def upgrade() -> None:
    for role, tables in OUTPUTS.items():
        op.execute(f"GRANT MAINTAIN ON TABLE {', '.join(tables)} TO {role}")


def downgrade() -> None:
    for role, tables in OUTPUTS.items():
        op.execute(f"REVOKE MAINTAIN ON TABLE {', '.join(tables)} FROM {role}")
