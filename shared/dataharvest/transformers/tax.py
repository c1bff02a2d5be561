"""tax_transformer: one row per client in the clients file with its tax-free allowance and
the taxes paid on the DISTINCT accounts of its linked portfolios (docs/SPEC.md §3); 0 when none."""

from __future__ import annotations

from dataharvest.transformers.runtime import Transformer

# Two portfolios of a client on the same account must count that account's taxes once, hence
# the DISTINCT (client_reference, account_number) pairs before the sum.
TAX_SUMMARY = """
INSERT INTO etl.client_tax_summary (client_id, business_date, client_reference,
                                    tax_free_allowance, taxes_paid)
SELECT c.client_id, c.business_date, c.client_reference, c.tax_free_allowance,
       coalesce(t.taxes_paid, 0)
FROM raw.clients c
LEFT JOIN (
    SELECT ca.client_reference, sum(a.taxes_paid) AS taxes_paid
    FROM (
        SELECT DISTINCT l.client_reference, l.account_number
        FROM etl.portfolio_links l
        WHERE l.client_id = %(client_id)s AND l.business_date = %(business_date)s
    ) ca
    JOIN raw.accounts a
      ON a.client_id = %(client_id)s AND a.business_date = %(business_date)s
     AND a.account_number = ca.account_number
    GROUP BY ca.client_reference
) t USING (client_reference)
WHERE c.client_id = %(client_id)s AND c.business_date = %(business_date)s
"""


TRANSFORMER = Transformer(
    name="tax_transformer",
    output_tables=("etl.client_tax_summary",),
    statements=(TAX_SUMMARY,),
)
