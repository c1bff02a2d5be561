"""partner_publisher: the partner messages of a client and date (docs/SPEC.md §3), recorded in
etl.partner_messages and, after commit, sent to the FIFO result queue.

When it runs: its filter is `tax_transformer_done` (clients, portfolios and accounts are
persisted and linked, so the client summary exists) and it watches every input's load sequence
number and every upstream transformer version (services/partner_publisher/transformer.yml). A
run publishes only when the choreography upstream has *settled* for the item it reads: each
upstream transformer whose filter matches is done on the current versions of its inputs, and
each whose filter does not match is not done (retracted). Otherwise the run is discarded as
stale (runtime.StaleWork) and the upstream transformer still working publishes the next change,
which triggers the run that counts. So once the choreography is quiet the message set is
complete and correct; with the transactions file absent, rejected or deleted it holds the
client messages and the error messages only.

Messages: one `portfolio_message` per etl.portfolio_summary row, one `client_message` per
etl.client_tax_summary row, one `error_message` per row rejection and per data-quality issue
(a whole-file rejection reaches the partner as a notice when it happens: dataharvest.ops.notices).
Decimals are strings holding the exact NUMERIC value. MessageGroupId is the client id; the
deduplication id is a digest of (type, client, date, key, content digest, revision), where the
revision counts changes of that key's content (etl.partner_message_revisions). A run sends only
the revisions not sent before: an unchanged message is recorded as published at its first
send, however long ago; a corrected message gets a new revision and is sent. (Should a chunk
be sent twice after a crash, its identical ids are swallowed by FIFO deduplication.)

RETRACT deletes the client's rows for the date and publishes nothing: SPEC §3 has no
retraction message, and messages already on the queue cannot be recalled. The revisions keep
what was sent, so inputs that come back unchanged send nothing again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from functools import partial
from typing import Any

import boto3
import psycopg

from dataharvest import metastore, registry
from dataharvest.config import environment
from dataharvest.due import need, upstream
from dataharvest.ops import metrics
from dataharvest.transformers.runtime import (
    StaleWork,
    Transformer,
    business_date_of,
)
from dataharvest.work import WorkMessage

NAME = "partner_publisher"
SQS_BATCH = 10
# Messages sent and marked published per transaction: progress survives a timeout.
SEND_CHUNK = 1000
# SendMessageBatch calls in flight at once. Sending is bound by the round trip, not by CPU.
# Within one run every message key appears once, so the order of messages inside a chunk
# carries no meaning; runs (and so revisions of one key) are still sent one after another.
SEND_CONCURRENCY = 4

# The deduplication id of revision `revision` of a message; `m` is the row being revised.
_DEDUP = """encode(sha256(convert_to(concat_ws(E'\\x1f', {m}.message_type, {m}.client_id,
    {m}.business_date::text, {m}.message_key, {m}.body_sha256, ({rev})::text), 'UTF8')), 'hex')"""

MESSAGES = f"""
WITH error_bodies AS (
    SELECT jsonb_build_object(
               'client_reference',
                   CASE WHEN r.column_name = 'client_reference' THEN r.value END,
               'portfolio_reference',
                   CASE WHEN r.column_name = 'portfolio_reference' THEN r.value END,
               'account_number', CASE WHEN r.column_name = 'account_number' THEN r.value END,
               'message',
                   CASE WHEN r.line_number IS NULL
                        THEN format('%%s: %%s', regexp_replace(r.source_key, '^.*/', ''),
                                    r.reason)
                        ELSE format('%%s line %%s: %%s', regexp_replace(r.source_key, '^.*/', ''),
                                    r.line_number, r.reason)
                   END) AS body
    FROM audit.rejections r
    WHERE r.client_id = %(client_id)s AND r.business_date = %(business_date)s
      -- A whole-file rejection reaches the partner as a notice (dataharvest.ops.notices),
      -- sent when it happens rather than once the client summary exists.
      AND r.line_number IS NOT NULL
    UNION
    SELECT jsonb_build_object(
               'client_reference', p.client_reference,
               'portfolio_reference', p.portfolio_reference,
               'account_number', coalesce(p.account_number, t.account_number)::text,
               'message', format('%%s %%s: %%s', i.issue, i.reference, i.detail))
    FROM audit.data_quality_issues i
    LEFT JOIN raw.portfolios p
      ON i.entity = 'portfolios' AND p.client_id = i.client_id
     AND p.business_date = i.business_date AND p.portfolio_reference = i.reference
    LEFT JOIN raw.transactions t
      ON i.entity = 'transactions' AND t.client_id = i.client_id
     AND t.business_date = i.business_date AND t.transaction_reference = i.reference
    WHERE i.client_id = %(client_id)s AND i.business_date = %(business_date)s
),
messages AS (
    SELECT 'portfolio_message' AS message_type, s.portfolio_reference AS message_key,
           jsonb_build_object(
               'portfolio_reference', s.portfolio_reference,
               'cash_balance', s.cash_balance::text,
               'number_of_transactions', s.number_of_transactions,
               'sum_of_deposits', s.sum_of_deposits::text) AS body
    FROM etl.portfolio_summary s
    WHERE s.client_id = %(client_id)s AND s.business_date = %(business_date)s
    UNION ALL
    SELECT 'client_message', c.client_reference,
           jsonb_build_object(
               'client_reference', c.client_reference,
               'tax_free_allowance', c.tax_free_allowance::text,
               'taxes_paid', c.taxes_paid::text)
    FROM etl.client_tax_summary c
    WHERE c.client_id = %(client_id)s AND c.business_date = %(business_date)s
    UNION ALL
    -- An error message is identified by its content: its key is the digest of its body.
    SELECT 'error_message', encode(sha256(convert_to(e.body::text, 'UTF8')), 'hex'), e.body
    FROM error_bodies e
),
hashed AS (
    SELECT %(client_id)s::text AS client_id, %(business_date)s::date AS business_date,
           m.message_type, m.message_key, m.body,
           encode(sha256(convert_to(m.body::text, 'UTF8')), 'hex') AS body_sha256
    FROM messages m
),
revised AS (
    INSERT INTO etl.partner_message_revisions AS r
        (client_id, business_date, message_type, message_key, revision, body_sha256,
         deduplication_id)
    SELECT h.client_id, h.business_date, h.message_type, h.message_key, 1, h.body_sha256,
           {_DEDUP.format(m="h", rev="1")}
    FROM hashed h
    ON CONFLICT (client_id, business_date, message_type, message_key) DO UPDATE
       SET revision = r.revision + 1,
           body_sha256 = excluded.body_sha256,
           deduplication_id = {_DEDUP.format(m="excluded", rev="r.revision + 1")},
           published_at = NULL
       WHERE r.body_sha256 <> excluded.body_sha256
    RETURNING r.message_type, r.message_key, r.deduplication_id
)
INSERT INTO etl.partner_messages (client_id, business_date, message_type, message_group_id,
                                  deduplication_id, body, published_at)
