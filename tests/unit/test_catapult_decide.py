"""Catapult's decision rules (issue 5), on hand-made stream records: no services."""

from __future__ import annotations

import dataclasses

from dataharvest.catapult.decide import decide
from dataharvest.registry import TransformerEntry

ENTRY = TransformerEntry(
    name="relationship_transformer",
    filter_pattern={
        "dynamodb": {
            "NewImage": {
                "client_persisted": {"BOOL": [True]},
                "account_persisted": {"BOOL": [True]},
            }
        }
    },
    target="http://localhost/queue/relationship",
    watch=("client_version", "account_version"),
)


def image(**attributes) -> dict:
    typed = {"partition_key": {"S": "acme"}, "sort_key": {"S": "20240102"}}
    for key, value in attributes.items():
        typed[key] = {"BOOL": value} if isinstance(value, bool) else {"S": value}
    return typed


def record(old: dict | None, new: dict | None, event: str = "MODIFY") -> dict:
    ddb = {
        "Keys": {"partition_key": {"S": "acme"}, "sort_key": {"S": "20240102"}},
        "SequenceNumber": "100",
    }
    if old is not None:
        ddb["OldImage"] = old
    if new is not None:
        ddb["NewImage"] = new
    return {"eventID": "e1", "eventName": event, "dynamodb": ddb}


READY = {
    "client_persisted": True,
    "account_persisted": True,
    "client_version": "c1",
    "account_version": "a1",
}


def actions(rec: dict, entries=(ENTRY,)) -> list[tuple[str, str, dict]]:
    return [
        (d.entry.name, d.message.action, d.message.input_versions)
        for d in decide(rec, list(entries))
    ]


def test_apply_when_the_filter_becomes_true():
    old = image(client_persisted=True, client_version="c1")
    assert actions(record(old, image(**READY))) == [
        ("relationship_transformer", "APPLY", {"client_version": "c1", "account_version": "a1"})
    ]


def test_apply_on_insert_that_already_matches():
    assert actions(record(None, image(**READY), "INSERT"))[0][1] == "APPLY"


def test_nothing_on_an_unrelated_update():
    assert actions(record(image(**READY), image(**READY, tax_done=True))) == []


def test_apply_again_when_a_watched_input_changes():
    new = image(**{**READY, "account_version": "a2"})
    assert actions(record(image(**READY), new)) == [
        ("relationship_transformer", "APPLY", {"client_version": "c1", "account_version": "a2"})
    ]


def test_retract_when_an_input_goes_away():
    new = image(**{**READY, "account_persisted": False})
    assert actions(record(image(**READY), new)) == [
        ("relationship_transformer", "RETRACT", {"client_version": "c1", "account_version": "a1"})
    ]


def test_retract_when_the_item_is_removed():
    assert actions(record(image(**READY), None, "REMOVE"))[0][1] == "RETRACT"


def test_disabled_transformers_are_skipped():
    disabled = dataclasses.replace(ENTRY, enabled=False)
    assert actions(record(None, image(**READY), "INSERT"), [disabled]) == []


def test_registry_records_are_not_client_work():
    rec = record(None, image(**READY), "INSERT")
    rec["dynamodb"]["Keys"]["partition_key"]["S"] = "#transformers"
    assert actions(rec) == []


def test_idempotency_key_is_deterministic_and_depends_on_versions():
    first = decide(record(None, image(**READY), "INSERT"), [ENTRY])[0].message
    again = decide(record(None, image(**READY), "INSERT"), [ENTRY])[0].message
    other = decide(record(None, image(**{**READY, "client_version": "c2"}), "INSERT"), [ENTRY])[
        0
    ].message
    assert first.idempotency_key == again.idempotency_key
    assert first.idempotency_key != other.idempotency_key
