"""sum_deposit_transformer Lambda: its work queue -> the shared transformer runtime."""

from dataharvest.transformers.deposits import TRANSFORMER
from dataharvest.transformers.runtime import make_handler

handler = make_handler(TRANSFORMER)