SELECT h.client_id, h.business_date, h.message_type, h.client_id,
       coalesce(v.deduplication_id, r.deduplication_id), h.body,
       -- An unchanged message already sent is not sent again: it keeps its first send time.
       CASE WHEN v.deduplication_id IS NULL THEN r.published_at END
FROM hashed h
LEFT JOIN revised v USING (message_type, message_key)
-- Keys whose content is unchanged are not in `revised`; the statement's snapshot still shows
-- their current revision here.
LEFT JOIN etl.partner_message_revisions r
  ON r.client_id = h.client_id AND r.business_date = h.business_date
 AND r.message_type = h.message_type AND r.message_key = h.message_key
"""

UNPUBLISHED = """
SELECT message_type, message_group_id, deduplication_id, body::text
FROM etl.partner_messages
WHERE client_id = %s AND business_date = %s AND published_at IS NULL
ORDER BY message_type, deduplication_id
LIMIT %s
FOR UPDATE
"""

# Marks a sent chunk: clock_timestamp(), the time it was sent, not the transaction's start.
# The revision remembers the same time, so an unchanged message is not sent again.
MARK_SENT = """
WITH sent AS (
    UPDATE etl.partner_messages SET published_at = clock_timestamp()
    WHERE client_id = %(c)s AND business_date = %(d)s AND deduplication_id = ANY(%(ids)s)
    RETURNING client_id, business_date, deduplication_id, published_at
)
UPDATE etl.partner_message_revisions r SET published_at = s.published_at
FROM sent s
WHERE r.client_id = s.client_id AND r.business_date = s.business_date
  AND r.deduplication_id = s.deduplication_id AND r.published_at IS NULL
