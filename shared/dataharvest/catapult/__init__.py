"""Catapult: the single consumer of the metastore stream. It decides, per stream record, which
registered transformers must APPLY or RETRACT, and sends each its work message. Converging
(register / enable sweeps, the reconciler) brings items to what the registry says now."""

from dataharvest.catapult.converge import backfill, converge, needs, reconcile
from dataharvest.catapult.decide import Decision, decide
from dataharvest.catapult.dispatch import DispatchError, dispatch_record, replay

__all__ = [
    "Decision",
    "DispatchError",
    "backfill",
    "converge",
    "decide",
    "dispatch_record",
    "needs",
    "reconcile",
    "replay",
]
