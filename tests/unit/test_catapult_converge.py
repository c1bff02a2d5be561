"""What an item needs from an entry now (catapult.converge.need): the rule of the enable sweep,
the reconciler and status's stuck marker, on hand-made items: no services."""

from __future__ import annotations

import dataclasses

import pytest

from dataharvest.catapult.converge import due, needs
from dataharvest.due import need
from dataharvest.registry import TransformerEntry
from dataharvest.work import output_version

ENTRY = TransformerEntry(
    name="tax_transformer",
    filter_pattern={"dynamodb": {"NewImage": {"relationship_transformer_done": {"BOOL": [True]}}}},
    target="http://localhost/queue/tax",
    watch=("relationship_transformer_version",),
)
CURRENT = output_version({"relationship_transformer_version": "r2"})
STALE = output_version({"relationship_transformer_version": "r1"})


def item(**attributes) -> dict:
    return {"partition_key": "acme", "sort_key": "20240102", **attributes}


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        # Due and never run, or run and retracted since: APPLY on the current versions.
        (
            {"relationship_transformer_done": True, "relationship_transformer_version": "r2"},
            ("APPLY", {"relationship_transformer_version": "r2"}),
        ),
        (
            {
                "relationship_transformer_done": True,
                "relationship_transformer_version": "r2",
                "tax_transformer_done": False,
            },
            ("APPLY", {"relationship_transformer_version": "r2"}),
        ),
        # Done for versions that moved since (changed while disabled): recompute.
        (
            {
                "relationship_transformer_done": True,
                "relationship_transformer_version": "r2",
                "tax_transformer_done": True,
                "tax_transformer_version": STALE,
            },
            ("APPLY", {"relationship_transformer_version": "r2"}),
        ),
        # Done for the current versions: nothing.
        (
            {
                "relationship_transformer_done": True,
                "relationship_transformer_version": "r2",
                "tax_transformer_done": True,
                "tax_transformer_version": CURRENT,
            },
            None,
        ),
        # Done, but the filter no longer matches: RETRACT, naming the output it retracts.
        (
            {
                "relationship_transformer_done": False,
                "tax_transformer_done": True,
                "tax_transformer_version": CURRENT,
            },
            ("RETRACT", {"tax_transformer_version": CURRENT}),
        ),
        # Neither due nor done: nothing.
        ({"relationship_transformer_done": False, "tax_transformer_done": False}, None),
        ({}, None),
    ],
)
def test_need(attributes: dict, expected) -> None:
    assert need(ENTRY, item(**attributes)) == expected


def test_a_disabled_entry_needs_nothing() -> None:
    disabled = dataclasses.replace(ENTRY, enabled=False)
    assert need(disabled, item(relationship_transformer_done=True)) is None
    assert need(disabled, item(tax_transformer_done=True)) is None


def test_retractions_of_different_outputs_have_different_keys() -> None:
    first = needs(ENTRY, item(tax_transformer_done=True, tax_transformer_version=STALE))
    second = needs(ENTRY, item(tax_transformer_done=True, tax_transformer_version=CURRENT))
    assert (first.action, second.action) == ("RETRACT", "RETRACT")
    assert first.idempotency_key != second.idempotency_key


def test_an_apply_has_catapults_key_for_the_same_versions() -> None:
    message = needs(
        ENTRY, item(relationship_transformer_done=True, relationship_transformer_version="r2")
    )
    assert message.input_versions == {"relationship_transformer_version": "r2"}
    assert (message.client_id, message.business_date) == ("acme", "20240102")


def test_due_names_the_entries_with_work_left() -> None:
    other = dataclasses.replace(ENTRY, name="other_transformer")
    current = item(
        relationship_transformer_done=True,
        relationship_transformer_version="r2",
        tax_transformer_done=True,
        tax_transformer_version=CURRENT,
    )
    assert due([ENTRY, other], current) == ["other_transformer"]