"""

_registry = registry.RegistryCache()


class PublishError(RuntimeError):
    """The result queue refused messages; the work message is retried."""


def upstream_settled(item: dict[str, Any], entries: list[registry.TransformerEntry]) -> bool:
    """Whether every upstream transformer has caught up with the item: done on the current
    versions of its inputs where its filter matches, not done where it does not (the rule
    the reconciler converges on, dataharvest.due.need). Upstream = the entries whose version
    the publisher's own registry entry watches."""
    own = next((e for e in entries if e.name == NAME), None)
    if own is None:
        raise registry.RegistryError(f"{NAME} is not registered")
    return not any(need(e, item) is not None for e in upstream(own, entries))


def apply(conn: psycopg.Connection, client_id: str, business_date: date) -> int:
    item = metastore.get_item(client_id, business_date.strftime("%Y%m%d"))
    if not upstream_settled(item, _registry.current()):
        # An upstream transformer is still recomputing: its flag update triggers the next run.
        raise StaleWork
    params = {"client_id": client_id, "business_date": business_date}
    return conn.execute(MESSAGES, params).rowcount


def send(conn: psycopg.Connection, message: WorkMessage) -> None:
    """Send the messages of this client and date not yet on the result queue.

    Idempotent and resumable: each chunk is marked published in the transaction that sent it,
    so a retry (after a timeout or a crash) continues where it stopped, and a chunk re-sent
    after a crash before its commit carries the same deduplication ids.
    """
    queue_url = environment().result_queue_url
    if not queue_url:
        raise PublishError("RESULT_QUEUE_URL is not set: no result queue to publish to")
    sqs = boto3.client("sqs")
    day = business_date_of(message)
    attributes = {
        "client_id": {"DataType": "String", "StringValue": message.client_id},
        "business_date": {"DataType": "String", "StringValue": message.business_date},
    }
    with ThreadPoolExecutor(SEND_CONCURRENCY, thread_name_prefix="publish") as pool:
        while True:
            with conn.transaction():
                # FOR UPDATE: a concurrent run replacing these rows waits until they are sent.
                rows = conn.execute(UNPUBLISHED, (message.client_id, day, SEND_CHUNK)).fetchall()
                batches = [rows[i : i + SQS_BATCH] for i in range(0, len(rows), SQS_BATCH)]
                _send_all(pool, partial(_send_batch, sqs, queue_url, message, attributes), batches)
                sent = [dedup for _, _, dedup, _ in rows]
                conn.execute(MARK_SENT, {"c": message.client_id, "d": day, "ids": sent})
            for message_type, count in Counter(row[0] for row in rows).items():
                metrics.emit(
                    NAME,
                    message_type,
                    metrics.PUBLISHER_MESSAGES_SENT,
                    count,
                    client_id=message.client_id,
                    business_date=message.business_date,
                )
            if len(rows) < SEND_CHUNK:
                return


def _send_all(
    pool: ThreadPoolExecutor, send_batch: Callable[[list[Any]], None], batches: list[list[Any]]
) -> None:
    """Send a chunk's batches concurrently; the first failure fails the chunk.

    Batches already sent when another fails are sent again on the retry with the same
    deduplication ids, which the FIFO queue swallows."""
    futures = [pool.submit(send_batch, batch) for batch in batches]
    try:
        for future in futures:
            future.result()
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def _send_batch(
    sqs: Any, queue_url: str, message: WorkMessage, attributes: dict[str, Any], batch: list[Any]
) -> None:
    entries = [
        {
            "Id": str(i),
            "MessageBody": body,
            "MessageGroupId": group,
            "MessageDeduplicationId": dedup,
            "MessageAttributes": {
                **attributes,
                "message_type": {"DataType": "String", "StringValue": message_type},
            },
        }
        for i, (message_type, group, dedup, body) in enumerate(batch)
    ]
    response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    if response.get("Failed"):
        raise PublishError(
            f"result queue refused {len(response['Failed'])} message(s) of "
            f"{message.client_id} {message.business_date}: {response['Failed'][0]}"
        )


TRANSFORMER = Transformer(
    name=NAME,
    output_tables=("etl.partner_messages",),
    apply=apply,
    after_commit=send,
)
