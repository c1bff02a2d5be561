"""Large files in parallel chunks (persistence/chunks.py): the same rows, line numbers and
rejections as a file loaded in one piece; a chunk fails and retries alone; nothing is visible
before the final commit; a newer version overtakes a load still staging."""

from __future__ import annotations

import gzip
import json
import os
import uuid

import boto3
import pytest
from persistence_support import key, loads, put, put_quiet, raw_rows, rejections

from dataharvest import config
from dataharvest.persistence import load_upload
from dataharvest.persistence.chunks import stage_chunk

pytestmark = pytest.mark.integration

HEADER = "record_id,account_number,transaction_reference,amount,keyword\n"


ROWS = 8000


def big_file(rows: int = ROWS) -> str:
    """~250 KB: four chunks of 64 KiB. Quoted newlines (some where a cut would fall), rows
    that break rules, a key repeated across chunks, and lower-case keywords."""
    lines = [HEADER]
    for i in range(1, rows + 1):
        reference = f'"T-{i}\nsecond line"' if i % 97 == 0 else f"T-{i}"
        amount = "12,5" if i % 1000 == 0 else f"{i}.25"
        keyword = "deposit" if i % 7 == 0 else "DEPOSIT"
        lines.append(f"{i},{i % 50},{reference},{amount},{keyword}\n")
    lines.append(f"{rows + 1},1,T-10,1.00,TAX\n")  # a duplicate of line 11, chunks away
    return "".join(lines)


class Crash(Exception):
    pass


def crash_at(point: str):
    def fault(where: str) -> None:
        if where == point:
            raise Crash(point)

    return fault


@pytest.fixture
def chunk_queue(local_stack, monkeypatch) -> str:
    """A queue nobody consumes: the test stages the chunks itself."""
    url = boto3.client("sqs").create_queue(QueueName=f"chunks-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    monkeypatch.setenv("CHUNK_QUEUE_URL", url)
    config.environment.cache_clear()
    yield url
    config.environment.cache_clear()


def chunk_messages(url: str) -> list[tuple[int, int]]:
    sqs = boto3.client("sqs")
    found = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in batch:
            body = json.loads(message["Body"])
            found.append((body["load_id"], body["chunk"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return sorted(found)


def test_a_chunked_load_equals_the_same_file_loaded_whole(db, wait_quiet) -> None:
    content = big_file()
    assert len(content.encode()) > 3 * int(os.environ["DATAHARVEST_CHUNK_BYTES"])
    chunked, whole = f"c-{uuid.uuid4().hex[:10]}", f"w-{uuid.uuid4().hex[:10]}"
    put(key(chunked, "transactions"), content)
    # gzip files always load in one piece: the same content, the other path.
    put(key(whole, "transactions", suffix=".csv.gz"), gzip.compress(content.encode()))
    wait_quiet()

    (load,) = [r for r in loads(db, chunked) if r["is_current"]]
    chunks = db.execute(
        "SELECT count(*) FROM audit.load_chunks WHERE load_id = %s", (load["load_id"],)
    ).fetchone()[0]
    assert chunks == 4
    (single,) = [r for r in loads(db, whole) if r["is_current"]]
    counts = ("status", "rows_total", "rows_loaded", "rows_rejected")
    expected = ["loaded", ROWS + 1, ROWS - 8, 9]
    assert [load[c] for c in counts] == [single[c] for c in counts] == expected
    assert raw_rows(db, "transactions", chunked) == raw_rows(db, "transactions", whole)
    assert [r[1:] for r in rejections(db, chunked)] == [r[1:] for r in rejections(db, whole)]
    assert rejections(db, chunked)[-1][1:] == (
        ROWS + 2 + ROWS // 97,  # a quoted newline every 97 rows moves the lines down
        "transaction_reference",
        "T-10",
        "transaction_reference: duplicate of line 11 (the first row with this key is kept)",
    )
    leaves = db.execute(
        "SELECT count(DISTINCT tableoid) FROM raw_store.transactions WHERE client_id = %s",
        (chunked,),
    ).fetchone()[0]
    assert leaves == 4


def test_a_failed_chunk_retries_alone_and_nothing_shows_before_the_commit(
    db, client_id, quiet_bucket, chunk_queue
) -> None:
    object_key = key(client_id, "transactions")
    put_quiet(quiet_bucket, object_key, big_file())
    assert load_upload(quiet_bucket, object_key) is None  # planned: nothing current yet
    messages = chunk_messages(chunk_queue)
    assert [chunk for _, chunk in messages] == [0, 1, 2, 3]
    load_id = messages[0][0]

    with pytest.raises(Crash):
        stage_chunk(load_id, 1, fault=crash_at("chunk_staged"))
    staged = db.execute(
        "SELECT chunk FROM audit.load_chunks WHERE load_id = %s AND staged_at IS NOT NULL",
        (load_id,),
    ).fetchall()
    assert staged == []
    for chunk in (0, 2, 3):
        assert stage_chunk(load_id, chunk) is None  # chunk 1 is still missing: no commit
    with pytest.raises(Crash):  # chunk 1 stages, the commit crashes before it is durable
        stage_chunk(load_id, 1, fault=crash_at("before_commit"))

    assert raw_rows(db, "transactions", client_id) == []
    assert rejections(db, client_id) == []
    assert [(r["status"], r["is_current"]) for r in loads(db, client_id)] == [("staging", False)]

    # The redelivered message of the last chunk finds it staged and commits.
    record = stage_chunk(load_id, 1)
    assert (record.status, record.rows_loaded, record.rows_rejected) == ("loaded", ROWS - 8, 9)
    assert len(raw_rows(db, "transactions", client_id)) == ROWS - 8
    assert stage_chunk(load_id, 0) is None  # any later redelivery is a no-op
    assert len(raw_rows(db, "transactions", client_id)) == ROWS - 8


def test_a_newer_version_overtakes_a_load_still_staging(
    db, client_id, quiet_bucket, chunk_queue
) -> None:
    object_key = key(client_id, "transactions")
    put_quiet(quiet_bucket, object_key, big_file())
    load_upload(quiet_bucket, object_key)
    (load_id, _), *_ = chunk_messages(chunk_queue)
    stage_chunk(load_id, 0)

    put_quiet(quiet_bucket, object_key, HEADER + "1,7,T-1,1.00,DEPOSIT\n")
    newer = load_upload(quiet_bucket, object_key)
    assert (newer.status, newer.rows_loaded) == ("loaded", 1)
    assert stage_chunk(load_id, 1) is None
    statuses = [(r["load_id"], r["status"]) for r in loads(db, client_id)]
    assert statuses == [(load_id, "abandoned"), (newer.load_id, "loaded")]
    left = db.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE %s",
        (f"transactions_load_{load_id}%",),
    ).fetchone()[0]
    assert left == 0
    assert raw_rows(db, "transactions", client_id) == [(2, 1, 7, "T-1", 1, "DEPOSIT")]
