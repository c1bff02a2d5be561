"""The transformer registry: items under partition_key "#transformers" in the metastore.

An entry says when a transformer runs (an AWS Lambda filter pattern on the metastore stream
record), where its work goes (its SQS queue), whether it is enabled, and which attributes
re-trigger it when they change (`watch`). Each transformer service ships its entry as
`transformer.yml`; `dataharvest transformers register` validates and stores it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from dataharvest import filters, metastore

# Catapult re-reads the registry at least this often, besides on registry stream records.
REGISTRY_TTL_S = 30.0


class RegistryError(ValueError):
    """A registry entry is invalid; the message names the entry and the field."""


@dataclass(frozen=True)
class TransformerEntry:
    name: str
    filter_pattern: dict[str, Any]
    target: str  # the SQS queue URL of the transformer's work queue
    enabled: bool = True
    watch: tuple[str, ...] = ()
    owner: str = ""
    description: str = ""

    def to_item(self) -> dict[str, Any]:
        return {
            metastore.PARTITION_KEY: metastore.REGISTRY_PARTITION,
            metastore.SORT_KEY: self.name,
            "filter_pattern": self.pattern_text,
            "target": self.target,
            "enabled": self.enabled,
            "watch": list(self.watch),
            "owner": self.owner,
            "description": self.description,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> TransformerEntry:
        return cls(
            name=item[metastore.SORT_KEY],
            filter_pattern=json.loads(item["filter_pattern"]),
            target=item["target"],
            enabled=bool(item.get("enabled", True)),
            watch=tuple(item.get("watch") or ()),
            owner=item.get("owner", ""),
            description=item.get("description", ""),
        )

    @cached_property
    def pattern_text(self) -> str:
        # The JSON text form is parsed and validated once (filters caches it per string).
        return json.dumps(self.filter_pattern, sort_keys=True)

    def matches_image(self, image_record: dict[str, Any]) -> bool:
        return filters.matches(self.pattern_text, image_record)


def validate(entry: TransformerEntry) -> None:
    if not entry.name or not entry.name.replace("_", "").isalnum() or not entry.name.islower():
        raise RegistryError(f"{entry.name!r}: name must be lower_snake_case letters and digits")
    try:
        filters.validate(entry.filter_pattern)
    except filters.FilterPatternError as error:
        raise RegistryError(f"{entry.name}: filter: {error}") from error
    if not entry.target.startswith(("http://", "https://")):
        raise RegistryError(f"{entry.name}: target must be an SQS queue URL, got {entry.target!r}")
    for attribute in entry.watch:
        if not isinstance(attribute, str) or not attribute:
            raise RegistryError(f"{entry.name}: watch entries must be attribute names")


def entry_from_file(
    path: Path, stage: str, resolve_queue_url: Callable[[str], str]
) -> TransformerEntry:
    """Read a service's transformer.yml; `target_queue` is a queue name with `{stage}`."""
    spec = yaml.safe_load(path.read_text())
    try:
        queue_name = spec["target_queue"].format(stage=stage)
        return TransformerEntry(
            name=spec["name"],
            filter_pattern=spec["filter"],
            target=resolve_queue_url(queue_name),
            enabled=bool(spec.get("enabled", True)),
            watch=tuple(spec.get("watch") or ()),
            owner=spec.get("owner", ""),
            description=spec.get("description", "").strip(),
        )
    except KeyError as error:
        raise RegistryError(f"{path}: missing field {error}") from error


def put(entry: TransformerEntry) -> None:
    validate(entry)
    metastore.put_item(entry.to_item())


def set_enabled(name: str, enabled: bool) -> TransformerEntry:
    item = metastore.update_attributes(
        metastore.REGISTRY_PARTITION,
        name,
        {"enabled": enabled},
        condition="attribute_exists(#sort_key)",
        condition_names={"#sort_key": metastore.SORT_KEY},
        return_new=True,
    )
    if item is None:
        raise RegistryError(f"no transformer named {name!r} is registered")
    return TransformerEntry.from_item(item)


def load_all() -> list[TransformerEntry]:
    entries = [TransformerEntry.from_item(item) for item in metastore.registry_items()]
    return sorted(entries, key=lambda e: e.name)


def get(name: str) -> TransformerEntry:
    item = metastore.get_item(metastore.REGISTRY_PARTITION, name)
    if not item:
        raise RegistryError(f"no transformer named {name!r} is registered")
    return TransformerEntry.from_item(item)


@dataclass
class RegistryCache:
    """Catapult's view of the registry: reloaded on a TTL and whenever an entry changes."""

    ttl_s: float = REGISTRY_TTL_S
    entries: list[TransformerEntry] = field(default_factory=list)
    loaded_at: float = -math.inf  # never loaded
    _index: Any = field(default=None, repr=False)
    _indexed: Any = field(default=None, repr=False)

    def current(self) -> list[TransformerEntry]:
        if time.monotonic() - self.loaded_at > self.ttl_s:
            self.refresh()
        return self.entries

    def refresh(self) -> None:
        self.entries = load_all()
        self.loaded_at = time.monotonic()

    def index(self) -> Any:  # dataharvest.due.DueIndex (imported here: due imports this module)
        """The current entries indexed by what can make them due, rebuilt when they change."""
        from dataharvest.due import DueIndex

        entries = self.current()
        if self._indexed is not entries:
            self._index, self._indexed = DueIndex(entries), entries
        return self._index


def as_image_record(image: dict[str, Any] | None, event_name: str = "MODIFY") -> dict[str, Any]:
    """A stream-record shape whose NewImage is `image` (DynamoDB JSON): filters written against
    the stream record can then be evaluated against an old image or a current item."""
    return {
        "eventName": event_name,
        "eventSource": "aws:dynamodb",
        "dynamodb": {"NewImage": image or {}},
    }


def entry_file(path: Path) -> Path:
    """A service folder or its transformer.yml."""
    return path / "transformer.yml" if path.is_dir() else path


def register(path: Path, stage: str) -> TransformerEntry:
    """Validate and store the entry a service ships; the target queue must exist."""
    import boto3

    sqs = boto3.client("sqs")

    def queue_url(name: str) -> str:
        try:
            return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except sqs.exceptions.QueueDoesNotExist as error:
            raise RegistryError(
                f"{path}: target queue {name!r} does not exist (deploy the service first)"
            ) from error

    entry = entry_from_file(entry_file(path), stage, queue_url)
    put(entry)
    return entry
