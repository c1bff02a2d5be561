"""Catapult: the single consumer of the metastore stream. It decides, per stream record, which
registered transformers must APPLY or RETRACT, and sends each its work message."""

from dataharvest.catapult.decide import Decision, decide
from dataharvest.catapult.dispatch import backfill, dispatch_record, replay

__all__ = ["Decision", "backfill", "decide", "dispatch_record", "replay"]
