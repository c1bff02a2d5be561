"""Pure decision logic: stream record + registry -> which transformers APPLY or RETRACT.

Edge-triggered with retraction:
- APPLY when the new image matches and the old one did not, or a watched attribute changed;
- RETRACT when the old image matched and the new one does not;
- nothing otherwise, so unrelated flag updates never re-run a finished transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataharvest import metastore
from dataharvest.registry import TransformerEntry, as_image_record
from dataharvest.work import WorkMessage


@dataclass(frozen=True)
class Decision:
    entry: TransformerEntry
    message: WorkMessage


def watched_versions(entry: TransformerEntry, image: dict[str, Any]) -> dict[str, str]:
    """The watched attributes of a (deserialized) image, as strings; absent ones are omitted."""
    return {a: str(metastore.plain(image[a])) for a in entry.watch if image.get(a) is not None}


def decide(record: dict[str, Any], entries: list[TransformerEntry]) -> list[Decision]:
    ddb = record.get("dynamodb") or {}
    keys = metastore.deserialize_image(ddb.get("Keys"))
    client_id = keys.get(metastore.PARTITION_KEY, "")
    if not client_id or client_id.startswith("#"):
        return []  # registry items are not client work
    new_raw, old_raw = ddb.get("NewImage"), ddb.get("OldImage")
    new_image = metastore.deserialize_image(new_raw)
    old_image = metastore.deserialize_image(old_raw)
    old_record = as_image_record(old_raw, record.get("eventName", "MODIFY"))
    trigger = {
        "eventID": record.get("eventID"),
        "eventName": record.get("eventName"),
        "sequenceNumber": ddb.get("SequenceNumber"),
    }
    decisions = []
    for entry in entries:
        if not entry.enabled:
            continue
        matched_now = new_raw is not None and entry.matches_image(record)
        matched_before = old_raw is not None and entry.matches_image(old_record)
        if matched_now:
            versions = watched_versions(entry, new_image)
            if matched_before and versions == watched_versions(entry, old_image):
                continue
            action = "APPLY"
        elif matched_before:
            versions = watched_versions(entry, old_image)
            action = "RETRACT"
        else:
            continue
        decisions.append(
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
        )
    return decisions
