"""Each Lambda handler called with a recorded event (tests/events/*.json, as AWS delivers them)
on the real local stack: the exact `batchItemFailures` of its success and partial-failure paths.

Every failure has a real cause (a bucket that does not exist, a queue that does not exist, a
body that is not a work message, SQL that fails); nothing of ours is replaced.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus

import boto3
import psycopg
import pytest
from persistence_support import accounts_file, bucket, key, loads, put_quiet, raw_rows

from dataharvest import metastore, registry
from dataharvest.transformers.runtime import Transformer, make_handler
from dataharvest.work import WorkMessage
from dataharvest_local.slsconfig import LOCAL_ACCOUNT_ID
from dataharvest_local.worker import LambdaContext

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "tests" / "events"
ECHO_HANDLER = REPO / "tests" / "fixtures" / "services" / "echo_transformer" / "handler.py"
DAY = "20240102"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def load_module(path: Path, name: str) -> ModuleType:
    """A handler module loaded fresh, as a new Lambda execution environment would."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def context(name: str) -> LambdaContext:
    deadline_ms = int(time.time() * 1000) + 600_000
    arn = f"arn:aws:lambda:eu-west-1:{LOCAL_ACCOUNT_ID}:function:{name}"
    return LambdaContext(name, "$LATEST", arn, 1024, "req", "group", "stream", deadline_ms)


def event_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}


# -- persistence: S3 event notifications via SQS ---------------------------------------------


def s3_record(message_id: str, bucket_name: str, object_key: str) -> dict[str, Any]:
    """The recorded SQS record, carrying an S3 notification for `object_key` in `bucket_name`."""
    record = copy.deepcopy(recorded("persistence_s3_via_sqs.json")["Records"][0])
    body = json.loads(record["body"])
    s3 = body["Records"][0]["s3"]
    s3["bucket"]["name"] = bucket_name
    s3["bucket"]["arn"] = f"arn:aws:s3:::{bucket_name}"
    s3["object"]["key"] = quote_plus(object_key)  # S3 URL-encodes keys in notifications
    record["body"] = json.dumps(body)
    record["messageId"] = message_id
    return record


def statuses(db: psycopg.Connection, client_id: str) -> list[tuple[str, str | None, bool]]:
    return [(x["status"], x["source_version"], x["is_current"]) for x in loads(db, client_id)]


def test_persistence_handler_loads_every_record_of_a_good_batch(
    db, client_id, quiet_bucket
) -> None:
    handler = load_module(REPO / "services" / "persistence" / "handler.py", "persistence_h1")
    accounts, clients = key(client_id, "accounts"), key(client_id, "clients")
    accounts_version = put_quiet(quiet_bucket, accounts, accounts_file(2))
    clients_version = put_quiet(
        quiet_bucket,
        clients,
        "record_id,first_name,last_name,client_reference,tax_free_allowance\n1,A,B,C1,10.00\n",
    )
    event = event_of(
        [s3_record("a", quiet_bucket, accounts), s3_record("c", quiet_bucket, clients)]
    )
    assert handler.handler(event, context("persistence")) == {"batchItemFailures": []}
    assert sorted(statuses(db, client_id)) == sorted(
        [("loaded", accounts_version, True), ("loaded", clients_version, True)]
    )
    assert len(raw_rows(db, "accounts", client_id)) == 2


