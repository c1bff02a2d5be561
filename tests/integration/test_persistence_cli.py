"""`dataharvest config ...` and `dataharvest dlq ...` against the test session's local stack."""

from __future__ import annotations

import json

import boto3
import pytest
from persistence_support import (
    accounts_file,
    current_load_id,
    input_state,
    key,
    put,
    raw_rows,
    s3_event,
)

from dataharvest_local import cli

pytestmark = pytest.mark.integration


def test_config_set_alias_ratio_and_show(client_id, capsys, local_stack) -> None:
    assert (
        cli.main(
            [
                "config",
                "set-alias",
                "--client",
                client_id,
                "--entity",
                "accounts",
                " Accout_Number ",
                "account_number",
            ]
        )
        == 0
    )
    assert cli.main(["config", "set-max-reject-ratio", "--client", client_id, "0.25"]) == 0
    capsys.readouterr()
    assert cli.main(["config", "show", "--client", client_id]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "client_id": client_id,
        "max_reject_ratio": "0.25",
        "header_aliases": {"accounts": {"accout_number": "account_number"}},
        "max_inflated_bytes": 21474836480,
        "max_inflation_ratio": "100",
        "retention_days": 400,
    }


def test_config_set_inflation_limits_and_show(client_id, capsys, local_stack) -> None:
    set_limits = ["config", "set-inflation-limits", "--client", client_id]
    assert cli.main([*set_limits, "--max-inflation-ratio", "40"]) == 0
    assert cli.main(["config", "show", "--client", client_id]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "client_id": client_id,
        "max_reject_ratio": "0.10",
        "header_aliases": {},
        "max_inflated_bytes": 21474836480,
        "max_inflation_ratio": "40",
        "retention_days": 400,
    }
    assert cli.main([*set_limits, "--max-inflated-bytes", "1000000"]) == 0
    assert (
        cli.main([*set_limits, "--max-inflated-bytes", "2000000", "--max-inflation-ratio", "7.5"])
        == 0
    )
    assert cli.main(["config", "show", "--client", client_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["max_inflated_bytes"], shown["max_inflation_ratio"]) == (2000000, "7.5")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set-alias", "--entity", "accounts", "acct", "iban"], "accounts has no column 'iban'"),
        (
            ["set-alias", "--entity", "accounts", "currency", "account_number"],
            "'currency' is already a column of accounts",
        ),
        (["set-max-reject-ratio", "1.5"], "must be between 0 and 1"),
        (["set-max-reject-ratio", "ten"], "'ten' is not a number"),
        (["set-inflation-limits"], "give --max-inflated-bytes, --max-inflation-ratio or both"),
        (
            ["set-inflation-limits", "--max-inflated-bytes", "20GiB"],
            "'20GiB' is not a whole number of bytes",
        ),
        (["set-inflation-limits", "--max-inflated-bytes", "0"], "must be positive, got 0"),
        (["set-inflation-limits", "--max-inflation-ratio", "0.5"], "must be at least 1, got 0.5"),
        (["set-inflation-limits", "--max-inflation-ratio", "NaN"], "must be at least 1, got NaN"),
        (["set-inflation-limits", "--max-inflation-ratio", "x"], "'x' is not a number"),
    ],
)
def test_config_refuses_bad_settings(client_id, local_stack, argv, message) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["config", argv[0], "--client", client_id, *argv[1:]])
    assert message in str(raised.value)


def test_dlq_list_and_redrive(client_id, capsys, db, stack_info, wait_quiet) -> None:
    sqs = boto3.client("sqs")
    dlq_url = stack_info.export("PersistenceDeadLetterQueueUrl")
    object_key = key(client_id, "accounts")
    version = put(object_key, accounts_file(2))
    wait_quiet()
    first_seq = input_state(client_id, "account")["seq"]
    db.execute("DELETE FROM raw_store.accounts WHERE client_id = %s", (client_id,))
    db.execute("DELETE FROM audit.file_loads WHERE client_id = %s", (client_id,))
    # A delivery that failed maxReceiveCount times, as the queue's redrive policy leaves it.
    sqs.send_message(QueueUrl=dlq_url, MessageBody=s3_event(object_key, "ObjectCreated:Put"))

    def letters() -> list[dict]:
        capsys.readouterr()
        assert cli.main(["dlq", "list", "--json", "--queue", "persistence-dlq"]) == 0
        return json.loads(capsys.readouterr().out)

    assert [(letter["queue"], letter["keys"]) for letter in letters()] == [
        ("persistence-dlq", [object_key])
    ]
    assert len(letters()) == 1  # listing leaves the messages in place

    assert cli.main(["dlq", "redrive", "--queue", "persistence-dlq", "--no-wait"]) == 0
    wait_quiet()
    assert letters() == []
    assert len(raw_rows(db, "accounts", client_id)) == 2
    # The redriven delivery loaded the version again: a new load, written to the item.
    seq = current_load_id(db, client_id, "accounts")
    assert seq > first_seq
    assert input_state(client_id, "account") == {
        "persisted": True,
        "version": version,
        "seq": seq,
        "rows": 2,
        "rejections": 0,
    }
