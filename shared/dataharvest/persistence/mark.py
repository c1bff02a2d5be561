"""Current load of an input -> its attributes in the metastore item of (client, date).

Written after the database commit, from the committed state, so a retry after a crash in
between rewrites the same values. The write is conditional on the input's sequence number, so
a slower process holding an older state can never overwrite a newer one, and it is skipped when
the item already says the same, so redeliveries produce no stream records.
"""

from __future__ import annotations

from typing import Any

import psycopg

from dataharvest import metastore
from dataharvest.observability import logger
from dataharvest.persistence.records import LoadRecord
from dataharvest.persistence.routing import Route


def input_attributes(route: Route, record: LoadRecord) -> dict[str, Any]:
    """The item attributes of one input; None means the attribute is absent."""
    prefix = metastore.INPUT_PREFIX[route.entity]
    return {
        f"{prefix}_persisted": record.status == "loaded",
        f"{prefix}_version": record.source_version,
        f"{prefix}_seq": record.load_id,
        f"{prefix}_rows": record.rows_loaded,
        f"{prefix}_rejections": record.rows_rejected,
        f"{prefix}_error": record.reason if record.status == "rejected" else None,
        f"{prefix}_ignored_columns": list(record.ignored_columns) or None,
        f"{prefix}_updated_at": record.finished_at.isoformat(),
        # A load of a late input clears its late flag (dataharvest.ops.late).
        f"{prefix}_late": None,
    }


def mark_input(route: Route, record: LoadRecord, conn: psycopg.Connection | None = None) -> bool:
    """Make the item show this load, then its operational effects (metrics, partner notices,
    alarms: dataharvest.ops.outcomes, on the caller's connection `conn`, default the process's
    shared one); True when the item was written."""
    from dataharvest.db import shared_connection
    from dataharvest.ops import outcomes

    written = _write_input(route, record)
    outcomes.input_marked(
        conn or shared_connection(),
        route.client_id,
        route.entity,
        route.business_date,
        record,
        written,
    )
    return written


def _write_input(route: Route, record: LoadRecord) -> bool:
    wanted = input_attributes(route, record)
    item = metastore.get_item(route.client_id, route.date_key)
    if all(item.get(name) == value for name, value in wanted.items()):
        return False
    seq = f"{metastore.INPUT_PREFIX[route.entity]}_seq"
    written = metastore.update_attributes(
        route.client_id,
        route.date_key,
        {name: value for name, value in wanted.items() if value is not None},
        [name for name, value in wanted.items() if value is None],
        condition="attribute_not_exists(#seq) OR #seq <= :seq",
        condition_names={"#seq": seq},
        condition_values={":seq": record.load_id},
    )
    if written is None:
        logger.info(
            "metastore already shows a newer load of this input; this write is stale",
            extra={"client_id": route.client_id, "entity": route.entity, "seq": record.load_id},
        )
        return False
    return True
