"""dataharvest_local.aws's DynamoDB attribute-value serializer: what the local endpoint answers
is exactly what moto's own serializer answers, for any attribute values, and the fast path is
the one taken.

Runs moto in this process (mock_aws), with the patches applied as the local server applies
them; the reference comes from moto's original serializer method, put back for the call."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.core import serialize

from dataharvest_local.aws import attribute_value_json, patch_moto

patch_moto()
PATCHED = serialize.BaseJSONSerializer._serialize_type_structure
ORIGINAL = PATCHED.dataharvest_original


names = st.text(alphabet="abcxyz_", min_size=1, max_size=3)
numbers = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(-1000, 1000, places=3, allow_nan=False, allow_infinity=False).map(str),
)
scalars = st.one_of(
    st.text(max_size=6).map(lambda s: {"S": s}),
    numbers.map(lambda n: {"N": n}),
    st.binary(max_size=6).map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(st.text(min_size=1, max_size=3), min_size=1, max_size=3).map(
        lambda s: {"SS": sorted(s)}
    ),
    st.sets(st.integers(-99, 99), min_size=1, max_size=3).map(
        lambda s: {"NS": [str(n) for n in sorted(s)]}
    ),
    st.sets(st.binary(min_size=1, max_size=3), min_size=1, max_size=3).map(
        lambda s: {"BS": sorted(s)}
    ),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda items: {"L": items}),
        st.dictionaries(names, children, max_size=3).map(lambda m: {"M": m}),
    ),
    max_leaves=12,
)
items = st.lists(st.dictionaries(names, values, max_size=5), min_size=1, max_size=4)


def _table(dynamodb: Any) -> str:
    name = f"s-{uuid.uuid4().hex[:12]}"
    dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def _reads(dynamodb: Any, table: str, count: int) -> list[Any]:
    """Every call that answers attribute values: an UpdateItem returning the whole new item
    (first: it sets an attribute only if absent, so a second round answers as the first), then
    GetItem, Query, Scan and BatchGetItem."""
    key = {"pk": {"S": "p"}, "sk": {"N": "0"}}
    answers = [
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET touched = if_not_exists(touched, :zero)",
            ExpressionAttributeValues={":zero": {"N": "0"}},
            ReturnValues="ALL_NEW",
        ),
        dynamodb.get_item(TableName=table, Key=key),
        dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
            Limit=max(1, count - 1),
        ),
        dynamodb.scan(TableName=table),
        dynamodb.batch_get_item(RequestItems={table: {"Keys": [key]}}),
    ]
    for answer in answers:
        answer.pop("ResponseMetadata", None)
    return answers


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=items)
def test_patched_serializer_answers_what_motos_answers(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]]
) -> None:
    table = _table(dynamodb)
    try:
        for n, row in enumerate(rows):
            attributes = {k: v for k, v in row.items() if k not in ("pk", "sk")}
            dynamodb.put_item(
                TableName=table, Item={**attributes, "pk": {"S": "p"}, "sk": {"N": str(n)}}
            )
        patched = _reads(dynamodb, table, len(rows))
        with monkeypatch.context() as m:
            m.setattr(serialize.BaseJSONSerializer, "_serialize_type_structure", ORIGINAL)
            reference = _reads(dynamodb, table, len(rows))
        assert patched == reference
    finally:
        dynamodb.delete_table(TableName=table)


def test_attribute_values_take_the_fast_path(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 30-item page of 14 attributes: moto's way asks its attribute picker for each member of
    each attribute value (thousands of calls); the fast path for the response's own members."""
    table = _table(dynamodb)
    try:
        for n in range(30):
            item = {f"a{i}": {"N": str(i)} for i in range(12)}
            dynamodb.put_item(TableName=table, Item={**item, "pk": {"S": "p"}, "sk": {"N": str(n)}})
        calls = [0]
        picker = serialize.AttributePicker.__call__

        def counting(self: Any, context: Any) -> Any:
            calls[0] += 1
            return picker(self, context)

        monkeypatch.setattr(serialize.AttributePicker, "__call__", counting)
        query = {
            "TableName": table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "p"}},
        }
        fast = dynamodb.query(**query)
        fast_calls, calls[0] = calls[0], 0
        monkeypatch.setattr(serialize.BaseJSONSerializer, "_serialize_type_structure", ORIGINAL)
        assert dynamodb.query(**query)["Items"] == fast["Items"]
        assert calls[0] >= 30 * 14 * 10
        assert fast_calls < 20
    finally:
        dynamodb.delete_table(TableName=table)


def test_unknown_forms_go_motos_way() -> None:
    def b64(value: bytes) -> str:
        return value.hex()

    assert attribute_value_json({"S": "x", "N": None}, b64) == {"S": "x"}
    assert attribute_value_json({"M": {"a": {"B": b"\x01"}}}, b64) == {"M": {"a": {"B": "01"}}}
    assert attribute_value_json({"X": 1}, b64) is None
    assert attribute_value_json({"L": [{"S": "a"}, {"Q": 1}]}, b64) is None
    assert attribute_value_json({"M": {"a": "not a value"}}, b64) is None
    assert attribute_value_json("S", b64) is None
