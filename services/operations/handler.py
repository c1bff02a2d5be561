"""Operations Lambda, scheduled: the late-input checker -> dataharvest.ops.late.check."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.db import shared_connection
from dataharvest.observability import logger, tracer
from dataharvest.ops import late


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def check_late(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    found, cleared = late.check(shared_connection(), late.scheduled_time(event))
    logger.info("late check", extra={"late": len(found), "cleared": len(cleared)})
    return {"late": len(found), "cleared": len(cleared)}
