"""dataharvest_local.aws's DynamoDB Query patch: a Query on a table's key reads that partition
only, and answers exactly what moto's own Query answers.

Runs moto in this process (mock_aws), with the patch applied as the local server applies it.
The reference answer comes from moto's original Table.query, put back for the call."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

from dataharvest_local.aws import patch_moto

HASHES = {"S": ["a", "b", "c"], "N": ["1", "2", "3"]}
ABSENT_HASH = {"S": "zz", "N": "99"}
RANGES = {"S": ["a", "ab", "b", "ba", "c", "x"], "N": ["-1", "0", "1", "2.5", "10"]}

patch_moto()
PATCHED_QUERY = Table.query
ORIGINAL_QUERY = PATCHED_QUERY.dataharvest_original


def _value(kind: str, text: str) -> dict[str, str]:
    return {kind: text}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    hash_type = draw(st.sampled_from(["S", "N"]))
    range_type = draw(st.sampled_from([None, "S", "N"]))
    hashes = st.sampled_from(HASHES[hash_type])
    ranges = st.sampled_from(RANGES[range_type]) if range_type else st.none()
    operation = st.tuples(
        st.sampled_from(["put", "put", "put", "delete", "update"]),
        hashes,
        ranges,
        st.integers(-3, 3),
        st.booleans(),
    )
    operations = draw(st.lists(operation, max_size=40))
    query: dict[str, Any] = {
        "hash": draw(st.sampled_from([*HASHES[hash_type], ABSENT_HASH[hash_type]]))
    }
    conditions = ["none"]
    if range_type:
        conditions += ["=", "<", "<=", ">", ">=", "between"]
        if range_type == "S":
            conditions.append("begins_with")
    query["condition"] = draw(st.sampled_from(conditions))
    if range_type:
        query["bounds"] = draw(
            st.lists(st.sampled_from(RANGES[range_type]), min_size=2, max_size=2)
        )
    query["filter"] = draw(st.sampled_from([None, "v > :f", "attribute_exists(w)", "v = :f"]))
    query["filter_value"] = draw(st.integers(-3, 3))
    query["limit"] = draw(st.one_of(st.none(), st.integers(1, 4)))
    query["forward"] = draw(st.booleans())
    query["project"] = draw(st.booleans())
    query["count"] = draw(st.booleans())
    return {"hash_type": hash_type, "range_type": range_type, "ops": operations, "query": query}


def _make_table(dynamodb: Any, hash_type: str, range_type: str | None) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": hash_type}]
    if range_type:
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": range_type})
    dynamodb.create_table(
        TableName=name,
        KeySchema=schema,
        AttributeDefinitions=attributes,
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def _key(scenario: dict[str, Any], hash_value: str, range_value: str | None) -> dict[str, Any]:
    key = {"pk": _value(scenario["hash_type"], hash_value)}
    if scenario["range_type"]:
        key["sk"] = _value(scenario["range_type"], str(range_value))
    return key


def _apply(dynamodb: Any, table: str, scenario: dict[str, Any]) -> None:
    for kind, hash_value, range_value, number, with_w in scenario["ops"]:
        key = _key(scenario, hash_value, range_value)
        if kind == "put":
            item = {**key, "v": {"N": str(number)}}
            if with_w:
                item["w"] = {"S": f"w{number}"}
            dynamodb.put_item(TableName=table, Item=item)
        elif kind == "delete":
            dynamodb.delete_item(TableName=table, Key=key)
        else:  # update creates the item when it is absent, as DynamoDB does
            dynamodb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET v = if_not_exists(v, :zero) + :n",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":n": {"N": str(number)}},
            )


def _request(table: str, scenario: dict[str, Any]) -> dict[str, Any]:
    query, range_type = scenario["query"], scenario["range_type"]
    names = {"#pk": "pk"}
    values: dict[str, Any] = {":h": _value(scenario["hash_type"], query["hash"])}
    condition = "#pk = :h"
    if query["condition"] != "none":
        names["#sk"] = "sk"
        low, high = query["bounds"]
        values[":r"] = _value(range_type, low)
        if query["condition"] == "between":
            values[":r2"] = _value(range_type, high)
            condition += " AND #sk BETWEEN :r AND :r2"
        elif query["condition"] == "begins_with":
            condition += " AND begins_with(#sk, :r)"
        else:
            condition += f" AND #sk {query['condition']} :r"
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ScanIndexForward": query["forward"],
    }
    if query["filter"]:
        request["FilterExpression"] = query["filter"]
        if ":f" in query["filter"]:
            values[":f"] = {"N": str(query["filter_value"])}
    if query["limit"] is not None:
        request["Limit"] = query["limit"]
    if query["count"]:
        request["Select"] = "COUNT"
    elif query["project"]:
        request["ProjectionExpression"] = "#pk, v"
    request["ExpressionAttributeNames"] = names
    request["ExpressionAttributeValues"] = values
    return request


def _all_pages(dynamodb: Any, request: dict[str, Any]) -> list[Any]:
    """Every page until LastEvaluatedKey is absent (or the error), without response metadata."""
    pages: list[Any] = []
    start = None
    for _ in range(100):
        call = dict(request)
        if start is not None:
            call["ExclusiveStartKey"] = start
        try:
            page = dynamodb.query(**call)
        except ClientError as error:
            pages.append(("error", error.response["Error"]))
            return pages
        page.pop("ResponseMetadata", None)
        pages.append(page)
        start = page.get("LastEvaluatedKey")
        if start is None:
            return pages
    raise AssertionError("pagination did not end in 100 pages")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_patched_query_answers_what_motos_query_answers(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch, scenario: dict[str, Any]
) -> None:
    table = _make_table(dynamodb, scenario["hash_type"], scenario["range_type"])
    try:
        _apply(dynamodb, table, scenario)
        request = _request(table, scenario)
        patched = _all_pages(dynamodb, request)
        with monkeypatch.context() as m:
            m.setattr(Table, "query", ORIGINAL_QUERY)
            reference = _all_pages(dynamodb, request)
        assert patched == reference
    finally:
        dynamodb.delete_table(TableName=table)


def test_query_reads_only_the_asked_partition(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's own Query compares the hash key of every item of the table (and sorts them all);
    the patched one looks the partition up. Counted on DynamoType's equality."""
    table = _make_table(dynamodb, "S", "S")
    try:
        backend_table = _moto_table(table)
        for n in range(2000):
            backend_table.put_item(
                {"pk": {"S": f"other-{n % 50}"}, "sk": {"S": f"{n:05d}"}, "v": {"N": "1"}}
            )
        for n in range(30):
            backend_table.put_item({"pk": {"S": "asked"}, "sk": {"S": f"{n:05d}"}})
        comparisons = [0]
        equal = DynamoType.__eq__

        def counting_eq(self: DynamoType, other: DynamoType) -> bool:
            comparisons[0] += 1
            return equal(self, other)

        request = {
            "TableName": table,
            "KeyConditionExpression": "pk = :h",
            "ExpressionAttributeValues": {":h": {"S": "asked"}},
        }
        monkeypatch.setattr(DynamoType, "__eq__", counting_eq)
        items = dynamodb.query(**request)["Items"]
        patched_comparisons = comparisons[0]
        monkeypatch.setattr(Table, "query", ORIGINAL_QUERY)
        comparisons[0] = 0
        assert dynamodb.query(**request)["Items"] == items
        original_comparisons = comparisons[0]
        assert [i["sk"]["S"] for i in items] == [f"{n:05d}" for n in range(30)]
        # The original compares each of the 2,030 items' hash keys; the patch, the 30 it reads
        # at most (and the lookup's one).
        assert original_comparisons >= 2030
        assert patched_comparisons <= 100
    finally:
        dynamodb.delete_table(TableName=table)


def _moto_table(name: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends["123456789012"]["us-east-1"].get_table(name)
