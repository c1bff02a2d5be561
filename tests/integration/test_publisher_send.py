"""The publisher's after-commit send against a real FIFO queue of the local endpoint: chunks
sent concurrently, marked published in the transaction that sent them, resumed after a
failure without a message delivered twice."""

from __future__ import annotations

import json
import uuid
from datetime import date

import boto3
import pytest
from botocore.exceptions import ClientError

from dataharvest import config
from dataharvest.transformers import publisher
from dataharvest.work import WorkMessage

pytestmark = pytest.mark.integration

DAY = date(2024, 3, 4)


@pytest.fixture
def result_queue(local_stack, monkeypatch):
    """A FIFO queue of its own that refuses bodies over 1 KiB, set as RESULT_QUEUE_URL."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(
        QueueName=f"publish-{uuid.uuid4().hex[:12]}.fifo",
        Attributes={"FifoQueue": "true", "MaximumMessageSize": "1024"},
    )["QueueUrl"]
    monkeypatch.setenv("RESULT_QUEUE_URL", url)
    config.environment.cache_clear()
    yield url
    monkeypatch.undo()
    config.environment.cache_clear()
    sqs.delete_queue(QueueUrl=url)


def _insert_messages(db, client_id: str, count: int) -> None:
    db.execute(
        "INSERT INTO etl.partner_messages (client_id, business_date, message_type, "
        "message_group_id, deduplication_id, body) "
        "SELECT %s, %s, 'portfolio_message', %s, md5(%s || n), "
        "jsonb_build_object('portfolio_reference', 'P' || n) FROM generate_series(1, %s) n",
        (client_id, DAY, client_id, client_id, count),
    )


def _work(client_id: str) -> WorkMessage:
    return WorkMessage(
        client_id=client_id,
        business_date=DAY.strftime("%Y%m%d"),
        transformer=publisher.NAME,
        action="APPLY",
        input_versions={},
    )


def _queued(url: str) -> list[str]:
    """Every message body on the queue, draining it."""
    sqs = boto3.client("sqs")
    found = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        found.extend(m["Body"] for m in batch)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    return found


def _unpublished(db, client_id: str) -> int:
    return db.execute(
        "SELECT count(*) FROM etl.partner_messages WHERE client_id = %s AND published_at IS NULL",
        (client_id,),
    ).fetchone()[0]


def test_every_message_is_sent_once_and_marked_published(db, client_id, result_queue):
    count = publisher.SEND_CHUNK * 2 + 345
    _insert_messages(db, client_id, count)
    publisher.send(db, _work(client_id))
    assert _unpublished(db, client_id) == 0
    # A redelivered work message finds nothing left to send.
    publisher.send(db, _work(client_id))
    bodies = _queued(result_queue)
    assert sorted(json.loads(b)["portfolio_reference"] for b in bodies) == sorted(
        f"P{n}" for n in range(1, count + 1)
    )


def test_a_refused_batch_fails_the_chunk_and_the_retry_resumes_without_duplicates(
    db, client_id, result_queue
):
    count = publisher.SEND_CHUNK + 500
    _insert_messages(db, client_id, count)
    # One message of the second chunk (ordered by type, then deduplication id) is too large.
    (too_large,) = db.execute(
        "SELECT deduplication_id FROM etl.partner_messages WHERE client_id = %s "
        "ORDER BY message_type, deduplication_id OFFSET %s LIMIT 1",
        (client_id, publisher.SEND_CHUNK + 250),
    ).fetchone()
    db.execute(
        "UPDATE etl.partner_messages "
        "SET body = body || jsonb_build_object('pad', repeat('x', 2000)) "
        "WHERE client_id = %s AND deduplication_id = %s",
        (client_id, too_large),
    )
    with pytest.raises(ClientError):
        publisher.send(db, _work(client_id))
    # The first chunk committed as published; the failed chunk is wholly unpublished, although
    # some of its batches reached the queue.
    assert _unpublished(db, client_id) == 500
    held = boto3.client("sqs").get_queue_attributes(
        QueueUrl=result_queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(held) > publisher.SEND_CHUNK  # so the retry does re-send some messages

    db.execute(
        "UPDATE etl.partner_messages SET body = body - 'pad' WHERE client_id = %s", (client_id,)
    )
    publisher.send(db, _work(client_id))
    assert _unpublished(db, client_id) == 0
    bodies = [json.loads(b)["portfolio_reference"] for b in _queued(result_queue)]
    assert len(bodies) == len(set(bodies)) == count
