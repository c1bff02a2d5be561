"""The DynamoDB metastore: one item per client and business date, plus the transformer registry
under partition_key "#transformers". All access to the table goes through this module."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import lru_cache
from typing import Any

import boto3
from boto3.dynamodb.conditions import ConditionBase, Key
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from dataharvest.config import environment

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
def table(name: str | None = None) -> Any:
    return boto3.resource("dynamodb").Table(name or environment().metastore_table)


def item_key(client_id: str, business_date: str) -> dict[str, str]:
    return {PARTITION_KEY: client_id, SORT_KEY: business_date}


def get_item(client_id: str, business_date: str, *, consistent: bool = True) -> dict[str, Any]:
    response = table().get_item(Key=item_key(client_id, business_date), ConsistentRead=consistent)
    return response.get("Item") or {}


def update_attributes(
    client_id: str,
    sort_key: str,
    to_set: dict[str, Any],
    to_remove: Iterable[str] = (),
    condition: ConditionBase | str | None = None,
    condition_names: dict[str, str] | None = None,
    condition_values: dict[str, Any] | None = None,
    return_new: bool = False,
) -> dict[str, Any] | None:
    """SET `to_set` and REMOVE `to_remove` on one item, if `condition` holds.

    The one place that writes update expressions: attribute names always go through
    placeholders (item attributes such as `<name>_done` are free-form). Returns the item's new
    attributes (or {} unless `return_new`), or None when the condition did not hold; any other
    error is raised. A string condition may use `condition_names` / `condition_values`."""
    parts = []
    names: dict[str, str] = dict(condition_names or {})
    values: dict[str, Any] = dict(condition_values or {})
    if to_set:
        parts.append("SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(to_set))))
        names.update({f"#s{i}": name for i, name in enumerate(to_set)})
        values.update({f":s{i}": value for i, value in enumerate(to_set.values())})
    removing = list(to_remove)
    if removing:
        parts.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(removing))))
        names.update({f"#r{i}": name for i, name in enumerate(removing)})
    kwargs: dict[str, Any] = {
        "Key": item_key(client_id, sort_key),
        "UpdateExpression": " ".join(parts),
        "ExpressionAttributeNames": names,
    }
    if values:
        kwargs["ExpressionAttributeValues"] = values
    if condition is not None:
        kwargs["ConditionExpression"] = condition
    if return_new:
        kwargs["ReturnValues"] = "ALL_NEW"
    try:
        response = table().update_item(**kwargs)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return None
        raise
    return response.get("Attributes", {}) if return_new else {}


def put_item(item: dict[str, Any]) -> None:
    table().put_item(Item=item)


def delete_item(client_id: str, sort_key: str) -> None:
    table().delete_item(Key=item_key(client_id, sort_key))


def _query_pages(partition: str, consistent: bool = False) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": Key(PARTITION_KEY).eq(partition),
        "ConsistentRead": consistent,
    }
    while True:
        page = table().query(**kwargs)
        yield from page["Items"]
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def registry_items() -> Iterator[dict[str, Any]]:
    """The transformer registry's items, read consistently."""
    return _query_pages(REGISTRY_PARTITION, consistent=True)


def client_items(client_id: str) -> Iterator[dict[str, Any]]:
    return _query_pages(client_id)


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
