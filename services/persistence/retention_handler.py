"""Persistence, daily: expire raw inputs past their client's retention (and abandon chunked
loads that never finished) -> dataharvest.persistence.retention.apply_retention."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.db import shared_connection
from dataharvest.observability import logger, tracer
from dataharvest.persistence.retention import apply_retention


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    return {"expired": len(apply_retention(shared_connection()))}
