"""sum_deposit_transformer: per linked portfolio, the sum of `amount` over the linked
transactions of its account with keyword DEPOSIT (docs/SPEC.md §3); 0 when there are none."""

from __future__ import annotations

from dataharvest.transformers.runtime import Transformer

# A linked portfolio's account is in that day's accounts file, so every transaction on it is
# linked: joining the links to the transactions by account is the whole rule. NUMERIC sums
# keep the exact scale of the inputs.
DEPOSITS = """
INSERT INTO etl.portfolio_deposits (client_id, business_date, portfolio_reference,
                                    sum_of_deposits)
SELECT l.client_id, l.business_date, l.portfolio_reference, coalesce(d.total, 0)
FROM etl.portfolio_links l
LEFT JOIN (
    SELECT t.account_number, sum(t.amount) AS total
    FROM raw.transactions t
    WHERE t.client_id = %(client_id)s AND t.business_date = %(business_date)s
      AND t.keyword = 'DEPOSIT'
    GROUP BY t.account_number
) d USING (account_number)
WHERE l.client_id = %(client_id)s AND l.business_date = %(business_date)s
"""


TRANSFORMER = Transformer(
    name="sum_deposit_transformer",
    output_tables=("etl.portfolio_deposits",),
    statements=(DEPOSITS,),
)
