"""What a metastore item needs from a registry entry now, and sending it: the one rule behind
the register / enable sweep, the reconciler and the `stuck` marker of `dataharvest status`.

Catapult is edge-triggered: it acts on a change it sees in the stream. A change it could not act
on (the entry was disabled, its stream record went to the on-failure queue, the work message was
dead-lettered while the database was down) leaves the item's flags behind the registry for
good. Converging compares the current item with the current entry instead of two images:

- APPLY where the filter matches and the entry is not done for the current watched versions
  (it never ran, it was retracted, or it is done for versions that have moved since);
- RETRACT where it is done but the filter no longer matches;
- nothing otherwise: the item already is what the registry says.

Messages take the normal work path (the entry's queue), and the runtime re-reads the item
before it runs, so converging while the choreography is busy is harmless. An APPLY has the
same idempotency key as catapult's for the same versions, so work already done is not redone.
A RETRACT names the output version it retracts: its key is new for every output retracted
(a retraction of the same watched versions can recur, and a repeated key would be skipped as
already done while the output stays).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dataharvest import metastore, registry
from dataharvest.catapult.decide import Decision
from dataharvest.catapult.dispatch import DispatchError, send
from dataharvest.due import need
from dataharvest.observability import logger
from dataharvest.registry import TransformerEntry
from dataharvest.work import WorkMessage


def needs(
    entry: TransformerEntry, item: dict[str, Any], trigger: dict[str, Any] | None = None
) -> WorkMessage | None:
    """`need` as the work message that carries it out, or None."""
    wanted = need(entry, item)
    if wanted is None:
        return None
    action, versions = wanted
    return WorkMessage(
        client_id=item[metastore.PARTITION_KEY],
        business_date=item[metastore.SORT_KEY],
        transformer=entry.name,
        action=action,
        input_versions=versions,
        trigger=trigger or {"source": "converge"},
    )


def due(entries: Iterable[TransformerEntry], item: dict[str, Any]) -> list[str]:
    """Names of the entries this item still needs work from (status marks them as stuck)."""
    return [entry.name for entry in entries if need(entry, item) is not None]


def converge(
    entries: list[TransformerEntry], items: Iterable[dict[str, Any]], source: str
) -> list[Decision]:
    """Send every item what it needs from every entry. Every send is attempted; if any failed,
    raise after the others were sent (a repeat sends the same keys again: no-ops)."""
    decisions: list[Decision] = []
    failed: list[str] = []
    for item in items:
        for entry in entries:
            message = needs(entry, item, {"source": source})
            if message is None:
                continue
            try:
                send(entry, message)
            except Exception as error:  # collected, then raised below
                logger.exception("converge send failed", extra={"transformer": entry.name})
                failed.append(f"{entry.name} {message.client_id} {message.business_date}: {error}")
                continue
            decisions.append(Decision(entry, message))
            logger.info(
                "converge dispatched",
                extra={
                    "source": source,
                    "transformer": entry.name,
                    "action": message.action,
                    "client_id": message.client_id,
                    "business_date": message.business_date,
                },
            )
    if failed:
        raise DispatchError("; ".join(failed))
    return decisions


def backfill(entry: TransformerEntry) -> list[WorkMessage]:
    """After register / enable: bring every item to what this entry says now (APPLY where due,
    RETRACT where done but no longer due, recompute where done for stale versions)."""
    return [d.message for d in converge([entry], metastore.all_items(), "backfill")]


def reconcile(
    client_id: str | None = None, date_from: str | None = None, date_to: str | None = None
) -> list[Decision]:
    """Every enabled entry, every item (of a client, between two YYYYMMDD dates inclusive):
    dispatch what is due but not done for the current versions."""
    items: Iterable[dict[str, Any]] = (
        metastore.client_items(client_id) if client_id else metastore.all_items()
    )
    items = (
        i
        for i in items
        if (date_from is None or i[metastore.SORT_KEY] >= date_from)
        and (date_to is None or i[metastore.SORT_KEY] <= date_to)
    )
    entries = [e for e in registry.load_all() if e.enabled]
    return converge(entries, items, "reconcile")
