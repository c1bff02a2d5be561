"""How transformer statements are planned.

A transformer runs seconds after its inputs were bulk-loaded (or after the transformer before
it wrote them), before autovacuum has analyzed those tables. The planner then believes they
are nearly empty and picks nested loops, which are quadratic at real sizes: a 400-client tax
summary took over a minute that way instead of milliseconds. Every transformer statement is a
bulk join over one client and date, for which hash (or merge) joins are right at any size, so
each run disables nested loops for its own transaction.
"""

BULK_JOINS = "SET LOCAL enable_nestloop = off"
