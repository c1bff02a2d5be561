"""The partner publisher's settled-upstream rule (no services): publish only when every
upstream transformer is done on the current versions of its inputs, or retracted where its
filter no longer matches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dataharvest.due import upstream
from dataharvest.registry import TransformerEntry
from dataharvest.transformers.publisher import upstream_settled
from dataharvest.transformers.runtime import output_version

SERVICES = Path(__file__).parents[2] / "services"
UPSTREAM = (
    "relationship_transformer",
    "tax_transformer",
    "sum_deposit_transformer",
    "transaction_transformer",
)


def entry(name: str) -> TransformerEntry:
    spec = yaml.safe_load((SERVICES / name / "transformer.yml").read_text())
    return TransformerEntry(
        name=spec["name"],
        filter_pattern=spec["filter"],
        target="http://queue",
        watch=tuple(spec["watch"]),
    )


def test_upstream_is_what_the_publisher_entry_watches() -> None:
    publisher = next(e for e in ENTRIES if e.name == "partner_publisher")
    assert {e.name for e in upstream(publisher, ENTRIES)} == set(UPSTREAM)


ENTRIES = [entry(name) for name in (*UPSTREAM, "partner_publisher")]


def settled_item(transactions: bool = True) -> dict:
    """An item as it looks once every upstream transformer has finished."""
    item = {
        "client_persisted": True,
        "client_version": "c1",
        "portfolio_persisted": True,
        "portfolio_version": "p1",
        "account_persisted": True,
        "account_version": "a1",
    }
    relationship = output_version(
        {"client_version": "c1", "portfolio_version": "p1", "account_version": "a1"}
    )
    item |= {
        "relationship_transformer_done": True,
        "relationship_transformer_version": relationship,
        "tax_transformer_done": True,
        "tax_transformer_version": output_version(
            {"relationship_transformer_version": relationship}
        ),
    }
    if transactions:
        summary = output_version(
            {"relationship_transformer_version": relationship, "transaction_version": "t1"}
        )
        item |= {
            "transaction_persisted": True,
            "transaction_version": "t1",
            "sum_deposit_transformer_done": True,
            "sum_deposit_transformer_version": summary,
            "transaction_transformer_done": True,
            "transaction_transformer_version": summary,
        }
    return item


def test_settled_with_and_without_transactions():
    assert upstream_settled(settled_item(), ENTRIES)
    assert upstream_settled(settled_item(transactions=False), ENTRIES)


@pytest.mark.parametrize(
    "change",
    [
        # A new transactions file: both portfolio transformers still on the old version.
        {"transaction_version": "t2"},
        # One of them finished the new version, the other not yet.
        {"transaction_version": "t2", "sum_deposit_transformer_version": "x"},
        # A new accounts file: the relationship transformer has not caught up.
        {"account_version": "a2"},
        # The transactions file was deleted but the portfolio side is not retracted yet.
        {"transaction_persisted": False},
        # A portfolio transformer has not run at all yet.
        {"transaction_transformer_done": False},
    ],
)
def test_not_settled_while_an_upstream_transformer_is_behind(change):
    assert not upstream_settled(settled_item() | change, ENTRIES)


def test_disabled_upstream_transformers_are_not_waited_for():
    from dataclasses import replace

    entries = [replace(e, enabled=e.name != "sum_deposit_transformer") for e in ENTRIES]
    item = settled_item() | {"sum_deposit_transformer_version": "stale"}
    assert upstream_settled(item, entries)
    assert not upstream_settled(item, ENTRIES)