def test_persistence_handler_fails_only_the_record_with_a_transient_error(
    db, client_id, quiet_bucket
) -> None:
    handler = load_module(REPO / "services" / "persistence" / "handler.py", "persistence_h2")
    good_key = key(client_id, "accounts")
    version = put_quiet(quiet_bucket, good_key, accounts_file(1))
    # S3 sends a test event when a notification is configured: acknowledged, nothing loaded.
    test_event = copy.deepcopy(recorded("persistence_s3_via_sqs.json")["Records"][0])
    test_event["messageId"] = "t"
    test_event["body"] = json.dumps({"Event": "s3:TestEvent"})
    missing_bucket = f"no-such-bucket-{uuid.uuid4().hex[:6]}"
    event = event_of(
        [
            s3_record("ok", quiet_bucket, good_key),
            # A bucket that does not exist is a misconfiguration, not a deleted key: retried.
            s3_record("broken", missing_bucket, key(client_id, "clients")),
            test_event,
        ]
    )
    assert handler.handler(event, context("persistence")) == {
        "batchItemFailures": [{"itemIdentifier": "broken"}]
    }
    assert statuses(db, client_id) == [("loaded", version, True)]
    # The test's objects live in its quiet bucket only: the landing bucket holds none of them.
    landing = boto3.client("s3").list_object_versions(Bucket=bucket(), Prefix=f"{client_id}/")
    assert landing.get("Versions", []) == []
    assert landing.get("DeleteMarkers", []) == []


# -- catapult: metastore stream records --------------------------------------------------------


def stream_record(client_id: str, sequence_number: str) -> dict[str, Any]:
    """The recorded stream record (probe_ready false -> true) for `client_id`'s item."""
    record = copy.deepcopy(recorded("catapult_dynamodb_stream.json")["Records"][0])
    ddb = record["dynamodb"]
    for image in (ddb["Keys"], ddb["NewImage"], ddb["OldImage"]):
        image["partition_key"] = {"S": client_id}
    ddb["SequenceNumber"] = sequence_number
    record["eventID"] = f"event-{sequence_number}"
    return record


@pytest.fixture
def probe_entries(local_stack, client_id):
    """Two registry entries due on `probe_ready` of two fresh clients only: one whose queue
    exists (nobody consumes it, so the test reads what catapult sent) and one whose queue does
    not. Removed afterwards, so no other test sees them."""
    sqs = boto3.client("sqs")
    tag = uuid.uuid4().hex[:8]
    probe_url = sqs.create_queue(QueueName=f"handler-probe-{tag}")["QueueUrl"]
    broken_client = f"{client_id}-x"

    def entry(name: str, client: str, target: str) -> registry.TransformerEntry:
        pattern = {
            "dynamodb": {
                "NewImage": {"partition_key": {"S": [client]}, "probe_ready": {"BOOL": [True]}}
            }
        }
        return registry.TransformerEntry(name=name, filter_pattern=pattern, target=target)

    probe = entry(f"probe_{tag}", client_id, probe_url)
    broken = entry(f"broken_{tag}", broken_client, probe_url.rsplit("/", 1)[0] + "/no-such-q")
    registry.put(probe)
    registry.put(broken)
    try:
        yield probe, broken_client, probe_url
    finally:
        for name in (probe.name, broken.name):
            metastore.table().delete_item(
                Key=metastore.item_key(metastore.REGISTRY_PARTITION, name)
            )
        sqs.delete_queue(QueueUrl=probe_url)


def sent(probe_url: str) -> list[WorkMessage]:
    sqs = boto3.client("sqs")
    found = []
    while True:
        got = sqs.receive_message(QueueUrl=probe_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return found
        for message in got:
            found.append(WorkMessage.from_json(message["Body"]))
            sqs.delete_message(QueueUrl=probe_url, ReceiptHandle=message["ReceiptHandle"])


def test_catapult_handler_dispatches_and_fails_only_the_record_it_could_not_send(
    client_id, probe_entries
) -> None:
    probe, broken_client, probe_url = probe_entries
    handler = load_module(REPO / "services" / "catapult" / "handler.py", "catapult_h")
    expected = WorkMessage(
        client_id=client_id,
        business_date=DAY,
        transformer=probe.name,
        action="APPLY",
        input_versions={},
        trigger={"eventID": "event-1", "eventName": "MODIFY", "sequenceNumber": "1"},
    )

    ok = event_of([stream_record(client_id, "1")])
    assert handler.handler(ok, context("catapult")) == {"batchItemFailures": []}
    assert sent(probe_url) == [expected]

    # The stream's item identifier is the record's sequence number.
    mixed = event_of([stream_record(client_id, "1"), stream_record(broken_client, "2")])
    assert handler.handler(mixed, context("catapult")) == {
        "batchItemFailures": [{"itemIdentifier": "2"}]
    }
    assert sent(probe_url) == [expected]  # the good record's decision went out again, alone


# -- a transformer: its SQS work queue ---------------------------------------------------------


def work_record(message_id: str, message: WorkMessage | str) -> dict[str, Any]:
    record = copy.deepcopy(recorded("transformer_sqs_work.json")["Records"][0])
    record["messageId"] = message_id
    record["body"] = message if isinstance(message, str) else message.to_json()
    return record


def echo_runs(db: psycopg.Connection, client_id: str, outcome: str) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT action, input_versions->>'echo_input' FROM audit.transformer_runs "
        "WHERE client_id = %s AND transformer = 'echo_transformer' AND outcome = %s "
        "ORDER BY run_id",
        (client_id, outcome),
    ).fetchall()
    return [tuple(r) for r in rows]


