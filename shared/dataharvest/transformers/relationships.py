"""relationship_transformer: link each portfolio to its client and account (docs/SPEC.md §3);
portfolios whose client or account is missing that day are `orphan_portfolio` issues."""

from __future__ import annotations

from dataharvest.transformers.runtime import Transformer

LINKS = """
INSERT INTO etl.portfolio_links (client_id, business_date, portfolio_reference,
                                 client_reference, account_number, cash_balance)
SELECT p.client_id, p.business_date, p.portfolio_reference, p.client_reference,
       p.account_number, a.cash_balance
FROM raw.portfolios p
JOIN raw.clients c USING (client_id, business_date, client_reference)
JOIN raw.accounts a USING (client_id, business_date, account_number)
WHERE p.client_id = %(client_id)s AND p.business_date = %(business_date)s
"""

ORPHANS = """
INSERT INTO audit.data_quality_issues (client_id, business_date, transformer, issue, entity,
                                       reference, detail)
SELECT p.client_id, p.business_date, 'relationship_transformer', 'orphan_portfolio',
       'portfolios', p.portfolio_reference,
       concat_ws('; ',
           CASE WHEN c.client_reference IS NULL THEN
               format('client_reference %%s is not in the clients file', p.client_reference) END,
           CASE WHEN a.account_number IS NULL THEN
               format('account_number %%s is not in the accounts file', p.account_number) END)
FROM raw.portfolios p
LEFT JOIN raw.clients c USING (client_id, business_date, client_reference)
LEFT JOIN raw.accounts a USING (client_id, business_date, account_number)
WHERE p.client_id = %(client_id)s AND p.business_date = %(business_date)s
  AND (c.client_reference IS NULL OR a.account_number IS NULL)
"""


TRANSFORMER = Transformer(
    name="relationship_transformer",
    output_tables=("etl.portfolio_links",),
    statements=(LINKS, ORPHANS),
    writes_quality_issues=True,
)
