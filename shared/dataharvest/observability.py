"""Logger, Tracer and Metrics: one place, imported by every handler and module.

Outside Lambda (tests, CLI) powertools disables the tracer by itself; the local event-source
runner sets AWS_SAM_LOCAL like `sam local` does, which does the same.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE_NAMESPACE = "DataHarvest"

logger = Logger(service="dataharvest")
tracer = Tracer(service="dataharvest")
metrics = Metrics(namespace=SERVICE_NAMESPACE, service="dataharvest")
