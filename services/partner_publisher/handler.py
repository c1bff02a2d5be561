"""partner_publisher Lambda: its work queue -> the shared transformer runtime."""

from dataharvest.transformers.publisher import TRANSFORMER
from dataharvest.transformers.runtime import make_handler

handler = make_handler(TRANSFORMER)