def echo_outputs(db: psycopg.Connection, client_id: str) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT to_char(business_date, 'YYYYMMDD'), value FROM tests.echo_outputs "
        "WHERE client_id = %s ORDER BY 1, 2",
        (client_id,),
    ).fetchall()
    return [tuple(r) for r in rows]


@pytest.fixture
def echo_done(echo_registered, db, client_id, wait_quiet) -> dict[str, Any]:
    """An item the echo transformer has run on (through the stack), returned as it is then."""
    metastore.table().put_item(
        Item={**metastore.item_key(client_id, DAY), "echo_ready": True, "echo_input": "v1"}
    )
    wait_quiet()
    assert echo_runs(db, client_id, "succeeded") == [("APPLY", "v1")]
    item = metastore.get_item(client_id, DAY)
    assert item["echo_transformer_done"] is True
    return item


def replay(client_id: str, transformer: str = "echo_transformer") -> WorkMessage:
    """Work the item calls for, under a fresh replay id, so the runtime runs it again."""
    return WorkMessage(
        client_id=client_id,
        business_date=DAY,
        transformer=transformer,
        action="APPLY",
        input_versions={"echo_input": "v1"},
        replay=uuid.uuid4().hex,
    )


def test_transformer_handler_runs_work_and_fails_only_what_is_not_its_work(
    db, client_id, echo_done
) -> None:
    handler = load_module(ECHO_HANDLER, "echo_h").handler

    assert handler(event_of([work_record("a", replay(client_id))]), context("echo")) == {
        "batchItemFailures": []
    }
    assert echo_runs(db, client_id, "succeeded") == [("APPLY", "v1"), ("APPLY", "v1")]

    event = event_of(
        [
            work_record("b", replay(client_id)),
            work_record("not-json", "{not a work message"),
            work_record("not-mine", replay(client_id, "tax_transformer")),
        ]
    )
    assert handler(event, context("echo")) == {
        "batchItemFailures": [{"itemIdentifier": "not-json"}, {"itemIdentifier": "not-mine"}]
    }
    assert echo_runs(db, client_id, "succeeded") == [("APPLY", "v1")] * 3
    assert echo_outputs(db, client_id) == [(DAY, "v1")]


def failing_apply(conn: psycopg.Connection, client_id: str, business_date: Any) -> int:
    """A transformer statement that fails in PostgreSQL, as a wrong division would."""
    conn.execute(
        "INSERT INTO tests.echo_outputs (client_id, business_date, value) "
        "SELECT %s, %s, (1 / count(*))::text FROM tests.echo_outputs WHERE false",
        (client_id, business_date),
    )
    return 1


