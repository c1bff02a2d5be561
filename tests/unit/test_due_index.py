"""Catapult's registry index (dataharvest.due.DueIndex) decides exactly what evaluating every
entry decides: randomized registries and stream records, compared decision by decision."""

from __future__ import annotations

import random
from typing import Any

import pytest

from dataharvest.due import Change, DueIndex, new_image_attributes, on_change
from dataharvest.registry import TransformerEntry

ATTRIBUTES = [f"a{i}" for i in range(8)]
VALUES: list[dict[str, Any]] = [
    {"BOOL": True},
    {"BOOL": False},
    {"S": "x"},
    {"S": "y"},
    {"N": "1"},
    {"N": "2"},
    {"NULL": True},
]


def plain_evaluation(entries: list[TransformerEntry], change: Change) -> list[tuple]:
    """The straightforward rule: every enabled entry, in registry order."""
    return [
        (entry, *wanted)
        for entry in entries
        if entry.enabled and (wanted := on_change(entry, change)) is not None
    ]


def leaf_rule(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(6)
    if kind == 0:
        return {"BOOL": [True]}
    if kind == 1:
        return {"S": [rng.choice(["x", "y"])]}
    if kind == 2:
        return {"N": [{"exists": rng.random() < 0.5}]}
    if kind == 3:
        return {"S": [{"anything-but": ["x"]}]}
    if kind == 4:
        return {"N": [{"prefix": "1"}]}
    return {"NULL": [True]}


def image_pattern(rng: random.Random) -> dict[str, Any]:
    attributes = rng.sample(ATTRIBUTES, rng.randint(1, 3))
    pattern: dict[str, Any] = {a: leaf_rule(rng) for a in attributes}
    if rng.random() < 0.2:  # an attribute that must be absent
        pattern[rng.choice(ATTRIBUTES)] = [{"exists": False}]
    if rng.random() < 0.2:
        pattern["$or"] = [{a: leaf_rule(rng)} for a in rng.sample(ATTRIBUTES, 2)]
    return pattern


def filter_pattern(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(10)
    if kind == 0:  # reads the keys: not indexable
        return {"dynamodb": {"Keys": {"sort_key": {"S": ["20240102"]}}}}
    if kind == 1:  # reads the event name: not indexable
        return {"eventName": ["MODIFY"], "dynamodb": {"NewImage": image_pattern(rng)}}
    if kind == 2:  # $or at the root over images
        return {
            "$or": [
                {"dynamodb": {"NewImage": image_pattern(rng)}},
                {"dynamodb": {"NewImage": image_pattern(rng)}},
            ]
        }
    if kind == 3:  # an arm outside the image: not indexable
        return {
            "$or": [
                {"dynamodb": {"NewImage": image_pattern(rng)}},
                {"dynamodb": {"OldImage": image_pattern(rng)}},
            ]
        }
    return {"dynamodb": {"NewImage": image_pattern(rng)}}


def registry(rng: random.Random, count: int) -> list[TransformerEntry]:
    return [
        TransformerEntry(
            name=f"t{i}",
            filter_pattern=filter_pattern(rng),
            target="http://localhost/q",
            enabled=rng.random() < 0.9,
            watch=tuple(rng.sample(ATTRIBUTES, rng.randint(0, 2))),
        )
        for i in range(count)
    ]


def image(rng: random.Random) -> dict[str, Any]:
    return {a: rng.choice(VALUES) for a in ATTRIBUTES if rng.random() < 0.5}


def stream_record(rng: random.Random) -> dict[str, Any]:
    keys = {"partition_key": {"S": "c1"}, "sort_key": {"S": rng.choice(["20240102", "20240103"])}}
    old = {**keys, **image(rng)}
    new = dict(old)
    for attribute in rng.sample(ATTRIBUTES, rng.randint(0, 2)):  # a MODIFY changes a few
        if rng.random() < 0.3:
            new.pop(attribute, None)
        else:
            new[attribute] = rng.choice(VALUES)
    event = rng.choices(["MODIFY", "INSERT", "REMOVE"], weights=[8, 1, 1])[0]
    ddb: dict[str, Any] = {"Keys": keys, "SequenceNumber": "1"}
    if event != "REMOVE":
        ddb["NewImage"] = new
    if event != "INSERT":
        ddb["OldImage"] = old
    return {"eventID": "1", "eventName": event, "eventSource": "aws:dynamodb", "dynamodb": ddb}


def test_index_decides_exactly_what_plain_evaluation_decides() -> None:
    decided = skipped = 0
    for seed in range(40):
        rng = random.Random(seed)
        entries = registry(rng, rng.choice([1, 5, 30]))
        index = DueIndex(entries)
        for _ in range(150):
            change = Change.of(stream_record(rng))
            expected = plain_evaluation(entries, change)
            assert index.on_change(change) == expected, f"seed {seed}"
            decided += len(expected)
            skipped += len(index.entries) - len(index.candidates(change))
    # The generator produces due entries, and the index does rule entries out.
    assert decided > 500
    assert skipped > 10_000


def test_an_unrelated_change_evaluates_no_indexed_entry() -> None:
    entries = [
        TransformerEntry(
            name=f"t{i}",
            filter_pattern={"dynamodb": {"NewImage": {f"t{i}_ready": {"BOOL": [True]}}}},
            target="http://localhost/q",
            watch=(f"t{i}_version",),
        )
        for i in range(100)
    ]
    old = {"partition_key": {"S": "c"}, "sort_key": {"S": "20240102"}}
    new = {**old, "t7_ready": {"BOOL": True}, "t7_version": {"S": "v1"}}
    change = Change.of({"eventName": "MODIFY", "dynamodb": {"OldImage": old, "NewImage": new}})
    assert [e.name for e in DueIndex(entries).candidates(change)] == ["t7"]


@pytest.mark.parametrize(
    ("pattern", "attributes"),
    [
        ({"dynamodb": {"NewImage": {"a": {"S": ["x"]}}}}, {"a"}),
        ({"dynamodb": {"NewImage": {"$or": [{"a": [1]}, {"b": [2]}]}}}, {"a", "b"}),
        (
            {
                "$or": [
                    {"dynamodb": {"NewImage": {"a": [1]}}},
                    {"dynamodb": {"NewImage": {"c": [1]}}},
                ]
            },
            {"a", "c"},
        ),
        ({"dynamodb": {"Keys": {"sort_key": {"S": ["x"]}}}}, None),
        ({"eventName": ["INSERT"]}, None),
        ({"dynamodb": {"NewImage": {"a": [1]}, "OldImage": {"a": [1]}}}, None),
    ],
)
def test_what_a_filter_reads(pattern: dict, attributes: set[str] | None) -> None:
    read = new_image_attributes(pattern)
    assert (None if read is None else set(read)) == attributes
