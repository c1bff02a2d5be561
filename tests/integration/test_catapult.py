"""Catapult and the transformer runtime on the real local stack (issue 5), with the test-only
echo transformer (tests/fixtures/services/echo_transformer) registered at runtime."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

from dataharvest import catapult, metastore, registry
from dataharvest.work import WorkMessage

pytestmark = pytest.mark.integration

ECHO = Path(__file__).parents[1] / "fixtures" / "services" / "echo_transformer"


def put_item(client_id: str, day: str, **attributes) -> None:
    metastore.table().put_item(Item={**metastore.item_key(client_id, day), **attributes})


def update_item(client_id: str, day: str, **attributes) -> None:
    names = {f"#a{i}": k for i, k in enumerate(attributes)}
    values = {f":v{i}": v for i, v in enumerate(attributes.values())}
    metastore.table().update_item(
        Key=metastore.item_key(client_id, day),
        UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(attributes))),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def outputs(db, client_id: str) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT to_char(business_date, 'YYYYMMDD'), value FROM tests.echo_outputs "
        "WHERE client_id = %s ORDER BY 1, 2",
        (client_id,),
    ).fetchall()
    return [tuple(r) for r in rows]


def runs(db, client_id: str, outcome: str = "succeeded") -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT action, input_versions->>'echo_input' FROM audit.transformer_runs "
        "WHERE client_id = %s AND transformer = 'echo_transformer' AND outcome = %s "
        "ORDER BY run_id",
        (client_id, outcome),
    ).fetchall()
    return [tuple(r) for r in rows]


def wait_for_run_lock(db, client_id: str, day: str, timeout: float = 60.0) -> None:
    """Until the echo transformer's run for the item holds its advisory lock (pg_locks shows a
    bigint key as its high and low 32 bits in classid and objid)."""
    name = f"transformer:{client_id}:{day}:echo_transformer"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = db.execute(
            "SELECT count(*) FROM pg_locks, hashtextextended(%s, 0) AS k "
            "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid::bigint = (k >> 32) & 4294967295 AND objid::bigint = k & 4294967295",
            (name,),
        ).fetchone()[0]
        if held:
            return
        time.sleep(0.01)
    raise AssertionError(f"no run of the echo transformer took its lock for {client_id} {day}")


def drain(sqs, url: str) -> list[dict]:
    """Every message the queue holds, deleted."""
    found = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in got:
            found.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def test_transformer_registered_at_runtime_backfills_and_runs_on_next_change(
    local_stack, db, client_id, wait_quiet
):
    import psycopg

    with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS tests")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tests.echo_outputs "
            "(client_id text, business_date date, value text)"
        )
    # This item matches before the transformer exists: only the backfill can catch it.
    put_item(client_id, "20240101", echo_ready=True, echo_input="before")
    wait_quiet()
    entry = registry.register(ECHO, "local")
    assert entry.name == "echo_transformer"
    sent = catapult.backfill(entry)
    assert any(m.client_id == client_id for m in sent)
    wait_quiet()
    assert outputs(db, client_id) == [("20240101", "before")]
    put_item(client_id, "20240102", echo_ready=True, echo_input="after")
    wait_quiet()
    assert outputs(db, client_id) == [("20240101", "before"), ("20240102", "after")]
    item = metastore.get_item(client_id, "20240102")
    assert item["echo_transformer_done"] is True
    assert "echo_transformer_error" not in item


def test_edges_unrelated_updates_do_not_rerun_watched_changes_do_and_delete_retracts(
    echo_registered, db, client_id, wait_quiet
):
    put_item(client_id, "20240105", echo_ready=True, echo_input="v1")
    wait_quiet()
    update_item(client_id, "20240105", note="an unrelated flag")
    wait_quiet()
    assert runs(db, client_id) == [("APPLY", "v1")]
    update_item(client_id, "20240105", echo_input="v2")
    wait_quiet()
    assert runs(db, client_id) == [("APPLY", "v1"), ("APPLY", "v2")]
    assert outputs(db, client_id) == [("20240105", "v2")]
    update_item(client_id, "20240105", echo_ready=False)
    wait_quiet()
    assert runs(db, client_id)[-1] == ("RETRACT", "v2")
    assert outputs(db, client_id) == []
    assert metastore.get_item(client_id, "20240105")["echo_transformer_done"] is False


def test_redelivered_work_message_runs_once(echo_registered, db, client_id, wait_quiet):
    put_item(client_id, "20240106", echo_ready=True, echo_input="once")
    wait_quiet()
    message = WorkMessage(
        client_id=client_id,
        business_date="20240106",
        transformer="echo_transformer",
        action="APPLY",
        input_versions={"echo_input": "once"},
    )
    for _ in range(2):
        catapult.dispatch.send(echo_registered, message)
    wait_quiet()
    assert runs(db, client_id) == [("APPLY", "once")]
    assert outputs(db, client_id) == [("20240106", "once")]


def test_stale_result_is_discarded_when_an_input_changes_mid_run(
    echo_registered, db, client_id, wait_quiet
):
    put_item(client_id, "20240107", echo_ready=True, echo_input="slow-v1")
    # The run holds its lock from after its first look at the item until it commits: once the
    # lock is held, the run of slow-v1 has started and its last look is still to come.
    wait_for_run_lock(db, client_id, "20240107")
    update_item(client_id, "20240107", echo_input="v2")
    wait_quiet()
    assert outputs(db, client_id) == [("20240107", "v2")]
    assert runs(db, client_id) == [("APPLY", "v2")]
    assert runs(db, client_id, "stale") == [("APPLY", "slow-v1")]
    item = metastore.get_item(client_id, "20240107")
    assert item["echo_transformer_done"] is True


def test_a_failing_target_does_not_block_other_transformers(
    echo_registered, db, client_id, wait_quiet
):
    broken = registry.TransformerEntry(
        name="broken_transformer",
        # Due on the item's first image only (an edge), so exactly one record fails.
        filter_pattern={
            "dynamodb": {
                "NewImage": {"partition_key": {"S": [client_id]}, "echo_ready": {"BOOL": [True]}}
            }
        },
        target=echo_registered.target.rsplit("/", 1)[0] + "/no-such-queue",
    )
    registry.put(broken)
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="dataharvest-local-catapult-failures")["QueueUrl"]
    try:
        wait_quiet()  # catapult has read the registry record, so it knows the broken entry
        # The on-failure queue is the stack's: empty it, so what it holds next is this test's.
        drain(sqs, url)
        put_item(client_id, "20240108", echo_ready=True, echo_input="fine")
        wait_quiet()
        assert outputs(db, client_id) == [("20240108", "fine")]
        got = drain(sqs, url)
        # The one failed record reached catapult's on-failure destination, alone.
        assert [json.loads(m["Body"])["DDBStreamBatchInfo"]["batchSize"] for m in got] == [1]
    finally:
        metastore.table().delete_item(
            Key=metastore.item_key(metastore.REGISTRY_PARTITION, "broken_transformer")
        )
        wait_quiet()


def test_replay_reruns_a_date_range(echo_registered, db, client_id, wait_quiet):
    for day in ("20240110", "20240111", "20240112"):
        put_item(client_id, day, echo_ready=True, echo_input=f"in-{day}")
    wait_quiet()
    assert len(runs(db, client_id)) == 3
    sent = catapult.replay(echo_registered, client_id, "20240110", "20240111")
    assert sorted(m.business_date for m in sent) == ["20240110", "20240111"]
    wait_quiet()
    assert runs(db, client_id) == [
        ("APPLY", "in-20240110"),
        ("APPLY", "in-20240111"),
        ("APPLY", "in-20240112"),
        ("APPLY", "in-20240110"),
        ("APPLY", "in-20240111"),
    ]
    assert len(outputs(db, client_id)) == 3
