"""lake_exporter, daily: expire each lake table's old snapshots and delete its orphan files ->
dataharvest.lake.maintenance.maintain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from dataharvest.db import shared_connection
from dataharvest.lake.location import read_lake_location
from dataharvest.lake.maintenance import maintain
from dataharvest.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    done = maintain(shared_connection(), read_lake_location(), datetime.now(UTC))
    return {
        "tables": len(done),
        "snapshots_expired": sum(m.expired.snapshots for m in done),
        "files_deleted": sum(m.expired.files_deleted for m in done),
        "orphans_deleted": sum(m.orphans.deleted for m in done),
    }
