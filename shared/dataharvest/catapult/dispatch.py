"""Send work messages to transformer queues: from stream records (catapult) and for replays over
a date range. Register / enable sweeps and the reconciler are in converge.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import boto3

from dataharvest import metastore
from dataharvest.catapult.decide import Decision, decide
from dataharvest.due import matches_item, watched_versions
from dataharvest.observability import logger
from dataharvest.ops import metrics
from dataharvest.registry import RegistryCache, TransformerEntry
from dataharvest.work import WorkMessage


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return boto3.client("sqs")


def send(entry: TransformerEntry, message: WorkMessage) -> None:
    _sqs().send_message(QueueUrl=entry.target, MessageBody=message.to_json())


class DispatchError(RuntimeError):
    """Some dispatches of a stream record failed; the record must be retried."""


def dispatch_record(record: dict[str, Any], cache: RegistryCache) -> list[Decision]:
    """Decide and send. Every dispatch is attempted; if any failed, raise after the others were
    sent (re-sent messages on retry are no-ops thanks to their idempotency keys)."""
    keys = metastore.deserialize_image((record.get("dynamodb") or {}).get("Keys"))
    if str(keys.get(metastore.PARTITION_KEY, "")) == metastore.REGISTRY_PARTITION:
        cache.refresh()  # a registration takes effect on the next metastore change
        return []
    decisions = decide(record, cache.index())
    client_id = str(keys.get(metastore.PARTITION_KEY, ""))
    metrics.emit("catapult", "metastore", metrics.CATAPULT_RECORDS_IN, 1, client_id=client_id)
    failed = []
    for decision in decisions:
        try:
            send(decision.entry, decision.message)
            metrics.emit(
                "catapult",
                decision.entry.name,
                metrics.CATAPULT_WORK_MESSAGES_OUT,
                1,
                client_id=client_id,
                action=decision.message.action,
            )
            logger.info(
                "dispatched",
                extra={
                    "transformer": decision.entry.name,
                    "action": decision.message.action,
                    "client_id": decision.message.client_id,
                    "business_date": decision.message.business_date,
                },
            )
        except Exception as error:  # collected, then raised below: the record fails
            logger.exception("dispatch failed", extra={"transformer": decision.entry.name})
            failed.append(f"{decision.entry.name}: {type(error).__name__}: {error}")
    if failed:
        raise DispatchError("; ".join(failed))
    return decisions


def _replay_messages(
    entry: TransformerEntry, items: Iterable[dict[str, Any]], replay_id: str
) -> list[WorkMessage]:
    messages = []
    for item in items:
        if not matches_item(entry, item):
            continue
        messages.append(
            WorkMessage(
                client_id=item[metastore.PARTITION_KEY],
                business_date=item[metastore.SORT_KEY],
                transformer=entry.name,
                action="APPLY",
                input_versions=watched_versions(entry, item),
                trigger={"source": "replay"},
                replay=replay_id,
            )
        )
    for message in messages:
        send(entry, message)
    return messages


def replay(
    entry: TransformerEntry, client_id: str, date_from: str, date_to: str
) -> list[WorkMessage]:
    """Re-run a transformer over a date range for one client, even where inputs are unchanged."""
    items = (
        i
        for i in metastore.client_items(client_id)
        if date_from <= i[metastore.SORT_KEY] <= date_to
    )
    return _replay_messages(entry, items, replay_id=uuid.uuid4().hex)
