"""lake_exporter Lambda: its work queue -> the shared transformer runtime, writing the lake.

The whole transformer is declared here: its output lives in Iceberg tables, not in PostgreSQL
tables of its own, so it has no SQL module and no migration (docs/ADDING_A_TRANSFORMER.md).
"""

from dataharvest.lake.export import export_work
from dataharvest.transformers.runtime import Transformer, make_handler

TRANSFORMER = Transformer(name="lake_exporter", output_tables=(), write_outside=export_work)

handler = make_handler(TRANSFORMER)