def test_a_transformer_whose_sql_fails_records_the_failure_keeps_its_flag_and_is_retried(
    db, client_id, echo_done
) -> None:
    broken = make_handler(
        Transformer(
            name="echo_transformer", output_tables=("tests.echo_outputs",), apply=failing_apply
        )
    )
    work = work_record("w", replay(client_id))
    # Work for inputs the item no longer has: superseded, acknowledged without running. (A
    # batch whose every record fails raises instead of answering, so the batch has one more.)
    outdated = work_record("old", replace(replay(client_id), input_versions={"echo_input": "v0"}))
    for attempt in (1, 2):
        # Each delivery fails its record, so SQS delivers it again; a failed run is no
        # "already done" for the next attempt, which runs it again.
        assert broken(event_of([outdated, work]), context("echo")) == {
            "batchItemFailures": [{"itemIdentifier": "w"}]
        }
        assert echo_runs(db, client_id, "failed") == [("APPLY", "v1")] * attempt
    item = metastore.get_item(client_id, DAY)
    assert item["echo_transformer_error"] == "DivisionByZero: division by zero"
    assert "echo_transformer_failed_at" in item
    # The flag and the output stay those of the last good run: the failed one rolled back.
    assert item["echo_transformer_done"] is True
    assert item["echo_transformer_version"] == echo_done["echo_transformer_version"]
    assert echo_outputs(db, client_id) == [(DAY, "v1")]

    # The retry once the SQL is fixed succeeds and clears the error.
    fixed = load_module(ECHO_HANDLER, "echo_fixed").handler
    assert fixed(event_of([work]), context("echo")) == {"batchItemFailures": []}
    assert echo_runs(db, client_id, "succeeded") == [("APPLY", "v1")] * 2
    assert "echo_transformer_error" not in metastore.get_item(client_id, DAY)


def test_a_flag_write_losing_the_race_with_an_input_change_publishes_nothing(
    echo_registered, db, client_id, wait_quiet
) -> None:
    """The run commits, then its input changes before the flag write: the conditional write
    fails, the flag stays unset, and the change has dispatched the run that counts."""
    sqs = boto3.client("sqs")
    tag = uuid.uuid4().hex[:8]
    queue_url = sqs.create_queue(QueueName=f"handler-race-{tag}")["QueueUrl"]
    entry = registry.TransformerEntry(
        name=f"race_{tag}",
        filter_pattern={
            "dynamodb": {
                "NewImage": {"partition_key": {"S": [client_id]}, "race_ready": {"BOOL": [True]}}
            }
        },
        target=queue_url,  # nobody consumes it: the test reads what catapult sent
        watch=("race_input",),
    )

    def apply(conn: psycopg.Connection, client: str, business_date: Any) -> int:
        conn.execute(
            "INSERT INTO tests.echo_outputs (client_id, business_date, value) VALUES (%s, %s, %s)",
            (client, business_date, "v1"),
        )
        return 1

    def input_changes(conn: psycopg.Connection, message: WorkMessage) -> None:
        # Runs after the commit and before the flag write: the race, made certain.
        metastore.table().update_item(
            Key=metastore.item_key(client_id, DAY),
            UpdateExpression="SET race_input = :v",
            ExpressionAttributeValues={":v": "v2"},
        )

    registry.put(entry)
    try:
        wait_quiet()  # catapult knows the entry
        metastore.table().put_item(
            Item={**metastore.item_key(client_id, DAY), "race_ready": True, "race_input": "v1"}
        )
        wait_quiet()
        handler = make_handler(
            Transformer(
                name=entry.name,
                output_tables=("tests.echo_outputs",),
                apply=apply,
                after_commit=input_changes,
            )
        )
        work = WorkMessage(client_id, DAY, entry.name, "APPLY", {"race_input": "v1"})
        assert handler(event_of([work_record("r", work)]), context("race")) == {
            "batchItemFailures": []
        }
        item = metastore.get_item(client_id, DAY)
        assert item["race_input"] == "v2"
        assert f"{entry.name}_done" not in item
        assert f"{entry.name}_version" not in item
        assert echo_outputs(db, client_id) == [(DAY, "v1")]  # committed, not published
        wait_quiet()
        assert [(m.action, m.input_versions) for m in sent(queue_url)] == [
            ("APPLY", {"race_input": "v1"}),
            ("APPLY", {"race_input": "v2"}),
        ]
    finally:
        metastore.table().delete_item(
            Key=metastore.item_key(metastore.REGISTRY_PARTITION, entry.name)
        )
        sqs.delete_queue(QueueUrl=queue_url)
