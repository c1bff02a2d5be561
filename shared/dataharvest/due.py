"""When a registered transformer is due, and on which input versions: the one home of the rule.

Three readers ask the same question in three shapes, and all answer it here:

- catapult, edge-triggered, from a stream record (`on_change`): APPLY when the new image matches
  and the old one did not, or a watched attribute changed; RETRACT when the old image matched and
  the new one does not; nothing otherwise, so unrelated flag updates never re-run a finished
  transformer;
- the converging paths (register/enable backfill, reconcile, `status`'s stuck marker, the
  publisher's "upstream settled"), from the current item (`need`);
- the transformer runtime, checking that a work message still describes the item (`desired`).

`DueIndex` keeps catapult's cost flat in the size of the registry: an entry whose filter only
reads attributes of the new image cannot change its answer for a MODIFY record that changed none
of those attributes nor its watched ones, so it is never evaluated for it (`tests/unit/
test_due_index.py` compares every decision with the plain evaluation of every entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any, Literal

from boto3.dynamodb.types import TypeSerializer

from dataharvest import metastore
from dataharvest.registry import TransformerEntry, as_image_record
from dataharvest.work import output_version

Action = Literal["APPLY", "RETRACT"]

_serializer = TypeSerializer()
_OR = "$or"


def watched_versions(entry: TransformerEntry, image: dict[str, Any]) -> dict[str, str]:
    """The watched attributes of a (deserialized) image, as strings; absent ones are omitted."""
    return {a: str(metastore.plain(image[a])) for a in entry.watch if image.get(a) is not None}


def item_as_record(item: dict[str, Any]) -> dict[str, Any]:
    """A current metastore item (plain values) as a stream-record shape for filter matching."""
    return as_image_record({k: _serializer.serialize(v) for k, v in item.items()})


def matches_item(entry: TransformerEntry, item: dict[str, Any]) -> bool:
    """Whether the entry's filter holds for a current item (plain values)."""
    return bool(item) and entry.matches_image(item_as_record(item))


def desired(entry: TransformerEntry, item: dict[str, Any]) -> tuple[Action, dict[str, str]]:
    """What the item wants from the entry regardless of what is done: APPLY on its current
    watched versions where the filter holds, RETRACT otherwise."""
    if matches_item(entry, item):
        return "APPLY", watched_versions(entry, item)
    return "RETRACT", watched_versions(entry, item) if item else {}


def need(entry: TransformerEntry, item: dict[str, Any]) -> tuple[Action, dict[str, str]] | None:
    """What this item needs from this entry now: (action, input versions), or None.

    APPLY where the filter matches and the entry is not done for the current watched versions;
    RETRACT (naming the output version it retracts) where it is done but the filter no longer
    matches. Disabled entries need nothing: disabling means "leave its flags as they are"."""
    if not entry.enabled or not item:
        return None
    done = item.get(f"{entry.name}_done") is True
    done_version = item.get(f"{entry.name}_version")
    versions = watched_versions(entry, item)
    if matches_item(entry, item):
        if done and done_version == output_version(versions):
            return None
        return "APPLY", versions
    if done:
        return "RETRACT", {**versions, f"{entry.name}_version": str(done_version or "")}
    return None


def upstream(
    entry: TransformerEntry, entries: Iterable[TransformerEntry]
) -> list[TransformerEntry]:
    """The entries whose output this one reads: those whose `<name>_version` it watches."""
    watched = set(entry.watch)
    return [e for e in entries if f"{e.name}_version" in watched]


