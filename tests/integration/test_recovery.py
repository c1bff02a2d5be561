"""Dead-lettered transformer work is not stranded (issue 12, part 1): a real database outage
(PostgreSQL refuses connections and the open ones are cut) outlasts a transformer's retries;
`dlq list` shows the work, `status` marks the item stuck, and `dlq redrive` or `reconcile`
restores outputs equal to a clean run. Catapult's on-failure records are answered by the
reconciler. Everything runs on the session's local stack."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import psycopg
import pytest
from choreography_support import DAY, FLAGS, flags, outputs, upload_drop
from outage import database_outage

from dataharvest import metastore, registry
from dataharvest_local import cli
from dataharvest_local.slsconfig import LOCAL_ACCOUNT_ID

pytestmark = pytest.mark.integration

ECHO = Path(__file__).parents[1] / "fixtures" / "services" / "echo_transformer"


def letters(capsys, queue: str | None = None) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["dlq", "list", "--json", *(["--queue", queue] if queue else [])]) == 0
    return json.loads(capsys.readouterr().out)


def mine(found: list[dict], client_id: str) -> list[str]:
    """The keys of the dead letters about this client."""
    return [key for letter in found for key in letter["keys"] if key.startswith(f"{client_id}/")]


def stuck(capsys, client_id: str) -> list[str]:
    capsys.readouterr()
    assert cli.main(["status", "--client", client_id, "--json"]) == 0
    return [name for item in json.loads(capsys.readouterr().out) for name in item["stuck"]]


@pytest.fixture
def clean_run(stack_info, local_stack, wait_quiet, client_id) -> dict:
    """The outputs of the same drop run without trouble, for another client."""
    clean = f"{client_id}-clean"
    upload_drop(stack_info, clean)
    wait_quiet()
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        return outputs(conn, clean)


def work_stranded_by_an_outage(local_stack, stack_info, client_id, wait_quiet) -> None:
    """Inputs persisted while tax_transformer is disabled; enabling it during an outage sends
    its work, which fails on every delivery and is dead-lettered (maxReceiveCount 5)."""
    assert cli.main(["transformers", "disable", "tax_transformer"]) == 0
    try:
        upload_drop(stack_info, client_id)
        wait_quiet()
        with database_outage(local_stack.info.database_url):
            assert cli.main(["transformers", "enable", "tax_transformer", "--no-backfill"]) == 0
            sent = [m for m in _backfill("tax_transformer") if m.client_id == client_id]
            assert [(m.business_date, m.action) for m in sent] == [(DAY, "APPLY")]
            wait_quiet()
    finally:
        cli.main(["transformers", "enable", "tax_transformer", "--no-backfill"])


def _backfill(name: str):
    from dataharvest import catapult

    return catapult.backfill(registry.get(name))


def test_outage_then_dlq_redrive_restores_outputs_equal_to_a_clean_run(
    local_stack, stack_info, client_id, wait_quiet, clean_run, capsys
):
    work_stranded_by_an_outage(local_stack, stack_info, client_id, wait_quiet)
    mine = [
        letter
        for letter in letters(capsys)
        if any(key.startswith(f"{client_id}/") for key in letter["keys"])
    ]
    assert [(letter["queue"], letter["keys"]) for letter in mine] == [
        ("tax-transformer-dlq", [f"{client_id}/{DAY} tax_transformer APPLY"])
    ]
    assert stuck(capsys, client_id) == ["tax_transformer"]
    item = metastore.get_item(client_id, DAY)
    assert "OperationalError" in item["tax_transformer_error"]

    assert cli.main(["dlq", "redrive", "--no-wait"]) == 0
    wait_quiet()
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        assert outputs(conn, client_id) == clean_run
    assert flags(client_id) == {"client_persisted": True, **dict.fromkeys(FLAGS, True)}
    assert stuck(capsys, client_id) == []
    assert "tax_transformer_error" not in metastore.get_item(client_id, DAY)
    assert letters(capsys, "tax-transformer-dlq") == []


def test_outage_then_reconcile_restores_outputs_and_a_late_redrive_changes_nothing(
    local_stack, stack_info, client_id, wait_quiet, clean_run, capsys
):
    work_stranded_by_an_outage(local_stack, stack_info, client_id, wait_quiet)
    capsys.readouterr()
    assert cli.main(["reconcile", "--client", client_id, "--json", "--no-wait"]) == 0
    dispatched = json.loads(capsys.readouterr().out)
    assert [(m["business_date"], m["transformer"], m["action"]) for m in dispatched] == [
        (DAY, "tax_transformer", "APPLY")
    ]
    wait_quiet()
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        assert outputs(conn, client_id) == clean_run
        runs = conn.execute(
            "SELECT count(*) FROM audit.transformer_runs WHERE client_id = %s "
            "AND transformer = 'tax_transformer' AND outcome = 'succeeded'",
            (client_id,),
        ).fetchone()[0]
    assert runs == 1
    assert stuck(capsys, client_id) == []
    # The dead letter is the same work (same key): redriving it later is a no-op. It is there
    # before the redrive and gone after it, so the redrive did deliver it.
    assert mine(letters(capsys, "tax-transformer-dlq"), client_id) == [
        f"{client_id}/{DAY} tax_transformer APPLY"
    ]
    assert cli.main(["dlq", "redrive", "--queue", "tax-transformer-dlq", "--no-wait"]) == 0
    wait_quiet()
    assert mine(letters(capsys, "tax-transformer-dlq"), client_id) == []
    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        assert outputs(conn, client_id) == clean_run
        assert (
            conn.execute(
                "SELECT count(*) FROM audit.transformer_runs WHERE client_id = %s "
                "AND transformer = 'tax_transformer' AND outcome = 'succeeded'",
                (client_id,),
            ).fetchone()[0]
            == 1
        )
    # Nothing is left to do: a second reconcile dispatches nothing.
    capsys.readouterr()
    assert cli.main(["reconcile", "--client", client_id, "--json", "--no-wait"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_catapult_on_failure_records_are_answered_by_the_reconciler(
    local_stack, db, client_id, wait_quiet, capsys
):
    """A misconfigured target (its queue missing) makes catapult's sends fail until its
    retries run out; after the registration is fixed, redriving the on-failure queue runs
    the reconciler, which dispatches from the current item."""
    db.execute("CREATE SCHEMA IF NOT EXISTS tests")
    db.execute(
        "CREATE TABLE IF NOT EXISTS tests.echo_outputs "
        "(client_id text, business_date date, value text)"
    )
    good = registry.register(ECHO, "local")
    registry.put(dataclasses.replace(good, target=good.target + "-gone"))
    try:
        metastore.table().put_item(
            Item={**metastore.item_key(client_id, DAY), "echo_ready": True, "echo_input": "v1"}
        )
        wait_quiet()
        assert [letter["queue"] for letter in letters(capsys, "catapult-failures")] != [], (
            "the failed dispatch reached catapult's on-failure queue"
        )
        assert stuck(capsys, client_id) == ["echo_transformer"]
    finally:
        registry.put(good)
    assert cli.main(["dlq", "redrive", "--queue", "catapult-failures", "--no-wait"]) == 0
    wait_quiet()
    assert db.execute(
        "SELECT value FROM tests.echo_outputs WHERE client_id = %s", (client_id,)
    ).fetchall() == [("v1",)]
    assert letters(capsys, "catapult-failures") == []
    assert stuck(capsys, client_id) == []


def test_every_dead_letter_queue_of_the_stage_is_listed(local_stack, capsys) -> None:
    import boto3

    from dataharvest import dlq

    names = [q.name for q in dlq.queues(boto3.client("sqs"), "local")]
    for name in (
        "persistence-dlq",
        "catapult-failures",
        "reconcile-failures",
        "relationship-transformer-dlq",
        "sum-deposit-transformer-dlq",
        "transaction-transformer-dlq",
        "tax-transformer-dlq",
        "partner-publisher-dlq",
    ):
        assert name in names


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dlq", "list", "--queue", "nope"], "no dead-letter queue named 'nope'"),
        (["dlq", "redrive", "--queue", "nope"], "no dead-letter queue named 'nope'"),
        (["reconcile", "--from", "2024-13-01"], "'2024-13-01' is not a date"),
        (["reconcile", "--from", "20240105", "--to", "20240101"], "is after --to"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(local_stack, capsys, argv, message) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_the_scheduled_reconciler_dispatches_work_no_stream_record_asked_for(
    local_stack, db, client_id, wait_quiet, capsys
):
    """The catapult service's scheduled `reconcile` handler, invoked as EventBridge would:
    an item became due while its transformer was disabled and the transformer was enabled
    without a sweep, so only the reconciler can find it."""
    import importlib.util
    import time

    from dataharvest_local.worker import LambdaContext

    db.execute("CREATE SCHEMA IF NOT EXISTS tests")
    db.execute(
        "CREATE TABLE IF NOT EXISTS tests.echo_outputs "
        "(client_id text, business_date date, value text)"
    )
    good = registry.register(ECHO, "local")
    registry.put(dataclasses.replace(good, enabled=False))
    try:
        metastore.table().put_item(
            Item={**metastore.item_key(client_id, DAY), "echo_ready": True, "echo_input": "late"}
        )
        wait_quiet()
    finally:
        registry.put(good)
    wait_quiet()
    assert stuck(capsys, client_id) == ["echo_transformer"]

    spec = importlib.util.spec_from_file_location(
        "catapult_handler", Path(__file__).parents[2] / "services" / "catapult" / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = LambdaContext(
        function_name="dataharvest-catapult-local-reconcile",
        function_version="$LATEST",
        invoked_function_arn=f"arn:aws:lambda:eu-west-1:{LOCAL_ACCOUNT_ID}:function:reconcile",
        memory_limit_in_mb=512,
        aws_request_id="test",
        log_group_name="/aws/lambda/reconcile",
        log_stream_name="local",
        deadline_ms=int(time.time() * 1000) + 300_000,
    )
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    result = module.reconcile(event, context)
    assert result["dispatched"] >= 1
    wait_quiet()
    assert db.execute(
        "SELECT value FROM tests.echo_outputs WHERE client_id = %s", (client_id,)
    ).fetchall() == [("late",)]
    assert stuck(capsys, client_id) == []
