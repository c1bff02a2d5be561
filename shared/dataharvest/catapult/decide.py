"""Pure decision logic: stream record + registry -> which transformers APPLY or RETRACT.

The rule itself (edge-triggered with retraction) lives in dataharvest.due; this module turns
what is due into work messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dataharvest import metastore
from dataharvest.due import Change, DueIndex
from dataharvest.registry import TransformerEntry
from dataharvest.work import WorkMessage


@dataclass(frozen=True)
class Decision:
    entry: TransformerEntry
    message: WorkMessage


def decide(
    record: dict[str, Any], entries: DueIndex | Iterable[TransformerEntry]
) -> list[Decision]:
    """The work messages a metastore stream record calls for. Pass the registry's DueIndex
    (built once per registry version) so entries the change cannot concern are skipped."""
    ddb = record.get("dynamodb") or {}
    keys = metastore.deserialize_image(ddb.get("Keys"))
    client_id = keys.get(metastore.PARTITION_KEY, "")
    if not client_id or client_id.startswith("#"):
        return []  # registry items are not client work
    index = entries if isinstance(entries, DueIndex) else DueIndex(entries)
    trigger = {
        "eventID": record.get("eventID"),
        "eventName": record.get("eventName"),
        "sequenceNumber": ddb.get("SequenceNumber"),
    }
    return [
        Decision(
            entry,
            WorkMessage(
                client_id=client_id,
                business_date=str(keys[metastore.SORT_KEY]),
                transformer=entry.name,
                action=action,
                input_versions=versions,
                trigger=trigger,
            ),
        )
        for entry, action, versions in index.on_change(Change.of(record))
    ]
