"""transaction_transformer: per linked portfolio, the number of linked transactions on its
account (docs/SPEC.md §3); transactions whose account is not in that day's accounts file are
`orphan_transaction` issues."""

from __future__ import annotations

from dataharvest.transformers.runtime import Transformer

COUNTS = """
INSERT INTO etl.portfolio_transaction_counts (client_id, business_date, portfolio_reference,
                                              number_of_transactions)
SELECT l.client_id, l.business_date, l.portfolio_reference, coalesce(n.total, 0)
FROM etl.portfolio_links l
LEFT JOIN (
    SELECT t.account_number, count(*) AS total
    FROM raw.transactions t
    WHERE t.client_id = %(client_id)s AND t.business_date = %(business_date)s
    GROUP BY t.account_number
) n USING (account_number)
WHERE l.client_id = %(client_id)s AND l.business_date = %(business_date)s
"""

ORPHANS = """
INSERT INTO audit.data_quality_issues (client_id, business_date, transformer, issue, entity,
                                       reference, detail)
SELECT t.client_id, t.business_date, 'transaction_transformer', 'orphan_transaction',
       'transactions', t.transaction_reference,
       format('account_number %%s is not in the accounts file', t.account_number)
FROM raw.transactions t
WHERE t.client_id = %(client_id)s AND t.business_date = %(business_date)s
  AND NOT EXISTS (
      SELECT 1 FROM raw.accounts a
      WHERE a.client_id = t.client_id AND a.business_date = t.business_date
        AND a.account_number = t.account_number)
"""


TRANSFORMER = Transformer(
    name="transaction_transformer",
    output_tables=("etl.portfolio_transaction_counts",),
    statements=(COUNTS, ORPHANS),
    writes_quality_issues=True,
)
