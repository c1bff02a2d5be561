"""tax_transformer Lambda: its work queue -> the shared transformer runtime."""

from dataharvest.transformers.runtime import make_handler
from dataharvest.transformers.tax import TRANSFORMER

handler = make_handler(TRANSFORMER)
