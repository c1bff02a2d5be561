"""The DynamoDB metastore: one item per client and business date, plus the transformer registry
under partition_key "#transformers". All access to the table goes through this module."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from functools import lru_cache
from typing import Any

import boto3
from boto3.dynamodb.conditions import Key
from boto3.dynamodb.types import TypeDeserializer

from dataharvest.config import settings

PARTITION_KEY = "partition_key"
SORT_KEY = "sort_key"
REGISTRY_PARTITION = "#transformers"

# Entity (file name) -> attribute prefix in the metastore item (docs/SPEC.md §4.2).
INPUT_PREFIX = {
    "clients": "client",
    "portfolios": "portfolio",
    "accounts": "account",
    "transactions": "transaction",
}

_deserializer = TypeDeserializer()


@lru_cache(maxsize=4)
def table(name: str | None = None):
    return boto3.resource("dynamodb").Table(name or settings().metastore_table)


def item_key(client_id: str, business_date: str) -> dict[str, str]:
    return {PARTITION_KEY: client_id, SORT_KEY: business_date}


def get_item(client_id: str, business_date: str, *, consistent: bool = True) -> dict[str, Any]:
    response = table().get_item(Key=item_key(client_id, business_date), ConsistentRead=consistent)
    return response.get("Item") or {}


def client_items(client_id: str) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {"KeyConditionExpression": Key(PARTITION_KEY).eq(client_id)}
    while True:
        page = table().query(**kwargs)
        yield from page["Items"]
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def all_items() -> Iterator[dict[str, Any]]:
    """Every client/date item (not the registry), for status and registry backfills."""
    kwargs: dict[str, Any] = {}
    while True:
        page = table().scan(**kwargs)
        for item in page["Items"]:
            if not str(item[PARTITION_KEY]).startswith("#"):
                yield item
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def deserialize_image(image: dict[str, Any] | None) -> dict[str, Any]:
    """A stream image (DynamoDB JSON) as plain Python values (numbers as Decimal)."""
    return {k: _deserializer.deserialize(v) for k, v in (image or {}).items()}


def plain(value: Any) -> Any:
    """Item values for printing/JSON: Decimal integers as int, other Decimals as str."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, set, tuple)):
        return [plain(v) for v in value]
    return value