class Change:
    """A metastore stream record, read once (and lazily) for every entry asked about it."""

    def __init__(self, record: dict[str, Any]) -> None:
        ddb = record.get("dynamodb") or {}
        self.record = record
        self.new_raw: dict[str, Any] | None = ddb.get("NewImage")
        self.old_raw: dict[str, Any] | None = ddb.get("OldImage")

    @classmethod
    def of(cls, record: dict[str, Any]) -> Change:
        return cls(record)

    def watched(self, entry: TransformerEntry, raw: dict[str, Any] | None) -> dict[str, str]:
        """watched_versions of one image, deserializing only the watched attributes."""
        raw = raw or {}
        return watched_versions(
            entry, metastore.deserialize_image({a: raw[a] for a in entry.watch if a in raw})
        )

    @cached_property
    def old_record(self) -> dict[str, Any]:
        return as_image_record(self.old_raw, self.record.get("eventName", "MODIFY"))

    def changed_attributes(self) -> set[str] | None:
        """Attributes whose value differs between the images; None unless both images exist."""
        if self.new_raw is None or self.old_raw is None:
            return None
        new, old = self.new_raw, self.old_raw
        return {a for a in new.keys() | old.keys() if new.get(a) != old.get(a)}


def on_change(entry: TransformerEntry, change: Change) -> tuple[Action, dict[str, str]] | None:
    """Catapult's edge rule for one entry and one stream record."""
    if not entry.enabled:
        return None
    matched_now = change.new_raw is not None and entry.matches_image(change.record)
    matched_before = change.old_raw is not None and entry.matches_image(change.old_record)
    if matched_now:
        versions = change.watched(entry, change.new_raw)
        if matched_before and versions == change.watched(entry, change.old_raw):
            return None
        return "APPLY", versions
    if matched_before:
        return "RETRACT", change.watched(entry, change.old_raw)
    return None


def new_image_attributes(pattern: dict[str, Any]) -> frozenset[str] | None:
    """The top-level attributes of the new image a filter pattern reads, or None when it reads
    anything else of the record (then an image-only comparison cannot rule it out)."""
    read: set[str] = set()

    def walk_root(node: dict[str, Any]) -> bool:
        for key, value in node.items():
            if key == _OR:
                if not all(walk_root(arm) for arm in value):
                    return False
            elif key != "dynamodb" or not isinstance(value, dict) or not walk_dynamodb(value):
                return False
        return True

    def walk_dynamodb(node: dict[str, Any]) -> bool:
        for key, value in node.items():
            if key == _OR:
                if not all(walk_dynamodb(arm) for arm in value):
                    return False
            elif key != "NewImage" or not isinstance(value, dict) or not walk_image(value):
                return False
        return True

    def walk_image(node: dict[str, Any]) -> bool:
        for key, value in node.items():
            if key == _OR:
                if not all(walk_image(arm) for arm in value):
                    return False
            else:
                read.add(key)
        return True

    return frozenset(read) if walk_root(pattern) else None


class DueIndex:
    """The enabled entries of a registry, indexed by the attributes that can make them due.

    For a MODIFY record (both images present) only entries reading a changed attribute (in
    their filter or their watch list) are evaluated, plus those whose filter reads more than
    the new image. INSERT and REMOVE records evaluate every enabled entry."""

    def __init__(self, entries: Iterable[TransformerEntry]) -> None:
        self.entries: tuple[TransformerEntry, ...] = tuple(e for e in entries if e.enabled)
        self._always: list[int] = []
        self._by_attribute: dict[str, list[int]] = {}
        for position, entry in enumerate(self.entries):
            attributes = new_image_attributes(entry.filter_pattern)
            if attributes is None:
                self._always.append(position)
                continue
            for attribute in attributes | set(entry.watch):
                self._by_attribute.setdefault(attribute, []).append(position)

    def candidates(self, change: Change) -> Sequence[TransformerEntry]:
        """The entries that may be due for this change, in registry order."""
        changed = change.changed_attributes()
        if changed is None:
            return self.entries
        positions = set(self._always)
        for attribute in changed:
            positions.update(self._by_attribute.get(attribute, ()))
        return [self.entries[p] for p in sorted(positions)]

    def on_change(self, change: Change) -> list[tuple[TransformerEntry, Action, dict[str, str]]]:
        """Every entry the change makes due, with its action and input versions."""
        due = []
        for entry in self.candidates(change):
            wanted = on_change(entry, change)
            if wanted is not None:
                due.append((entry, *wanted))
        return due
