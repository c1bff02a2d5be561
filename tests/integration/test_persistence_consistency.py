"""Exactly-once outcomes under at-least-once delivery: redelivery, re-upload, delete, events out
of order, concurrent deliveries, crashes before and after the commit, tenant isolation and
unroutable keys.

Tests that call `load_upload` themselves use their own versioned bucket without notifications,
so the stack's runner never races them; the others go through S3 events and the handler.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import boto3
import psycopg
import pytest
from persistence_support import (
    ACCOUNTS_HEADER,
    BUSINESS_DATE,
    accounts_file,
    delete,
    input_state,
    item,
    key,
    lineage,
    loads,
    put,
    put_quiet,
    raw_rows,
    rejections,
    s3_event,
    send_event,
)

from dataharvest.persistence import load_upload
from dataharvest.persistence.mark import mark_input
from dataharvest.persistence.routing import route_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def statuses(db, client_id: str) -> list[tuple]:
    return [(x["status"], x["source_version"], x["is_current"]) for x in loads(db, client_id)]


# -- redelivery, re-upload, delete, order ----------------------------------------------------


def test_redelivered_event_changes_nothing(db, client_id, stack_info, wait_quiet) -> None:
    object_key = key(client_id, "accounts")
    version = put(object_key, accounts_file(2))
    wait_quiet()
    before = (raw_rows(db, "accounts", client_id), loads(db, client_id), item(client_id))

    send_event(stack_info, s3_event(object_key, "ObjectCreated:Put", version))
    send_event(stack_info, s3_event(object_key, "ObjectCreated:Put", version))
    wait_quiet()
    # The same rows, the same single load, and the item untouched (its timestamp included).
    assert (raw_rows(db, "accounts", client_id), loads(db, client_id), item(client_id)) == before
    assert statuses(db, client_id) == [("loaded", version, True)]


def test_reupload_with_changed_content_replaces_the_input(db, client_id, wait_quiet) -> None:
    object_key = key(client_id, "accounts")
    first = put(object_key, accounts_file(3, bad=1))  # 1 of 3 rejected: over 0.10
    wait_quiet()
    assert input_state(client_id, "account")["persisted"] is False
    second = put(object_key, ACCOUNTS_HEADER + "7,700,7.77,GBP,7\n")
    wait_quiet()
    assert raw_rows(db, "accounts", client_id) == [
        (2, 7, 700, Decimal("7.77"), "GBP", Decimal("7"))
    ]
    assert lineage(db, "accounts", client_id) == {(BUSINESS_DATE, object_key, second)}
    assert rejections(db, client_id) == []  # the old version's rejections went with it
    assert statuses(db, client_id) == [("rejected", first, False), ("loaded", second, True)]
    state = input_state(client_id, "account")
    assert state == {
        "persisted": True,
        "version": second,
        "seq": loads(db, client_id)[-1]["load_id"],
        "rows": 1,
        "rejections": 0,
    }


def test_reupload_with_identical_content_keeps_the_load(db, client_id, wait_quiet) -> None:
    object_key = key(client_id, "accounts")
    first = put(object_key, accounts_file(2))
    wait_quiet()
    before = item(client_id)
    second = put(object_key, accounts_file(2))
    wait_quiet()
    assert second != first
    assert statuses(db, client_id) == [("loaded", first, True), ("unchanged", second, False)]
    assert lineage(db, "accounts", client_id) == {(BUSINESS_DATE, object_key, first)}
    assert item(client_id) == before


def test_delete_retracts_the_input(db, client_id, stack_info, wait_quiet) -> None:
    object_key = key(client_id, "accounts")
    set_ratio = "INSERT INTO config.client_settings (client_id, max_reject_ratio) VALUES (%s, 1)"
    db.execute(set_ratio, (client_id,))
    version = put(object_key, accounts_file(3, bad=1))
    wait_quiet()
    assert len(rejections(db, client_id)) == 1
    delete(object_key, stack_info)
    wait_quiet()
    assert raw_rows(db, "accounts", client_id) == []
    assert rejections(db, client_id) == []
    assert statuses(db, client_id) == [("loaded", version, False), ("retracted", None, True)]
    assert input_state(client_id, "account") == {
        "persisted": False,
        "seq": loads(db, client_id)[-1]["load_id"],
        "rows": 0,
        "rejections": 0,
    }


def test_an_old_event_after_a_newer_upload_changes_nothing(
    db, client_id, stack_info, wait_quiet
) -> None:
    object_key = key(client_id, "accounts")
    old = put(object_key, accounts_file(1))
    wait_quiet()
    new = put(object_key, accounts_file(2))
    wait_quiet()
    before = (raw_rows(db, "accounts", client_id), item(client_id))

    send_event(stack_info, s3_event(object_key, "ObjectCreated:Put", old))
    wait_quiet()
    assert (raw_rows(db, "accounts", client_id), item(client_id)) == before
    assert statuses(db, client_id) == [("loaded", old, False), ("loaded", new, True)]

    delete(object_key, stack_info)
    wait_quiet()
    send_event(stack_info, s3_event(object_key, "ObjectCreated:Put", new))  # late, after delete
    wait_quiet()
    assert raw_rows(db, "accounts", client_id) == []
    assert statuses(db, client_id)[-1] == ("retracted", None, True)
    assert input_state(client_id, "account")["persisted"] is False


def test_events_delivered_before_the_upload_they_follow(db, client_id, quiet_bucket) -> None:
    # A delete event processed while the key exists, and a create event after the delete:
    # each delivery looks at S3 as it is, so the outcome follows S3, not the event.
    object_key = key(client_id, "accounts")
    assert load_upload(quiet_bucket, object_key, "ObjectRemoved:Delete") is None
    version = put_quiet(quiet_bucket, object_key, accounts_file(2))
    record = load_upload(quiet_bucket, object_key, "ObjectRemoved:Delete")
    assert (record.status, record.source_version) == ("loaded", version)
    boto3.client("s3").delete_object(Bucket=quiet_bucket, Key=object_key)
    assert load_upload(quiet_bucket, object_key, "ObjectCreated:Put").status == "retracted"
    assert raw_rows(db, "accounts", client_id) == []


def test_an_older_state_never_overwrites_the_metastore(db, client_id, quiet_bucket) -> None:
    object_key = key(client_id, "accounts")
    put_quiet(quiet_bucket, object_key, accounts_file(1))
    older = load_upload(quiet_bucket, object_key)
    put_quiet(quiet_bucket, object_key, accounts_file(2))
    newer = load_upload(quiet_bucket, object_key)
    assert newer.load_id > older.load_id
    before = item(client_id)
    # A slow process that committed `older` and writes only now: the condition refuses it.
    assert mark_input(route_of(object_key), older) is False
    assert item(client_id) == before
    assert before["account_seq"] == newer.load_id


# -- concurrency and crashes -----------------------------------------------------------------


def test_concurrent_deliveries_serialize(local_stack, db, client_id, quiet_bucket) -> None:
    object_key = key(client_id, "transactions")
    body = "record_id,account_number,transaction_reference,amount,keyword\n" + "".join(
        f"{i},7,T{i},{i}.25,deposit\n" for i in range(1, 2001)
    )
    version = put_quiet(quiet_bucket, object_key, body)
    barrier = threading.Barrier(2)
    results: list = []
    errors: list = []

    def deliver() -> None:
        with psycopg.connect(local_stack.info.database_url, autocommit=True) as conn:
            barrier.wait()
            try:
                results.append(load_upload(quiet_bucket, object_key, conn=conn))
            except Exception as error:  # collected and asserted on below
                errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [r.load_id for r in results] == [results[0].load_id] * 2
    assert statuses(db, client_id) == [("loaded", version, True)]
    count = db.execute(
        "SELECT count(*), sum(amount) FROM raw.transactions WHERE client_id = %s", (client_id,)
    ).fetchone()
    assert count == (2000, Decimal("2001500.00"))


class Crash(Exception):
    """The injected failure."""


def crash_at(stage: str):
    def fault(reached: str) -> None:
        if reached == stage:
            raise Crash(stage)

    return fault


def test_crash_before_commit_leaves_no_trace(db, client_id, quiet_bucket) -> None:
    object_key = key(client_id, "accounts")
    version = put_quiet(quiet_bucket, object_key, accounts_file(3, bad=0))
    with pytest.raises(Crash):
        load_upload(quiet_bucket, object_key, fault=crash_at("before_commit"))
    assert (raw_rows(db, "accounts", client_id), rejections(db, client_id)) == ([], [])
    assert loads(db, client_id) == []
    assert item(client_id) == {}

    record = load_upload(quiet_bucket, object_key)  # the retry
    assert (record.status, record.source_version, record.rows_loaded) == ("loaded", version, 3)
    assert input_state(client_id, "account")["rows"] == 3


def test_crash_while_replacing_a_version_keeps_the_old_version_whole(
    db, client_id, quiet_bucket
) -> None:
    object_key = key(client_id, "accounts")
    first = put_quiet(quiet_bucket, object_key, accounts_file(2))
    load_upload(quiet_bucket, object_key)
    before = (raw_rows(db, "accounts", client_id), loads(db, client_id), item(client_id))
    assert len(before[0]) == 2
    second = put_quiet(quiet_bucket, object_key, ACCOUNTS_HEADER + "7,700,7.77,GBP,7\n")
    # The crash comes after the new version's rows are written and swapped in, before commit.
    with pytest.raises(Crash):
        load_upload(quiet_bucket, object_key, fault=crash_at("before_commit"))
    assert (raw_rows(db, "accounts", client_id), loads(db, client_id), item(client_id)) == before
    assert lineage(db, "accounts", client_id) == {(BUSINESS_DATE, object_key, first)}

    record = load_upload(quiet_bucket, object_key)  # the retry replaces it
    assert (record.status, record.source_version, record.rows_loaded) == ("loaded", second, 1)
    assert statuses(db, client_id) == [("loaded", first, False), ("loaded", second, True)]
    assert raw_rows(db, "accounts", client_id) == [
        (2, 7, 700, Decimal("7.77"), "GBP", Decimal("7"))
    ]


def test_killed_process_before_commit_leaves_no_trace(db, client_id, quiet_bucket) -> None:
    object_key = key(client_id, "accounts")
    put_quiet(quiet_bucket, object_key, accounts_file(3))
    # A real crash: the process dies inside the load transaction, holding the input's lock.
    script = (
        "import os, sys\n"
        "from dataharvest.persistence import load_upload\n"
        "def die(stage):\n"
        "    if stage == 'before_commit':\n"
        "        os._exit(137)\n"
        "load_upload(sys.argv[1], sys.argv[2], fault=die)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, quiet_bucket, object_key],
        env=os.environ.copy(),
        timeout=60,
        capture_output=True,
    )
    assert run.returncode == 137, run.stderr.decode()[-2000:]
    assert (raw_rows(db, "accounts", client_id), loads(db, client_id)) == ([], [])
    # The dead session's lock went with it: the retry is not blocked.
    db.execute("SET statement_timeout = '10s'")
    record = load_upload(quiet_bucket, object_key)
    assert (record.status, record.rows_loaded) == ("loaded", 3)


def test_crash_between_commit_and_metastore_write_is_healed_by_the_retry(
    db, client_id, quiet_bucket
) -> None:
    object_key = key(client_id, "accounts")
    version = put_quiet(quiet_bucket, object_key, accounts_file(2))
    with pytest.raises(Crash):
        load_upload(quiet_bucket, object_key, fault=crash_at("after_commit"))
    assert statuses(db, client_id) == [("loaded", version, True)]
    assert item(client_id) == {}

    load_upload(quiet_bucket, object_key)  # the retry finds the database current
    assert statuses(db, client_id) == [("loaded", version, True)]
    assert input_state(client_id, "account") == {
        "persisted": True,
        "version": version,
        "seq": loads(db, client_id)[0]["load_id"],
        "rows": 2,
        "rejections": 0,
    }


# -- tenants, unroutable keys, transient errors ----------------------------------------------


def test_file_content_cannot_reach_another_tenant(db, wait_quiet) -> None:
    victim, attacker = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    put(key(victim, "accounts"), accounts_file(2))
    wait_quiet()
    victim_before = (raw_rows(db, "accounts", victim), item(victim), loads(db, victim))
    body = (
        "client_id,partition_key,sort_key,record_id,account_number,cash_balance,currency,"
        "taxes_paid\n"
        f"{victim},{victim},20240102,1,101,999999.00,EUR,0\n"
    )
    put(key(attacker, "accounts"), body)
    put(f"{attacker}/../{victim}/accounts_20240102.csv", accounts_file(1))
    wait_quiet()
    assert (raw_rows(db, "accounts", victim), item(victim), loads(db, victim)) == victim_before
    assert raw_rows(db, "accounts", attacker) == [
        (2, 1, 101, Decimal("999999.00"), "EUR", Decimal("0"))
    ]
    assert input_state(attacker, "account")["ignored_columns"] == [
        "client_id",
        "partition_key",
        "sort_key",
    ]


def test_unroutable_keys_are_recorded_once_and_acknowledged(
    db, local_stack, stack_info, wait_quiet
) -> None:
    tag = uuid.uuid4().hex[:8]
    keys = {
        f"Bad Client {tag}/accounts_20240102.csv": "client id 'Bad Client ",
        f"c-{tag}/users_20240102.csv": "unknown entity 'users'",
        f"c-{tag}/accounts_20240230.csv": "'20240230' is not a valid calendar date",
        f"c-{tag}/accounts.csv": "does not match {client_id}/{entity}_{YYYYMMDD}.csv[.gz]",
        f"loose-{tag}.csv": "expected exactly one '/'",
    }
    for object_key in keys:
        put(object_key, accounts_file(1))
    wait_quiet()
    some = next(iter(keys))
    send_event(stack_info, s3_event(some, "ObjectCreated:Put"))  # a redelivery
    wait_quiet()
    rows = db.execute(
        "SELECT source_key, client_id, status, reason FROM audit.file_loads "
        "WHERE source_key = ANY(%s) ORDER BY source_key",
        (list(keys),),
    ).fetchall()
    assert len(rows) == len(keys)
    for source_key, client, status, reason in rows:
        assert status == "unroutable"
        assert keys[source_key] in reason, reason
        assert client == (f"c-{tag}" if source_key.startswith("c-") else None)
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=stack_info.export("PersistenceQueueName"))["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_csv_and_csv_gz_of_a_day_are_one_input(db, client_id, quiet_bucket) -> None:
    plain_key = key(client_id, "accounts")
    gzip_key = key(client_id, "accounts", suffix=".csv.gz")
    put_quiet(quiet_bucket, plain_key, accounts_file(1))
    load_upload(quiet_bucket, plain_key)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=quiet_bucket, Key=gzip_key, Body=gzip.compress(accounts_file(3).encode()))
    assert load_upload(quiet_bucket, gzip_key).rows_loaded == 3  # replaces the .csv version
    s3.delete_object(Bucket=quiet_bucket, Key=plain_key)
    # The current version came from the .gz key: deleting the other key retracts nothing.
    assert load_upload(quiet_bucket, plain_key, "ObjectRemoved:Delete").source_key == gzip_key
    assert len(raw_rows(db, "accounts", client_id)) == 3
    assert lineage(db, "accounts", client_id) == {
        (BUSINESS_DATE, gzip_key, s3.head_object(Bucket=quiet_bucket, Key=gzip_key)["VersionId"])
    }
