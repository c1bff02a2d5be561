"""Enabling a transformer converges every item to what the registry says now (issue 12, part
2): APPLY where due, RETRACT where done but no longer due, recompute where done for versions
that moved while it was disabled; for a transformer and for the partner publisher. Uploads go
through S3 and the CLI commands run against the session's local stack."""

from __future__ import annotations

import json

import pytest
from choreography_support import (
    DAY,
    EXAMPLE,
    FLAGS,
    flags,
    outputs,
    upload,
    upload_drop,
)
from drops import delete_upload

from dataharvest_local import cli

pytestmark = pytest.mark.integration

ALL_DONE = dict.fromkeys(FLAGS, True)


@pytest.fixture
def disabled(local_stack):
    """Disable transformers by name for one test; every one is enabled again afterwards (the
    registry is shared by the whole session)."""
    names: list[str] = []

    def disable(name: str) -> None:
        assert cli.main(["transformers", "disable", name]) == 0
        names.append(name)

    yield disable
    for name in names:
        cli.main(["transformers", "enable", name, "--no-backfill"])


def enable(name: str) -> None:
    # Enable backfills (converges) and waits until the choreography is quiet.
    assert cli.main(["transformers", "enable", name]) == 0


def stuck(client_id: str, capsys) -> list[str]:
    capsys.readouterr()
    assert cli.main(["status", "--client", client_id, "--date", DAY, "--json"]) == 0
    return [name for item in json.loads(capsys.readouterr().out) for name in item["stuck"]]


def test_enable_retracts_what_became_invalid_while_disabled(
    stack_info, db, client_id, wait_quiet, disabled, capsys
):
    # The random walk of the issue: full drop, disable tax, remove clients, enable tax.
    upload_drop(stack_info, client_id)
    wait_quiet()
    assert outputs(db, client_id)["client-tax"] != []
    disabled("tax_transformer")
    delete_upload(stack_info, f"{client_id}/clients_{DAY}.csv")
    wait_quiet()
    # Catapult skipped the disabled entry: the tax summary and the messages are left behind.
    assert flags(client_id)["tax_transformer_done"] is True
    assert "tax_transformer" not in stuck(client_id, capsys)  # disabled: never stuck
    enable("tax_transformer")
    # Everything derives from the links, which need the clients file.
    assert flags(client_id) == {"client_persisted": False, **dict.fromkeys(FLAGS, False)}
    found = outputs(db, client_id)
    assert (found["portfolio-summary"], found["client-tax"], found["messages"]) == ([], [], [])
    assert stuck(client_id, capsys) == []


def test_enable_recomputes_what_is_done_for_versions_that_moved(
    stack_info, db, client_id, wait_quiet, disabled
):
    upload_drop(stack_info, client_id)
    wait_quiet()
    disabled("tax_transformer")
    # Account 50001 paid more taxes: C-1001's tax summary must follow once tax runs again.
    accounts = (EXAMPLE / f"accounts_{DAY}.csv").read_text()
    changed = accounts.replace("50001,5000.00,EUR,120.50", "50001,5000.00,EUR,999.99")
    assert changed != accounts
    upload(stack_info, client_id, f"accounts_{DAY}.csv", changed.encode())
    wait_quiet()
    assert ("C-1001", "801.00", "120.50") in [
        tuple(r.values()) for r in outputs(db, client_id)["client-tax"]
    ]
    enable("tax_transformer")
    assert ("C-1001", "801.00", "999.99") in [
        tuple(r.values()) for r in outputs(db, client_id)["client-tax"]
    ]
    client_messages = [
        json.loads(body)
        for kind, body in outputs(db, client_id)["messages"]
        if kind == "client_message"
    ]
    assert {m["client_reference"]: m["taxes_paid"] for m in client_messages}["C-1001"] == "999.99"
    assert flags(client_id) == {"client_persisted": True, **ALL_DONE}


def test_enable_retracts_after_a_whole_file_rejection_while_disabled(
    stack_info, db, client_id, wait_quiet, disabled
):
    upload_drop(stack_info, client_id)
    wait_quiet()
    disabled("tax_transformer")
    # No tax_free_allowance column: the clients file is rejected whole.
    upload(stack_info, client_id, f"clients_{DAY}.csv", b"record_id,client_reference\n1,C-1001\n")
    wait_quiet()
    enable("tax_transformer")
    assert flags(client_id)["client_persisted"] is False
    assert flags(client_id)["tax_transformer_done"] is False
    assert outputs(db, client_id)["client-tax"] == []


def test_enabling_the_publisher_retracts_its_messages(
    stack_info, db, client_id, wait_quiet, disabled
):
    upload_drop(stack_info, client_id)
    wait_quiet()
    disabled("partner_publisher")
    delete_upload(stack_info, f"{client_id}/accounts_{DAY}.csv")
    wait_quiet()
    assert outputs(db, client_id)["messages"] != []  # left behind while disabled
    enable("partner_publisher")
    assert outputs(db, client_id)["messages"] == []
    assert flags(client_id)["partner_publisher_done"] is False
    # The input returns: everything is computed again, exactly as a clean run.
    upload(stack_info, client_id, f"accounts_{DAY}.csv")
    wait_quiet()
    assert flags(client_id) == {"client_persisted": True, **ALL_DONE}
