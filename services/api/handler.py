"""Data API Lambda (API Gateway HTTP API, payload 2.0): dataharvest.api.app.handle per request
(authentication, role rules, routes and the audit trail live there)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.api.app import handle
from dataharvest.observability import logger, metrics, tracer


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context)
