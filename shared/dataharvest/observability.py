"""Logger, Tracer and Metrics: one place, imported by every handler and module.

Outside Lambda (tests, CLI) powertools disables the tracer by itself; the local event-source
runner sets AWS_SAM_LOCAL like `sam local` does, which does the same.

The tracer is made on first import of the name (PEP 562 `__getattr__`): creating it imports the
X-Ray SDK (0.1-0.25 s), which only handlers need; modules that log (and the CLI through them)
do not pay for it. A handler's `from dataharvest.observability import tracer` makes it at its
import, during the cold start, as before.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

SERVICE_NAMESPACE = "DataHarvest"

logger = Logger(service="dataharvest")
metrics = Metrics(namespace=SERVICE_NAMESPACE, service="dataharvest")


@cache
def _tracer() -> Tracer:
    from aws_lambda_powertools import Tracer

    return Tracer(service="dataharvest")


def __getattr__(name: str) -> Tracer:
    if name == "tracer":
        return _tracer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
