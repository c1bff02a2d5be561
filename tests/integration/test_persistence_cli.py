"""`dataharvest config ...` and `dataharvest dlq ...` against the test session's local stack."""

from __future__ import annotations

import json

import boto3
import pytest
from persistence_support import accounts_file, input_state, key, put, raw_rows, s3_event

from dataharvest import cli


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
    }


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
    db.execute("DELETE FROM raw.accounts WHERE client_id = %s", (client_id,))
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
    assert input_state(client_id, "account")["version"] == version
